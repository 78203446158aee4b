"""One control host and two worker hosts, each a process tree of its own on this machine.

The control host is a real `tenantctl up` with TENANT_WORKER_HOSTS; each worker host a real
`tenantctl worker` with a data directory and Dagster home of its own. They share one PostgreSQL
database (registry and Dagster's storage) and Redis as the broker. Tenants are placed on the
least loaded worker host; each of their runs must execute in a process of that host, and their
workloads must live there, not on the other host and not on the control host.

The broker's database (`BROKER_DB`) is emptied before and after the module. Host names are
unique per run, so two runs sharing the Redis server would not share a queue.
"""

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from dagster import DagsterRunStatus

from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.procs import descendants, parent_pid
from tests.conftest import empty_broker, fresh_pg_database
from tests.pg_helpers import admin_sql, runs_of_tenant, step_started
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import TENANTCTL, Stack, processes_mentioning, write_fault_plan
from tests.waiting import wait_until
from tests.worker_hosts import WorkerHost, on_loopback, wait_said, worker_hosts

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BROKER_DB = 11
BROKER = f"redis://127.0.0.1:6379/{BROKER_DB}"
ORG = f"mh{uuid.uuid4().hex[:6]}"
SUFFIX = uuid.uuid4().hex[:6]
HOSTS = (f"h-a-{SUFFIX}", f"h-b-{SUFFIX}")
QUEUE_TAG = "dagster-celery/queue"
TASK_TAG = "dagster-celery/task_id"


@pytest.fixture(scope="module")
def database(pg_admin_url: str) -> Iterator[str]:
    with fresh_pg_database(pg_admin_url, "hosts") as url:
        yield url


@pytest.fixture(scope="module")
def broker() -> Iterator[redis.Redis]:
    with empty_broker(BROKER) as client:
        yield client


@pytest.fixture(scope="module")
def stack_options(database: str, broker: redis.Redis) -> StackOptions:
    env = {
        "DAGSTER_PG_URL": database,
        "TENANT_DB_URL": database,
        "TENANT_WORKER_HOSTS": on_loopback(HOSTS),
        "TENANT_CELERY_BROKER": BROKER,
    }
    return StackOptions(faults=True, env=env)


@pytest.fixture(scope="module")
def hosts(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerHost]]:
    with worker_hosts(stack.env, tmp_path_factory.mktemp("hosts")) as started:
        yield started


@pytest.fixture(scope="module")
def org_admin(stack: Stack) -> str:
    return stack.token("org-admin", org=ORG, subject="mh-admin")


def submit(stack: Stack, token: str, slug: str, plan: str = "team") -> None:
    body = {"slug": slug, "org": ORG, "plan": plan, "admin_email": f"admin@{slug}.example.com"}
    answer = stack.api("POST", "/v1/tenants", token, body=body)
    assert answer.status_code == 202, answer.text


def state(stack: Stack, token: str, slug: str) -> str | None:
    answer = stack.api("GET", f"/v1/tenants/{slug}", token)
    return str(answer.json()["state"]) if answer.status_code == 200 else None


def wait_active(stack: Stack, token: str, slug: str, timeout_s: float = 120) -> None:
    """Polled through the API (a `tenantctl status` per poll would start a Python each time)."""
    wait_until(lambda: state(stack, token, slug) == "active", timeout_s, f"{slug} not active", 0.2)


def placement(database: str) -> dict[str, str]:
    rows = admin_sql(database, "SELECT slug, worker_host FROM tenants WHERE org = %s", (ORG,))
    return {slug: host for slug, host in rows}


def runs_of(database: str, slug: str) -> list[dict[str, str]]:
    return runs_of_tenant(database, slug)


def host_named(hosts: list[WorkerHost], name: str) -> WorkerHost:
    return next(host for host in hosts if host.name == name)


