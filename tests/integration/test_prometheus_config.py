"""deploy/prometheus/: the production host's scrape configuration and its alerts, checked by
Prometheus' own promtool (Debian's `prometheus`, installed by `make prometheus`), so a broken
file fails `make test`. The alerts' unit tests (alerts_test.yml) make each rule fire and hold
each quiet once; a rule broken on purpose must fail its tests, so they are known to test it."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack_helpers import REPO

pytestmark = pytest.mark.integration

PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus (make prometheus)
DEPLOY = REPO / "deploy" / "prometheus"
TOKEN_FILE = "/etc/prometheus/tenant-pipelines.token"
ALERTS = (
    "TenantProvisioningOverBudget",
    "TenantCompensationGivenUp",
    "TenantProvisioningFailureRatioHigh",
)
NEVER = "vector(0) > 1"  # an expression that selects nothing: its alert can never fire


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    assert Path(PROMTOOL).exists(), f"{PROMTOOL} is missing: make prometheus"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def said(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def rules() -> list[dict[str, Any]]:
    [group] = load("alerts.yml")["groups"]
    return list(group["rules"])


def installed(tmp_path: Path, token_file: Path) -> Path:
    """prometheus.yml as a host installs it, alerts.yml beside it, its token in `token_file`:
    promtool checks that the token file exists, as Prometheus needs it at each scrape."""
    text = (DEPLOY / "prometheus.yml").read_text()
    line = f"credentials_file: {TOKEN_FILE}"
    assert text.count(line) == 1
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(line, f"credentials_file: {token_file}"))
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    return config


def test_prometheus_scrapes_the_api_servers_metrics_with_a_token_read_from_a_file() -> None:
    config = load("prometheus.yml")
    [job] = config["scrape_configs"]
    assert job["job_name"] == "tenant-pipelines" and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]  # `up`'s --api-port
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}
    assert config["rule_files"] == ["alerts.yml"]
    text = (DEPLOY / "prometheus.yml").read_text()
    assert "tenantctl token create --subject prometheus --role metrics" in text


def test_promtool_takes_the_production_configuration_and_its_rules(tmp_path: Path) -> None:
    token = tmp_path / "tenant-pipelines.token"
    token.write_text("tp_not-a-real-token\n")
    checked = promtool("check", "config", str(installed(tmp_path, token)))
    assert checked.returncode == 0, said(checked)
    assert "SUCCESS: 3 rules found" in said(checked)


def test_promtool_refuses_the_configuration_until_its_token_file_exists(tmp_path: Path) -> None:
    missing = tmp_path / "absent.token"
    checked = promtool("check", "config", str(installed(tmp_path, missing)))
    assert checked.returncode != 0
    assert str(missing) in said(checked)


def test_promtool_takes_the_alert_rules_each_with_a_severity_and_what_to_do() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, said(checked)
    assert "SUCCESS: 3 rules found" in said(checked)
    assert tuple(rule["alert"] for rule in rules()) == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert "tenantctl " in rule["annotations"]["description"], rule["alert"]


def test_each_alert_fires_in_the_unit_tests_and_stays_quiet_in_one() -> None:
    cases = [case for test in load("alerts_test.yml")["tests"] for case in test["alert_rule_test"]]
    for alert in ALERTS:
        expected = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert]
        assert any(expected), f"no test expects {alert} to fire"
        assert not all(expected), f"no test expects {alert} to stay quiet"
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, said(tested)
    assert "SUCCESS" in said(tested)


@pytest.mark.parametrize("alert", ALERTS)
def test_an_alert_that_cannot_fire_fails_the_tests_that_expect_it(
    tmp_path: Path, alert: str
) -> None:
    """Each rule's tests depend on its expression: break it and promtool names the tests."""
    broken = load("alerts.yml")
    for rule in broken["groups"][0]["rules"]:
        if rule["alert"] == alert:
            rule["expr"] = NEVER
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(broken))
    shutil.copy(DEPLOY / "alerts_test.yml", tmp_path / "alerts_test.yml")
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    firing = [
        test["name"]
        for test in load("alerts_test.yml")["tests"]
        if any(c["alertname"] == alert and c["exp_alerts"] for c in test["alert_rule_test"])
    ]
    assert firing
    for name in firing:
        assert f"name: {name}," in said(tested), said(tested)
    assert f"alertname: {alert}," in said(tested)
    assert not ({*ALERTS} - {alert}) & set(failed_alerts(said(tested)))


def failed_alerts(output: str) -> list[str]:
    """The alert names promtool reports failing tests of."""
    return [
        line.split("alertname: ", 1)[1].split(",", 1)[0]
        for line in output.splitlines()
        if "alertname: " in line
    ]
