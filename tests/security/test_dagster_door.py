"""Finding 2 of the security review: the Dagster webserver was an open side door.

Anyone who reached its port could `launchRun` a decommission of another org's tenant with any
`requested_by`, bypassing roles and the tenant's operation claim; a mutation sent as a GET with
a foreign `Origin` executed too, so any web page open in an operator's browser could act. Now
the UI answers only behind the API server's door (`tenant_pipelines/api/dagster_door.py`).

Each test attacks every GraphQL endpoint the running platform listens on (any TCP port its
processes hold, at `/graphql` and `/dagster/graphql`), so it fails on a platform that still has
a webserver port of its own.
"""

import json
import re
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from dagster import DagsterRun, DagsterRunStatus, RunsFilter
from dagster_graphql import DagsterGraphQLClientError
from gql import Client, GraphQLRequest
from gql.transport.requests import RequestsHTTPTransport
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tenant_pipelines.localstack import leftovers
from tests.console_streams import console_login, console_logout
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, tcp_ports_of, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "doors"
EVIL = "http://evil.example"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


def provision(stack: Stack, slug: str, wanted: str = "active") -> dict[str, Any]:
    token = stack.admin_token()
    body = {"slug": slug, "org": ORG, "plan": "team", "admin_email": f"a@{slug}.example.com"}
    answer = stack.api("POST", "/v1/tenants", token, body)
    assert answer.status_code == 202, answer.text
    return stack.wait_for_state(slug, {wanted})


def tenant_id(stack: Stack, slug: str) -> str:
    import sqlite3

    with sqlite3.connect(stack.data_dir / "registry.db") as db:
        row = db.execute(
            "SELECT tenant_id FROM tenants WHERE slug = ? AND live_slug IS NOT NULL", (slug,)
        ).fetchone()
    return str(row[0])


def decommission_params(stack: Stack, slug: str, **tags: str) -> dict[str, Any]:
    config = {"tenant_id": tenant_id(stack, slug), "slug": slug, "org": ORG}
    return {
        "selector": {
            "repositoryLocationName": "tenant_pipelines",
            "repositoryName": "__repository__",
            "jobName": "decommission_tenant",
        },
        "runConfigData": {"ops": {"decommission": {"config": config}}},
        "executionMetadata": {
            "tags": [{"key": k, "value": v} for k, v in {"tenant": slug, **tags}.items()]
        },
    }


def listening_ports(stack: Stack) -> set[int]:
    """Every TCP port a process of this platform listens on."""
    ports = tcp_ports_of(leftovers.marked(str(stack.data_dir.resolve())))
    assert stack.api_port in ports, ports
    return ports


def graphql_urls(stack: Stack) -> list[str]:
    ports = sorted(listening_ports(stack) - {stack.edge_port, stack.https_port})  # the edge's
    return [
        f"http://127.0.0.1:{p}{path}" for p in ports for path in ("/graphql", "/dagster/graphql")
    ]


def decommission_runs(stack: Stack, slug: str) -> list[Any]:
    instance = stack.instance()
    try:
        filters = RunsFilter(job_name="decommission_tenant", tags={"tenant": slug})
        return list(instance.get_runs(filters=filters))
    finally:
        instance.dispose()


def test_no_port_of_the_platform_launches_runs_without_the_door(stack: Stack) -> None:
    """Old code: the webserver's port ran this decommission for anyone, naming `mallory`."""
    provision(stack, "open-port")
    params = decommission_params(stack, "open-port", requested_by="mallory")
    for url in graphql_urls(stack):
        answer = requests.post(url, json={"query": LAUNCH, "variables": {"params": params}})
        assert answer.status_code in (401, 404), (url, answer.status_code, answer.text[:300])
    assert decommission_runs(stack, "open-port") == []
    assert stack.cli_json("status", "open-port")["state"] == "active"  # type: ignore[index]


def test_a_mutation_sent_as_a_get_from_another_origin_does_nothing(stack: Stack) -> None:
    """A page of another origin can make the operator's browser send GETs with its cookie:
    old code executed a mutation sent that way."""
    provision(stack, "get-mutation")
    params = decommission_params(stack, "get-mutation")
    query = urlencode({"query": LAUNCH, "variables": json.dumps({"params": params})})
    browser = console_login(stack.api_base, stack.token("platform-admin", subject="olga"))
    for url in graphql_urls(stack):
        answer = browser.get(f"{url}?{query}", headers={"Origin": EVIL}, timeout=30)
        assert answer.status_code in (404, 405), (url, answer.status_code, answer.text[:300])
    assert decommission_runs(stack, "get-mutation") == []
    assert stack.cli_json("status", "get-mutation")["state"] == "active"  # type: ignore[index]


