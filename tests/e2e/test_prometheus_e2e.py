"""Prometheus, as an operator runs it (Debian's binary, deploy/prometheus/ pointed at this stack,
scraping every second with a `metrics` token read from a file), against a real `tenantctl up`
while 20 tenants are submitted through the HTTP API, 3 of them failing at Deploy for good.

What Prometheus then holds must agree with what the test saw from outside: the counts, and the
median submit-to-active time within 25 % of the one the test measured on its own clock (POST
sent to the first GET reading `active`). No series may name a tenant. The Prometheus the test
starts is stopped by its PID, whatever happens."""

import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.stack_fixtures import StackOptions
from tests.stack_helpers import REPO, Stack, free_port, processes_mentioning, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

PROMETHEUS = "/usr/bin/prometheus"  # Debian's prometheus (make prometheus)
DEPLOY = REPO / "deploy" / "prometheus"
ORG = "observed"
PLAN = "team"
FAILING = [f"scrape-bad-{i}" for i in range(1, 4)]
FAULT_GLOB = "scrape-bad-*"  # those 3 slugs, and their keys `<slug>-observed`, and nothing else
SUCCEEDING = [f"scrape-ok-{i:02}" for i in range(1, 18)]
CLIENTS = 4  # tenants in flight from the test at once: the team plan's run limit
POLL_S = 0.05
MEDIAN_TOLERANCE = 0.25
SETTLE_MARGIN_S = 1.0  # a scrape this long after the last event counts what the event counted


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


@dataclass
class Prometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        answer = requests.get(self.url + path, params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def value(self, expr: str) -> float:
        """The one value `expr` gives now (it must give exactly one)."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr} gave {result}"
        return float(result[0]["value"][1])

    def ready(self) -> bool:
        try:
            return requests.get(self.url + "/-/ready", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def said(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def configuration(stack: Stack, token_file: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml pointed at this stack: its API port, its token, its
    alerts (by absolute path), and a scrape every second."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{stack.api_port}"]}]
    job["authorization"]["credentials_file"] = str(token_file)
    return dict(config)


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[Prometheus]:
    """A Prometheus of this test's own, on a free loopback port, stopped by its PID."""
    assert Path(PROMETHEUS).exists(), f"{PROMETHEUS} is missing: make prometheus"
    token_file = tmp_path / "metrics.token"
    token_file.write_text(stack.token("metrics", subject="prometheus") + "\n")
    token_file.chmod(0o600)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(configuration(stack, token_file)))
    storage = tmp_path / "tsdb"
    port = free_port()
    server = Prometheus(f"http://127.0.0.1:{port}", tmp_path / "prometheus.log")
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(server.ready, 60, lambda: f"Prometheus never got ready: {server.said()}")
            yield server
        finally:
            stop(process)
    assert not processes_mentioning(str(storage))


