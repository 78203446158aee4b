"""A control host and two worker hosts, each a network, PID and mount namespace of its own.

The hosts share only a private bridge: PostgreSQL (registry and Dagster's storage) and Redis
(the broker) are the machine's, reached at the bridge's address through a relay. Each host runs
the real command (`tenantctl up` on the control host, `tenantctl worker` on each worker host) as
PID 1 of its namespace, and operators' commands run inside it (`nsenter`). Traffic goes only to
loopback and to the bridge's addresses. Everything this module made (namespaces, bridge, relay,
processes) is removed at its end, whatever happened.

Every tenant is served through the control host's edge (HTTPS on its loopback, as a client on
that host reaches it), which relays to the ingress of the tenant's worker host; an ingress asked
by anyone else (a workload on another host) refuses.
"""

import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.gateway import AT_DIR, OPEN_DIR, local_ca_root
from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.settings import DEFAULT_HTTPS_PORT
from tenant_pipelines.support import procs
from tests.conftest import empty_broker, fresh_pg_database
from tests.namespace_hosts import HostProcess, Network, leftover_interfaces, wait_said
from tests.pg_helpers import admin_sql, runs_of_tenant, step_started
from tests.stack_helpers import TENANTCTL, write_fault_plan
from tests.waiting import wait_until

pytestmark = [pytest.mark.namespaces, pytest.mark.postgres]


BROKER_DB = 14
INGRESS_PORT = 8480
SUFFIX = uuid.uuid4().hex[:6]
WORKERS = (f"ns-a-{SUFFIX}", f"ns-b-{SUFFIX}")
ORG = f"ns{SUFFIX}"


class Platform:
    def __init__(self, network: Network, database: str, control: HostProcess) -> None:
        self.network, self.database, self.control = network, database, control
        self.workers: dict[str, HostProcess] = {}
        self.data_dirs: dict[str, Path] = {}
        self.addresses: dict[str, str] = {}

    def cli(self, *args: str) -> str:
        result = self.control.run(TENANTCTL, *args)
        assert result.returncode == 0, f"tenantctl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def submit(self, slug: str) -> None:
        self.cli(
            *("request", "--slug", slug, "--org", ORG, "--plan", "team"),
            *(
                "--admin-email",
                f"admin@{slug}.example.com",
                "--caller",
                "ns",
                "--role",
                "org-admin",
            ),
        )

    def state(self, slug: str) -> str | None:
        """The tenant's state as the registry records it (read from here: a `tenantctl status`
        inside the control host per poll would cost a Python start each)."""
        rows = admin_sql(
            self.database,
            "SELECT state FROM tenants WHERE slug = %s AND org = %s AND state <> 'decommissioned'",
            (slug, ORG),
        )
        return str(rows[0][0]) if rows else None

    def provision(self, slugs: list[str]) -> None:
        """Submit them all, then wait for each to be active: they run side by side."""
        for slug in slugs:
            self.submit(slug)
        for slug in slugs:
            self.wait_active(slug)

    def wait_active(self, slug: str, timeout_s: float = 120) -> None:
        wait_until(lambda: self.state(slug) == "active", timeout_s, f"{slug} never active", 0.2)

    def host_of(self, slug: str) -> str:
        rows = admin_sql(self.database, "SELECT worker_host FROM tenants WHERE slug = %s", (slug,))
        return str(rows[0][0])

    def runs_of(self, slug: str) -> list[dict[str, str]]:
        return runs_of_tenant(self.database, slug)

    def routes_of(self, key: str) -> list[tuple[str, str]]:
        """The registry's routes of tenant `key`: (state, worker host)."""
        query = "SELECT state, worker_host FROM routes WHERE tenant_key = %s"
        return [(str(state), str(host)) for state, host in admin_sql(self.database, query, (key,))]

    def served(self, key: str) -> subprocess.CompletedProcess[str]:
        """GET a tenant's discovery document through the control host's edge, over HTTPS, from a
        client on the control host (trusting the edge's local CA)."""
        host, port = f"{key}.localhost", DEFAULT_HTTPS_PORT
        return self.control.run(
            *(
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                str(local_ca_root(self.data_dirs["control"])),
            ),
            *("--resolve", f"{host}:{port}:127.0.0.1", "--write-out", "\n%{http_code}"),
            f"https://{host}:{port}/.well-known/openid-configuration",
        )

    def workloads_of(self, key: str) -> list[int]:
        return [
            pid
            for pid in procs.pids()
            if "resources.workload_server" in (line := procs.command_line(pid) or "")
            and f"--tenant-key {key} " in line
        ]