def test_a_session_posts_only_from_its_own_origin_and_only_json(stack: Stack) -> None:
    provision(stack, "cross-post")
    params = decommission_params(stack, "cross-post")
    browser = console_login(stack.api_base, stack.token("platform-admin", subject="olga"))
    url = f"{stack.api_base}/dagster/graphql"
    body = {"query": LAUNCH, "variables": {"params": params}}
    foreign = browser.post(url, json=body, headers={"Origin": EVIL}, timeout=30)
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
    no_origin = browser.post(url, json=body, timeout=30)
    assert no_origin.status_code == 403
    no_csrf = browser.post(url, json=body, headers={"Origin": stack.api_base}, timeout=30)
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
    # The UI's pages carry the session's token (a script under the page's CSP nonce).
    page = browser.get(f"{stack.api_base}/dagster/runs", headers={"Accept": "text/html"})
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"])
    token = re.search(r"<script nonce=\"([^\"]+)\">\(\(\)=>\{const t='([^']+)'", page.text)
    assert nonce is not None and token is not None and token[1] == nonce[1]
    headers = {"Origin": stack.api_base, "X-CSRF-Token": token[2]}
    form = browser.post(url, data={"query": LAUNCH}, headers=headers, timeout=30)
    assert form.status_code == 415
    wrong = browser.post(url, json=body, headers={**headers, "X-CSRF-Token": "x"}, timeout=30)
    assert wrong.status_code == 403
    assert decommission_runs(stack, "cross-post") == []
    own = browser.post(url, json=body, headers=headers, timeout=30)
    assert own.status_code == 200, own.text
    assert own.json()["data"]["launchRun"]["__typename"] == "LaunchRunSuccess"
    assert stack.wait_for_state("cross-post", {"decommissioned"})["state"] == "decommissioned"