def stop(process: "subprocess.Popen[bytes]") -> None:
    """SIGTERM to the one PID we started (Prometheus then flushes and exits), SIGKILL if not."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@dataclass(frozen=True)
class Outcome:
    slug: str
    state: str
    seconds: float  # POST sent to the first GET reading the final state, on the test's clock


def provision(stack: Stack, token: str, slug: str) -> Outcome:
    """Submit `slug` and read its state every 50 ms until it is active or failed."""
    body = {"slug": slug, "org": ORG, "plan": PLAN, "admin_email": f"admin@{slug}.example.com"}
    sent = time.monotonic()
    answer = stack.api("POST", "/v1/tenants", token, body)
    assert answer.status_code == 202, answer.text

    def settled() -> str:
        state = str(stack.api("GET", f"/v1/tenants/{slug}", token).json()["state"])
        return state if state in {"active", "failed"} else ""

    state = wait_until(settled, 240, f"{slug} never became active or failed", POLL_S)
    return Outcome(slug, state, time.monotonic() - sent)


def submit_all(stack: Stack, token: str) -> list[Outcome]:
    """The 20 tenants, `CLIENTS` at a time; the failing ones spread among the others."""
    slugs = list(SUCCEEDING)
    for i, slug in enumerate(FAILING):
        slugs.insert(5 + 6 * i, slug)
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(lambda slug: provision(stack, token, slug), slugs))


def wait_compensated(stack: Stack, token: str, slug: str) -> None:
    def compensated() -> bool:
        feed = stack.api("GET", f"/v1/tenants/{slug}/events", token).json()
        return any(e["type"] == "tenant.provisioning.compensation_finished" for e in feed)

    wait_until(compensated, 120, f"{slug} was never compensated", 0.2)


def scrape_after(prometheus: Prometheus, moment: float) -> None:
    """Wait for a scrape of the stack begun after `moment` (epoch seconds); it must succeed."""

    def scraped() -> bool:
        result = prometheus.query('timestamp(up{job="tenant-pipelines"})')
        return bool(result) and float(result[0]["value"][1]) > moment

    wait_until(scraped, 30, lambda: f"no scrape after {moment}: {prometheus.said()}", 0.2)
    [target] = prometheus.get("/api/v1/targets")["activeTargets"]
    assert prometheus.value('up{job="tenant-pipelines"}') == 1, target["lastError"]


def label_values(prometheus: Prometheus) -> set[str]:
    """Every label value of every series Prometheus has from the stack, ever."""
    series = prometheus.get("/api/v1/series", **{"match[]": '{job="tenant-pipelines"}'})
    return {value for labels in series for value in labels.values()}


def test_prometheus_counts_what_the_clients_saw_and_names_no_tenant(
    stack: Stack, prometheus: Prometheus
) -> None:
    assert stack.fault_plan is not None
    write_fault_plan(
        stack.fault_plan, [{"phase": "deploy", "tenant": FAULT_GLOB, "mode": "permanent"}]
    )
    scrape_after(prometheus, time.time())  # its token reads /metrics before anything happens
    token = stack.token("org-admin", ORG, subject="scripts")

    outcomes = submit_all(stack, token)
    assert {o.slug for o in outcomes if o.state == "failed"} == set(FAILING)
    for slug in FAILING:
        wait_compensated(stack, token, slug)
    scrape_after(prometheus, time.time() + SETTLE_MARGIN_S)

    assert prometheus.value("sum(tenant_requests_submitted_total)") == 20
    assert prometheus.value("sum(tenant_submit_to_active_seconds_count)") == 17
    assert prometheus.value("sum(tenant_provisionings_failed_total)") == 3
    assert prometheus.value('sum(tenant_phase_failures_total{phase="deploy"})') == 3
    assert prometheus.value("sum(tenant_compensations_total)") == 3
    # Exported at 0 before any gives up: TenantCompensationGivenUp's increase() needs that to
    # see the first one.
    assert prometheus.value("sum(tenant_compensations_given_up_total)") == 0
    measured = statistics.median(o.seconds for o in outcomes if o.state == "active")
    median = prometheus.value(
        "histogram_quantile(0.5, sum by (le) (tenant_submit_to_active_seconds_bucket))"
    )
    assert abs(median - measured) <= MEDIAN_TOLERANCE * measured, (median, measured)
    slugs = [*SUCCEEDING, *FAILING]
    named = {v for v in label_values(prometheus) if any(slug in v for slug in slugs)}
    assert not named, named
    assert_gauges(prometheus)
    assert_alert_rules_evaluate(prometheus)


def by(prometheus: Prometheus, expr: str, label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in prometheus.query(expr)}


def assert_gauges(prometheus: Prometheus) -> None:
    """The gauges read at the scrape: every tenant settled, the plans' budgets."""
    states = by(prometheus, "tenant_tenants", "state")
    assert states == {
        "provisioning": 0,
        "active": 17,
        "failed": 3,
        "decommissioning": 0,
        "decommissioned": 0,
    }
    assert by(prometheus, "tenant_provisioning_budget_seconds", "plan") == {
        "free": 300,
        "team": 600,
        "enterprise": 900,
    }
    oldest = by(prometheus, "tenant_oldest_provisioning_seconds", "plan")
    assert set(oldest) >= {"free", "team", "enterprise"} and not any(oldest.values()), oldest
    assert prometheus.value("sum(tenant_runs_queued)") == 0


def assert_alert_rules_evaluate(prometheus: Prometheus) -> None:
    """deploy/prometheus/alerts.yml evaluates without error on the stack's real series (an
    `on(plan)` join that matched many to many would not)."""
    [group] = prometheus.get("/api/v1/rules")["groups"]
    health = {rule["name"]: (rule["health"], rule.get("lastError", "")) for rule in group["rules"]}
    assert health == {
        "TenantProvisioningOverBudget": ("ok", ""),
        "TenantCompensationGivenUp": ("ok", ""),
        "TenantProvisioningFailureRatioHigh": ("ok", ""),
    }