@pytest.fixture(scope="module")
def platform(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # Not skipped without root: the tier is part of `make test`, which CI runs as root.
    assert os.geteuid() == 0, "the namespace tier makes namespaces and a bridge: run it as root"
    root = tmp_path_factory.mktemp("namespaces")
    network = Network()
    hosts: list[HostProcess] = []
    try:
        with (
            empty_broker(f"redis://127.0.0.1:6379/{BROKER_DB}"),
            fresh_pg_database(pg_admin_url, "ns") as database,
        ):
            network.create()
            addresses = {name: network.add_host(name) for name in ("control", *WORKERS)}
            network.relay_to_machine(5432, 6379)
            at_bridge = database.replace("127.0.0.1", network.gateway)
            base = {
                k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))
            }
            base.update(
                DAGSTER_PG_URL=at_bridge,
                TENANT_DB_URL=at_bridge,
                TENANT_WORKER_HOSTS=",".join(
                    f"{name}={addresses[name]}:{INGRESS_PORT}" for name in WORKERS
                ),
                TENANT_CELERY_BROKER=f"redis://{network.gateway}:6379/{BROKER_DB}",
                TENANT_FAULT_PLAN=str(root / "faults.json"),
                TENANT_SENSOR_INTERVAL_S="1",
            )
            write_fault_plan(root / "faults.json", [])

            def host(name: str, command: str) -> HostProcess:
                env = {
                    **base,
                    "TENANT_HOST_NAME": name,
                    "TENANT_DATA_DIR": str(root / name / "data"),
                    "DAGSTER_HOME": str(root / name / "dagster"),
                }
                namespace = network.namespaces[list(addresses).index(name)]
                process = HostProcess(name, namespace, env, [TENANTCTL, command, "--init"])
                hosts.append(process)
                return process

            control = host("control", "up")
            control.start()
            platform = Platform(network, database, control)
            platform.data_dirs["control"] = root / "control" / "data"
            platform.addresses = addresses
            for name in WORKERS:
                platform.workers[name] = host(name, "worker")
                platform.workers[name].start()
                platform.data_dirs[name] = root / name / "data"
            yield platform
            for process in reversed(hosts):
                assert process.stop() == 0, "".join(process.said)
    finally:
        for process in hosts:
            process.kill()
        network.remove()
    assert not leftover_interfaces(network.tag)


def test_each_run_and_workload_is_in_its_tenants_host(platform: Platform) -> None:
    slugs = [f"ns{i}" for i in range(4)]
    platform.provision(slugs)

    placed = {slug: platform.host_of(slug) for slug in slugs}
    assert Counter(placed.values()) == Counter(dict.fromkeys(WORKERS, 2))
    for slug in slugs:
        home = platform.workers[placed[slug]]
        (run,) = platform.runs_of(slug)
        assert run["dagster-celery/queue"] == home.name
        assert home.owns(run[WORKER_TAG]), f"{slug}'s run did not run on {home.name}"
        (workload,) = platform.workloads_of(f"{slug}-{ORG}")
        assert workload in home.processes()


def test_every_tenant_is_served_through_the_control_hosts_edge(platform: Platform) -> None:
    slugs = [f"nsweb{i}" for i in range(2)]
    platform.provision(slugs)
    assert {platform.host_of(slug) for slug in slugs} == set(WORKERS)
    for slug in slugs:
        key = f"{slug}-{ORG}"
        answer = platform.served(key)
        body, _, status = answer.stdout.rpartition("\n")
        assert (answer.returncode, status) == (0, "200"), f"{key}: {answer.stdout}{answer.stderr}"
        assert json.loads(body)["issuer"] == f"https://{key}.localhost:{DEFAULT_HTTPS_PORT}"
        assert platform.routes_of(key) == [("open", platform.host_of(slug))]