@pytest.mark.parametrize("role", ["org-admin", "viewer"])
def test_only_a_platform_admin_passes_the_door(stack: Stack, role: str) -> None:
    token = stack.token(role, ORG, subject=f"{role}-at-door")
    url = f"{stack.api_base}/dagster/graphql"
    by_token = requests.post(
        url, json={"query": "{ version }"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert by_token.status_code == 403 and "may not open the Dagster UI" in by_token.text
    browser = console_login(stack.api_base, token)
    page = browser.get(f"{stack.api_base}/dagster/runs", headers={"Accept": "text/html"})
    assert page.status_code == 403
    nobody = requests.get(
        f"{stack.api_base}/dagster/runs", headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert nobody.status_code == 303
    assert nobody.headers["location"] == "/console/login?next=/dagster/runs"


def test_a_launch_at_the_door_is_the_callers_whatever_tag_it_carries(stack: Stack) -> None:
    """dagster-graphql's client, with a platform-admin token: it launches, and the run (and the
    feed) name the token's subject, not the `requested_by` the script claimed."""
    provision(stack, "claimed-name")
    client = stack.graphql_client()
    config = decommission_params(stack, "claimed-name")["runConfigData"]
    run_id = client.submit_job_execution(
        "decommission_tenant",
        run_config=config,
        tags={"tenant": "claimed-name", "requested_by": "mallory"},
    )
    assert stack.wait_for_state("claimed-name", {"decommissioned"})["state"] == "decommissioned"
    [run] = decommission_runs(stack, "claimed-name")
    assert run.run_id == run_id and run.tags["requested_by"] == "stack-admin"
    [started] = stack.cli_json_lines(
        "audit", "--tenant", "claimed-name", "--type", "tenant.decommission.started"
    )
    assert started["details"]["requested_by"] == "stack-admin"


def test_a_launch_at_the_door_cannot_claim_another_host_for_its_run(stack: Stack) -> None:
    """The `worker_host` tag decides which host's restart settles an interrupted run: a launch
    that claims a host other than its tenant's is refused and starts nothing; one without the
    tag is given its tenant's host."""
    provision(stack, "placed-here")
    client = stack.graphql_client()
    config = decommission_params(stack, "placed-here")["runConfigData"]
    with pytest.raises(DagsterGraphQLClientError) as refused:
        client.submit_job_execution(
            "decommission_tenant",
            run_config=config,
            tags={"tenant": "placed-here", "worker_host": "elsewhere"},
        )
    assert "worker_host='elsewhere' is not its tenant's host ('local')" in str(refused.value)
    assert decommission_runs(stack, "placed-here") == []
    assert stack.cli_json("status", "placed-here")["state"] == "active"  # type: ignore[index]

    client.submit_job_execution(
        "decommission_tenant", run_config=config, tags={"tenant": "placed-here"}
    )
    assert stack.wait_for_state("placed-here", {"decommissioned"})["state"] == "decommissioned"
    [run] = decommission_runs(stack, "placed-here")
    assert run.tags["worker_host"] == "local"


def test_decommission_from_the_ui_while_a_retry_is_in_flight_fails_naming_the_retry(
    stack: Stack,
) -> None:
    """The UI's launches take the tenant's operation claim, as the CLI's and the API's do."""
    assert stack.fault_plan is not None
    slug = "claim-door"
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": slug, "mode": "permanent"}])
    provision(stack, slug, wanted="failed")
    wait_compensated(stack, slug)
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": slug, "mode": "hang"}])
    retry = stack.cli_json("retry", slug)
    retry_run = str(retry["run_id"])  # type: ignore[index]
    ledger_before = stack.cli_json("diagnose", slug)["ledger"]  # type: ignore[index]
    client = stack.graphql_client()
    config = decommission_params(stack, slug)["runConfigData"]
    with pytest.raises(DagsterGraphQLClientError) as refused:
        client.submit_job_execution("decommission_tenant", run_config=config, tags={"tenant": slug})
    assert f"has a retry in flight (run {retry_run})" in str(refused.value)
    assert decommission_runs(stack, slug) == []
    assert stack.cli_json("diagnose", slug)["ledger"] == ledger_before  # type: ignore[index]
    write_fault_plan(stack.fault_plan, [])  # the retry's deploy goes on
    assert stack.wait_for_state(slug, {"active"})["state"] == "active"


def wait_compensated(stack: Stack, slug: str) -> None:
    finished = ("audit", "--tenant", slug, "--type", "*.compensation_finished")
    wait_until(lambda: stack.cli_json_lines(*finished), 90, f"{slug} was not compensated", 0.5)


def test_scripts_relaunch_a_failed_run_from_failure_at_the_door(stack: Stack) -> None:
    """What a script sends for the UI's "Re-execute from failure", with dagster-graphql's
    transport and a platform-admin token: the tenant ends active, the run is the token's."""
    assert stack.fault_plan is not None
    slug = "script-retry"
    write_fault_plan(
        stack.fault_plan, [{"phase": "mark_active", "tenant": slug, "mode": "permanent"}]
    )
    failed = provision(stack, slug, wanted="failed")
    wait_compensated(stack, slug)
    write_fault_plan(stack.fault_plan, [])
    transport = RequestsHTTPTransport(
        url=stack.dagster_graphql_url,
        headers={"Authorization": f"Bearer {stack.admin_token()}"},
        timeout=60,
    )
    params = {"parentRunId": failed["last_run_id"], "strategy": "FROM_FAILURE"}
    request = GraphQLRequest(REEXECUTE, variable_values={"params": params})
    answer = Client(transport=transport).execute(request)
    result = answer["launchRunReexecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    assert stack.wait_for_state(slug, {"active"})["state"] == "active"
    instance = stack.instance()
    try:
        run = instance.get_run_by_id(result["run"]["runId"])
        assert run is not None and run.tags["requested_by"] == "stack-admin"
        assert run.parent_run_id == failed["last_run_id"]
        run_id = run.run_id

        def finished() -> DagsterRun | None:
            again = instance.get_run_by_id(run_id)
            return again if again is not None and again.is_finished else None

        ended = wait_until(finished, 120, f"run {run_id} never finished", 0.2)
        assert ended.status == DagsterRunStatus.SUCCESS
    finally:
        instance.dispose()


def ws_url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.api_port}/dagster/graphql"


def test_the_websocket_takes_no_mutation_and_no_foreign_origin(stack: Stack) -> None:
    token = stack.token("platform-admin", subject="wendy")
    browser = console_login(stack.api_base, token)
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    with pytest.raises(InvalidStatus):  # the handshake is refused
        connect(
            ws_url(stack),
            subprotocols=["graphql-ws"],  # type: ignore[list-item]
            additional_headers={"Cookie": cookie, "Origin": EVIL},
            open_timeout=10,
        )
    provision(stack, "ws-mutation")
    params = decommission_params(stack, "ws-mutation")
    with connect(
        ws_url(stack),
        subprotocols=["graphql-ws"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
    ) as socket:
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        start = {"query": LAUNCH, "variables": {"params": params}}
        socket.send(json.dumps({"id": "1", "type": "start", "payload": start}))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    assert decommission_runs(stack, "ws-mutation") == []


def test_an_open_websocket_ends_when_its_token_is_revoked(stack: Stack) -> None:
    issued = stack.cli_json("token", "create", "--subject", "rita", "--role", "platform-admin")
    token, token_id = str(issued["token"]), str(issued["token_id"])  # type: ignore[index]
    with connect(
        ws_url(stack),
        subprotocols=["graphql-ws"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
    ) as socket:
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        revoked = threading.Event()

        def revoke() -> None:
            stack.cli("token", "revoke", token_id)
            revoked.set()

        threading.Thread(target=revoke).start()
        assert revoked.wait(60)
        ended_at = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:
                socket.recv(timeout=5)
        assert time.monotonic() - ended_at < 2.0


def test_an_open_websocket_ends_when_its_session_logs_out(stack: Stack) -> None:
    browser = console_login(stack.api_base, stack.token("platform-admin", subject="lola"))
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    with connect(
        ws_url(stack),
        subprotocols=["graphql-ws"],  # type: ignore[list-item]
        additional_headers={"Cookie": cookie, "Origin": stack.api_base},
        open_timeout=10,
    ) as socket:
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        out = console_logout(browser, stack.api_base)
        assert out.status_code == 303
        ended_at = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:
                socket.recv(timeout=5)
        assert time.monotonic() - ended_at < 2.0
