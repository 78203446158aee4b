"""Issue 18, finding 8 (its log part): a token sent in a query string was written verbatim to
`logs/api.log`. Now no request, whatever it carries and wherever (query string, path, header,
cookie, form body), leaves a trace of a secret in the API server's log, as `tenantctl up` starts
it writing to a file, nor in the edge's log (the API's access lines name the path without its
query string, with anything shaped like a secret masked, and never a header; the gateway writes
no access lines, and not the error lines that would carry the request's URI)."""

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from resources.gateway import GatewayPlan, plan_path, write_plan
from resources.traffic import LocalEdgeRoutes
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.localstack.gateway import caddy_binary, child_spec
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER, read_operator_key
from tenant_pipelines.support.redact import mask_secrets
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.console_streams import console_login
from tests.integration.test_api import grant
from tests.stack_helpers import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

LOG_TIMEOUT_S = 10.0
TOKEN_SHAPED = "tp_abc123_" + "s3cretPart-of_the-token0123"
ACME = TenantSpec(
    tenant_id="t-acme",
    request_id="r-acme",
    slug="acme",
    org="corp",
    plan="free",
    admin_email="admin@corp.example",
)


@dataclass
class Secrets:
    token: str  # a real platform-admin token
    operator_key: str
    session_id: str  # a live console session's cookie value

    def parts(self) -> dict[str, str]:
        """What must never be in a log: the token's secret part (its id names it) and the keys."""
        return {
            "token secret": self.token.removeprefix("tp_").split("_", 1)[1],
            "operator key": self.operator_key,
            "session id": self.session_id,
        }


@dataclass
class Platform:
    server: ApiServer
    data_dir: Path
    secrets: Secrets


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("logs")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    token = grant(registry, "platform-admin")
    registry.close()
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir()
    with api_server(env, log_dir / "api.log") as server:
        key = read_operator_key(settings.data_dir)
        assert key is not None
        yield Platform(
            server, settings.data_dir, Secrets(token, key, console_session(server, token))
        )


def console_session(server: ApiServer, token: str) -> str:
    """The cookie of a real console login: a session id is as good as the token behind it."""
    return str(console_login(server.base, token).cookies["tp_console"])


def carriers(secret: str) -> list[tuple[str, str, dict[str, object]]]:
    """(method, path, requests options): every place a request can carry `secret`."""
    return [
        ("GET", f"/v1/tenants?token={secret}", {}),
        ("GET", f"/v1/tenants?x=1&access_token={secret}#frag", {}),
        ("GET", f"/console/tenants?token={secret}", {}),
        ("GET", f"/local/tenants?key={secret}", {}),
        ("GET", f"/v1/tenants/{secret}", {}),
        ("GET", f"/v1/tenants/{secret}/events", {}),
        ("GET", f"/{secret}", {}),
        ("GET", "/v1/tenants", {"headers": {"Authorization": f"Bearer {secret}"}}),
        ("GET", "/local/tenants", {"headers": {OPERATOR_KEY_HEADER: secret}}),
        ("GET", "/console/tenants", {"cookies": {"tp_console": secret}}),
        ("GET", "/v1/tenants", {"headers": {"X-Anything": secret, "User-Agent": secret}}),
        ("POST", "/console/login", {"data": {"token": secret, "csrf_token": "x"}}),
        ("POST", "/v1/tenants", {"json": {"slug": secret, "org": "acme", "plan": "team"}}),
    ]


def wait_for_line(log: Path, text: str, times: int = 1) -> str:
    """The log's contents once `text` is in it `times` times (lines are written as requests
    end)."""

    def written() -> str | None:
        contents = log.read_text(errors="replace")
        return contents if contents.count(text) >= times else None

    return wait_until(written, LOG_TIMEOUT_S, f"{text!r} never reached {log}", 0.05)


def assert_no_secret(contents: str, secrets: Secrets) -> None:
    for name, part in secrets.parts().items():
        assert part not in contents, f"the {name} is in the log"