def test_a_worker_hosts_ingress_refuses_anyone_but_the_edge(platform: Platform) -> None:
    """From a worker host (where tenants' workloads run), another host's ingress and its own
    refuse a request without the edge's secret."""
    platform.submit("nsdirect")
    platform.wait_active("nsdirect")
    host = f"nsdirect-{ORG}.localhost"
    for caller in platform.workers.values():
        for target in WORKERS:
            answer = caller.run(
                *("curl", "-sS", "--max-time", "20", "-H", f"Host: {host}"),
                *("-H", "X-Tenant-Edge: guess", "--write-out", "\n%{http_code}"),
                f"http://{platform.addresses[target]}:{INGRESS_PORT}/",
            )
            assert answer.stdout.endswith("\n403"), f"{caller.name} -> {target}: {answer.stdout}"


def test_a_decommission_leaves_no_process_or_route_on_the_tenants_host(
    platform: Platform,
) -> None:
    platform.submit("nsgone")
    platform.wait_active("nsgone")
    home = platform.workers[platform.host_of("nsgone")]
    key = f"nsgone-{ORG}"
    ingress_marker = platform.data_dirs[home.name] / "edge" / OPEN_DIR / key
    edge_marker = platform.data_dirs["control"] / "edge" / AT_DIR / home.name / key
    assert platform.routes_of(key) == [("open", home.name)]
    assert ingress_marker.exists() and edge_marker.exists()

    platform.cli("decommission", "nsgone", "--wait")

    *_, run = platform.runs_of("nsgone")
    assert home.owns(run[WORKER_TAG])
    assert not platform.workloads_of(key)
    assert not platform.routes_of(key)
    assert not ingress_marker.exists()
    wait_until(lambda: not edge_marker.exists(), 10, "the edge still routes the tenant")


def test_a_killed_celery_worker_runs_its_run_again_on_its_host_with_one_workload(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    faults = Path(platform.control.env["TENANT_FAULT_PLAN"])
    write_fault_plan(faults, [{"phase": "deploy", "tenant": "nskill", "mode": "hang"}])
    platform.submit("nskill")
    first = wait_until(lambda: next(iter(platform.runs_of("nskill")), None), 60, "no run")
    home = platform.workers[first["worker_host"]]
    wait_until(
        lambda: step_started(platform.database, first["run_id"], "deploy"),
        60,
        "deploy never started",
    )
    worker = home.command_pid
    (celery,) = [
        pid
        for pid in home.processes()
        if procs.parent_pid(pid) == worker and "celery" in (procs.command_line(pid) or "")
    ]

    os.kill(celery, signal.SIGKILL)
    wait_said(home, "1 run(s) whose worker process died will be run again")
    platform.wait_active("nskill", timeout_s=180)

    runs = platform.runs_of("nskill")
    assert len(runs) == 2 and runs[1]["dagster/parent_run_id"] == first["run_id"]
    assert home.owns(runs[1][WORKER_TAG])
    (workload,) = platform.workloads_of(f"nskill-{ORG}")
    assert workload in home.processes()
    write_fault_plan(faults, [])


def test_the_inventory_is_clean_on_every_host(platform: Platform) -> None:
    for host in (platform.control, *platform.workers.values()):
        result = host.run(TENANTCTL, "inventory")
        assert result.returncode == 0, f"{host.name}: {result.stdout}{result.stderr}"


def test_no_worker_wrote_under_the_control_hosts_data_directory(platform: Platform) -> None:
    control = platform.data_dirs["control"]
    for kind in ("workloads", "identity", "outbox", "storage"):
        written = (
            sorted(p.name for p in (control / kind).glob("*")) if (control / kind).is_dir() else []
        )
        assert not written, f"{kind} under the control host: {written}"
    for name in WORKERS:
        assert any((platform.data_dirs[name] / "workloads").glob("*.json")), name