def test_tenants_are_spread_over_the_worker_hosts_and_each_runs_on_its_own(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    slugs = [f"spread{i}" for i in range(4)]
    for slug in slugs:
        submit(stack, org_admin, slug)
    for slug in slugs:
        wait_active(stack, org_admin, slug)

    placed = placement(database)
    assert Counter(placed[slug] for slug in slugs) == Counter({HOSTS[0]: 2, HOSTS[1]: 2})
    for slug in slugs:
        key = f"{slug}-{ORG}"
        home = host_named(hosts, placed[slug])
        (run,) = runs_of(database, slug)
        assert (run["worker_host"], run[QUEUE_TAG]) == (home.name, home.name)
        assert home.runs_here(run[WORKER_TAG]), f"{slug}'s run did not run on {home.name}"
        assert key in home.workload_files()
        assert all(key not in other.workload_files() for other in hosts if other is not home)
        served = stack.edge_get(f"{key}.localhost", "/.well-known/openid-configuration")
        assert served.status == 200, served.body  # through the control host's edge, over HTTPS
        assert served.json()["issuer"] == f"https://{key}.localhost:{stack.https_port}"
    assert not (stack.data_dir / "workloads").exists(), "the control host ran a workload"


def test_a_worker_hosts_ingress_serves_the_control_hosts_edge_only(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    """A tenant's workload on any host could reach another host's ingress: without the secret
    the edge adds, the ingress refuses it."""
    submit(stack, org_admin, "direct")
    wait_active(stack, org_admin, "direct")
    home = host_named(hosts, placement(database)["direct"])
    address = home.env["TENANT_WORKER_HOSTS"].split(f"{home.name}=")[1].split(",")[0]
    url = f"http://{address}/.well-known/openid-configuration"
    forged = {"Host": f"direct-{ORG}.localhost", "X-Tenant-Edge": "guess"}
    for headers in ({"Host": forged["Host"]}, forged):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 403, answer.text
        assert answer.json() == {"error": "only the platform's edge may use this ingress"}
    assert (
        stack.edge_get(f"direct-{ORG}.localhost", "/.well-known/openid-configuration").status == 200
    )


def test_a_decommission_runs_on_the_tenants_host_and_stops_its_workload_there(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    submit(stack, org_admin, "leaving")
    wait_active(stack, org_admin, "leaving")
    home = host_named(hosts, placement(database)["leaving"])
    key = f"leaving-{ORG}"
    assert processes_mentioning("resources.workload_server", key, str(home.data_dir))

    stack.cli("decommission", "leaving", "--wait")

    *_, run = runs_of(database, "leaving")
    assert run[QUEUE_TAG] == home.name
    assert home.runs_here(run[WORKER_TAG])
    assert key not in home.workload_files()
    assert not processes_mentioning("resources.workload_server", key)
    # Its certificate went with its route (no TLS handshake names it): asked over plain HTTP.
    edge = f"http://127.0.0.1:{stack.edge_port}/"
    gone = requests.get(edge, headers={"Host": f"{key}.localhost"}, timeout=10)
    assert (gone.status_code, gone.json()) == (404, {"error": "unknown host"})


def test_a_run_process_killed_mid_run_is_run_again_on_the_same_host(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    """The deploy phase hangs once; its Celery process is killed outright there. The control
    host's daemon learns of it from the broker, and run retries finish the run on its host."""
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": "crashy", "mode": "hang"}])
    submit(stack, org_admin, "crashy")
    first = wait_until(
        lambda: next(iter(runs_of(database, "crashy")), None), 60, "no run for crashy"
    )
    home = host_named(hosts, first["worker_host"])
    worker = wait_until(
        lambda: runs_of(database, "crashy")[0].get(WORKER_TAG) or None, 60, "no worker recorded"
    )
    hanging = wait_until(
        lambda: deploy_started(database, first["run_id"]), 60, "deploy never started"
    )
    assert hanging and home.runs_here(worker)

    os.kill(int(worker.split(":")[0]), signal.SIGKILL)
    killed_at = time.monotonic()
    wait_active(stack, org_admin, "crashy", timeout_s=180)
    resumed_after = time.monotonic() - killed_at

    runs = runs_of(database, "crashy")
    assert len(runs) == 2, runs
    retry = runs[1]
    assert retry["dagster/parent_run_id"] == first["run_id"]
    assert (retry["worker_host"], retry[QUEUE_TAG]) == (home.name, home.name)
    assert home.runs_here(retry[WORKER_TAG])
    key = f"crashy-{ORG}"
    assert len(processes_mentioning("resources.workload_server", key)) == 1
    write_fault_plan(stack.fault_plan, [])
    print(f"kill -9 of the run's process -> tenant active: {resumed_after:.1f} s")


def test_a_run_terminated_from_the_dagster_ui_stops_on_its_host_and_is_compensated(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    """Terminate (the UI's GraphQL mutation, through the API server's door) reaches the run's
    Celery task on its worker host, which interrupts the hanging phase: the run ends canceled and
    the tenant is compensated; a retry then makes it active on the same host. (The Celery process
    itself lives on for the next run: its processes are warm and shared.)"""
    assert stack.fault_plan is not None
    write_fault_plan(
        stack.fault_plan, [{"phase": "deploy", "tenant": "ended", "mode": "hang", "times": 1}]
    )
    submit(stack, org_admin, "ended")
    first = wait_until(lambda: next(iter(runs_of(database, "ended")), None), 60, "no run")
    home = host_named(hosts, first["worker_host"])
    wait_until(lambda: deploy_started(database, first["run_id"]), 60, "deploy never started")
    (run,) = runs_of(database, "ended")
    assert home.runs_here(run[WORKER_TAG])

    stack.graphql_client().terminate_run(first["run_id"])

    wait_until(lambda: state(stack, org_admin, "ended") == "failed", 60, "never failed")
    said = (home.data_dir / "logs" / "celery.log").read_text()
    assert f"Terminating {run[TASK_TAG]}" in said  # the revoke reached the tenant's host
    query = "SELECT status FROM runs WHERE run_id = %s"
    ended = (DagsterRunStatus.CANCELED.value, DagsterRunStatus.FAILURE.value)
    wait_until(
        lambda: admin_sql(database, query, (first["run_id"],))[0][0] in ended, 30, "run not ended"
    )
    status = stack.cli_json("status", "ended")
    assert status["failure_reason"] == "the run was terminated"  # type: ignore[index]
    stack.cli("retry", "ended", "--wait")
    assert state(stack, org_admin, "ended") == "active"
    *_, retried = runs_of(database, "ended")
    assert home.runs_here(retried[WORKER_TAG])
    assert len(processes_mentioning("resources.workload_server", f"ended-{ORG}")) == 1
    write_fault_plan(stack.fault_plan, [])


def test_a_celery_worker_killed_mid_run_is_restarted_and_runs_the_run_again(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    """`kill -9` of a worker host's Celery worker itself: its processes die with it and the task
    state at the broker stays "started". The host's `tenantctl worker` restarts it, ends the run
    whose worker is gone, and run retries finish it on the same host."""
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": "orphan", "mode": "hang"}])
    submit(stack, org_admin, "orphan")
    first = wait_until(
        lambda: next(iter(runs_of(database, "orphan")), None), 60, "no run for orphan"
    )
    home = host_named(hosts, first["worker_host"])
    wait_until(lambda: deploy_started(database, first["run_id"]), 60, "deploy never started")
    assert home.process is not None
    (celery,) = [
        pid
        for pid, line in descendants([home.process.pid]).items()
        if "celery" in line and parent_pid(pid) == home.process.pid
    ]

    os.kill(celery, signal.SIGKILL)
    wait_said(home, "1 run(s) whose worker process died will be run again")
    wait_active(stack, org_admin, "orphan", timeout_s=180)

    runs = runs_of(database, "orphan")
    assert len(runs) == 2, runs
    assert runs[1]["dagster/parent_run_id"] == first["run_id"]
    assert home.runs_here(runs[1][WORKER_TAG])
    assert len(processes_mentioning("resources.workload_server", f"orphan-{ORG}")) == 1
    write_fault_plan(stack.fault_plan, [])


def deploy_started(database: str, run_id: str) -> bool:
    return step_started(database, run_id, "deploy")


def test_a_restarted_worker_host_restores_its_own_tenants_workloads_and_no_others(
    stack: Stack, hosts: list[WorkerHost], org_admin: str, database: str
) -> None:
    submit(stack, org_admin, "stays")
    wait_active(stack, org_admin, "stays")
    placed = placement(database)
    active = {slug for slug in placed if state(stack, org_admin, slug) == "active"}
    first, second = hosts
    theirs = {f"{slug}-{ORG}" for slug in active if placed[slug] == first.name}
    others = {f"{slug}-{ORG}" for slug in active if placed[slug] == second.name}
    assert theirs and others

    assert first.stop() == 0
    assert not processes_mentioning("resources.workload_server", str(first.data_dir))
    assert all(processes_mentioning("resources.workload_server", key) for key in others)

    said = first.start()
    assert f"({len(theirs)} active tenant workload(s) restored)" in said
    for key in theirs:
        assert processes_mentioning("resources.workload_server", key, str(first.data_dir))
    for key in others:
        assert not processes_mentioning("resources.workload_server", key, str(first.data_dir))


def test_a_second_worker_under_a_hosts_name_is_refused_naming_the_first(
    stack: Stack, hosts: list[WorkerHost], tmp_path: Path
) -> None:
    """Two workers under one name would share its queue and settle each other's runs; the
    second has a data directory of its own, as on another machine."""
    first = hosts[0]
    second = WorkerHost.beside(stack.env, first.name, tmp_path)
    result = subprocess.run(
        [TENANTCTL, "worker", "--init"],
        env=second.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout
    assert f"a worker for the host {first.name!r} already runs on the PostgreSQL database" in (
        result.stderr
    )
    assert f"tenantctl worker {first.name} on" in result.stderr
    assert not processes_mentioning("celery", str(second.data_dir))


def test_the_control_hosts_instance_sends_runs_through_the_broker(
    stack: Stack, hosts: list[WorkerHost]
) -> None:
    config = (Path(stack.env["DAGSTER_HOME"]) / "dagster.yaml").read_text()
    assert "HostRunLauncher" in config
    assert BROKER not in config and "redis://" not in config  # read from the environment


def test_no_file_or_log_of_any_host_holds_the_ingress_secret(
    stack: Stack, hosts: list[WorkerHost]
) -> None:
    """The edge and each ingress read it from their environment: configurations, plans and logs
    name the variable at most."""
    secret = Settings.from_env(stack.env).ingress_secret
    assert secret
    for data_dir in (stack.data_dir, *(host.data_dir for host in hosts)):
        for path in [*(data_dir / "edge").glob("*.json"), *(data_dir / "logs").glob("*.log")]:
            assert secret not in path.read_text(errors="replace"), path
        assert "{env.TENANT_INGRESS_SECRET}" in (data_dir / "edge" / "caddy.json").read_text()