@pytest.mark.parametrize("which", ["token", "operator_key", "session_id"])
def test_the_api_servers_log_holds_no_secret_whatever_carries_it(
    platform: Platform, which: str
) -> None:
    secret = getattr(platform.secrets, which)
    for method, path, options in carriers(secret):
        requests.request(
            method, platform.server.base + path, timeout=30, allow_redirects=False, **options
        )
    marker = f"/v1/marker-{which}"
    requests.get(f"{platform.server.base}{marker}?token={secret}", timeout=30)
    contents = wait_for_line(platform.server.log, marker)
    assert_no_secret(contents, platform.secrets)
    assert '"GET /v1/tenants HTTP/1.1" 401' in contents  # the lines are there, cut to the path
    assert "?" not in "".join(line for line in contents.splitlines() if '"GET ' in line)


def test_a_real_tokens_query_string_is_cut_but_its_request_still_served(
    platform: Platform,
) -> None:
    token = platform.secrets.token
    served = '"GET /v1/tenants HTTP/1.1" 200'
    before = platform.server.log.read_text().count(served)
    answer = requests.get(
        f"{platform.server.base}/v1/tenants?state=active&token={token}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 200
    contents = wait_for_line(platform.server.log, served, before + 1)
    assert_no_secret(contents, platform.secrets)


@pytest.fixture
def edge_log(platform: Platform) -> Iterator[tuple[int, Path]]:
    """The gateway as `up` starts it, relaying plain HTTP too, in front of an active tenant whose
    workload is down: every request takes the error path, whose log lines would carry the URI."""
    data_dir = platform.data_dir
    plan = GatewayPlan(
        domain="localhost",
        listen_host="127.0.0.1",
        http_port=free_port(),
        https_port=free_port(),
        ask_url=f"{platform.server.base}/gateway/ask",
        plain_http="serve",
    )
    write_plan(data_dir, plan)
    LocalEdgeRoutes(data_dir=str(data_dir), domain="localhost").open(ACME)
    settings = Settings.from_env({"TENANT_DATA_DIR": str(data_dir)})
    spec = child_spec(settings, plan, caddy_binary(), dict(os.environ))
    assert spec.prepare is not None
    spec.prepare()
    log = data_dir / "logs" / "edge.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(spec.argv, env=spec.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        health = f"http://127.0.0.1:{plan.http_port}/_edge/healthz"
        wait_until(lambda: answers(health), 20, "the gateway did not come up", 0.1)
        yield plan.http_port, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        plan_path(data_dir).unlink()


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_edges_log_holds_no_secret_whatever_carries_it(
    platform: Platform, edge_log: tuple[int, Path]
) -> None:
    port, log = edge_log
    secrets = platform.secrets
    for secret in secrets.parts().values():
        for method, path, options in carriers(secret):
            headers = {"Host": ACME.host("localhost"), **options.pop("headers", {})}  # type: ignore[dict-item]
            url = f"http://127.0.0.1:{port}{path}"
            answer = requests.request(method, url, headers=headers, timeout=30, **options)
            assert answer.json() == {"error": "tenant 'acme-corp' workload is down"}
    contents = log.read_text()
    assert "serving initial configuration" in contents  # the gateway's own lines are there
    assert_no_secret(contents, secrets)


def test_a_key_that_holds_a_token_prefix_is_masked_whole() -> None:
    """A random key with `tp_<id>_` inside it (about 1 in 30,000 keys) was masked from there on
    only, leaving the key's first characters in the log line."""
    key = "Zm" + "tp_2KKj_" + secrets.token_urlsafe(40)
    assert mask_secrets(f"/local/{key}/x key={key}") == "/local/***/x key=***"
    # A token still keeps its id.
    assert mask_secrets(f"Bearer {TOKEN_SHAPED}") == "Bearer tp_abc123_***"
