"""Issue 18, finding 8: a tenant's workload must not share the platform's identity.

One real `tenantctl up` (as root, as on this machine) with two active tenants. Each check runs a
real command as the uid a live workload runs as (`setpriv`, independent of the code under test):
it cannot read the control plane's secrets and stores, nor the other tenant's, cannot signal the
other workload or a platform process, cannot steer the edge elsewhere, cannot reach the other
tenant's workload but through the edge, and cannot change the gateway's routes. The gateway gives
a certificate to no name but an active tenant's.
"""

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tenant_pipelines.support import procs
from tests.edge_client import Answer
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, gateway_pid, tcp_ports_of

pytestmark = [pytest.mark.e2e]

ORG = "iso"
TENANTS = ("alpha", "bravo")


def as_uid(uid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` run as `uid` (and gid), no supplementary groups: what the workload could do."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
    )


def workload_pid(stack: Stack, slug: str) -> int:
    """The live workload of `slug`, found from /proc without the code under test."""
    key = f"{slug}-{ORG}"
    found = [
        pid
        for pid in procs.pids()
        if "resources.workload_server" in (argv := procs.argv(pid) or [])
        and argv[argv.index("--tenant-key") + 1] == key
        and any(str(stack.data_dir.resolve()) in a for a in argv)
    ]
    assert len(found) == 1, found
    return found[0]


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def uid_of(pid: int) -> int:
    return int(status_of(pid)["Uid"].split()[0])


def edge(stack: Stack, slug: str, path: str) -> Answer:
    return stack.edge_get(f"{slug}-{ORG}.localhost", path)


def older_version_left_it_readable(stack: Stack) -> None:
    """A data directory an older version left readable to all (0755 / 0644)."""
    (stack.data_dir / "logs").mkdir(mode=0o755)
    older = stack.data_dir / "logs" / "api.log.1"
    older.write_text("an older version's log\n")
    older.chmod(0o644)
    stack.data_dir.chmod(0o755)


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(before_start=older_version_left_it_readable)


@pytest.fixture(scope="module", autouse=True)
def tenants(stack: Stack) -> None:
    """Every tenant of TENANTS, active."""
    for slug in TENANTS:
        stack.cli(
            *("request", "--slug", slug, "--org", ORG, "--plan", "free"),
            *("--admin-email", f"admin@{slug}.example.com", "--caller", "sec"),
            *("--role", "platform-admin"),
        )
    for slug in TENANTS:
        assert stack.wait_for_state(slug, {"active", "failed"})["state"] == "active"


def test_each_workload_runs_as_an_unprivileged_uid_of_its_own(stack: Stack) -> None:
    uids = set()
    for slug in TENANTS:
        status = status_of(workload_pid(stack, slug))
        uid = int(status["Uid"].split()[0])
        assert uid != 0, f"{slug}'s workload runs as root: {status['Uid']}"
        assert status["Uid"].split() == [str(uid)] * 4, "it could switch back"
        assert status["Gid"].split() == [str(uid)] * 4
        assert status["Groups"] == "", "no supplementary groups"
        for capabilities in ("CapPrm", "CapEff", "CapAmb", "CapInh"):
            assert int(status[capabilities], 16) == 0, f"{capabilities} {status[capabilities]}"
        assert status["NoNewPrivs"] == "1"
        uids.add(uid)
    assert len(uids) == len(TENANTS), "two tenants share a uid"


def control_plane_files(stack: Stack) -> list[Path]:
    data = stack.data_dir.resolve()
    files = [
        data / "operator.key",
        data / "registry.db",
        data / "logs" / "api.log",
        data / "logs" / "edge.log",
        data / "edge" / "routes.db",
        data / "workloads" / f"{TENANTS[0]}-{ORG}.json",
        Path(stack.env["DAGSTER_HOME"]) / "dagster.yaml",
    ]
    for path in files:
        assert path.is_file(), f"{path} should exist for this check"
    return files


def test_a_workload_cannot_read_the_control_plane_or_another_tenant(stack: Stack) -> None:
    uid = uid_of(workload_pid(stack, TENANTS[0]))
    data = stack.data_dir.resolve()
    other = f"{TENANTS[1]}-{ORG}"
    targets = [
        *control_plane_files(stack),
        data / "storage" / f"{other}.db",
        data / "storage" / f"{TENANTS[0]}-{ORG}.db",  # its storage is the platform's record
        data / "identity" / other / "identity.db",
    ]
    for path in targets:
        read = as_uid(uid, "cat", str(path))
        assert read.returncode != 0 and "Permission denied" in read.stderr, (
            f"uid {uid} read {path}: {read.stdout[:60]!r}"
        )
    for directory in (data, data / "logs", data / "identity", data / "workloads"):
        listed = as_uid(uid, "ls", str(directory))
        assert "Permission denied" in listed.stderr, f"uid {uid} listed {directory}"


def test_a_workload_cannot_signal_another_tenant_or_the_platform(stack: Stack) -> None:
    assert stack.process is not None
    own = workload_pid(stack, TENANTS[0])
    uid = uid_of(own)
    platform = [
        pid
        for pid in procs.pids()
        if str(stack.data_dir.resolve()) in (procs.environ_value(pid, "TENANT_PLATFORM_OF") or "")
    ]
    assert platform, "the platform's processes carry their mark"
    targets = [workload_pid(stack, TENANTS[1]), stack.process.pid, *platform]
    for pid in targets:
        probe = as_uid(uid, "kill", "-0", str(pid))
        assert probe.returncode != 0 and "not permitted" in probe.stderr, (
            f"uid {uid} may signal {pid} ({procs.command_line(pid)})"
        )
        term = as_uid(uid, "kill", "-TERM", str(pid))
        assert term.returncode != 0 and "not permitted" in term.stderr
        assert procs.argv(pid) is not None, f"{pid} was stopped"
    assert edge(stack, TENANTS[1], "/healthz").status == 200


def state_of(stack: Stack, slug: str) -> dict[str, object]:
    state_file = stack.data_dir.resolve() / "workloads" / f"{slug}-{ORG}.json"
    return dict(json.loads(state_file.read_text()))


def test_a_workload_cannot_steer_the_edge_elsewhere(stack: Stack) -> None:
    slug = TENANTS[0]
    uid = uid_of(workload_pid(stack, slug))
    state_file = stack.data_dir.resolve() / "workloads" / f"{slug}-{ORG}.json"
    forged = json.dumps({**state_of(stack, slug), "socket": "/tmp/elsewhere.sock"})
    write = as_uid(uid, "sh", "-c", f"printf '%s' '{forged}' > {state_file}")
    assert write.returncode != 0 and "Permission denied" in write.stderr, "it rewrote its state"
    answer = edge(stack, slug, "/.well-known/openid-configuration")
    assert answer.status == 200, answer.body
    address = f"https://{slug}-{ORG}.localhost:{stack.https_port}"
    assert answer.json()["issuer"] == address, "relayed elsewhere"


# Connects to a workload's endpoint as its state file names it: a Unix socket's path, or (as the
# workloads of older versions listened) a loopback port.
CONNECT = r"""
import socket, sys
where = sys.argv[1]
if where.isdigit():
    sock = socket.create_connection(("127.0.0.1", int(where)), timeout=5)
else:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(where)
sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
print(sock.recv(200).decode(errors="replace"))
"""


def test_a_workload_cannot_reach_another_tenants_workload_but_through_the_edge(
    stack: Stack,
) -> None:
    """Tenant bravo's code, connecting straight to alpha's workload (past the edge: no TLS, any
    Host, any X-Forwarded-For it likes) is refused."""
    bravo = uid_of(workload_pid(stack, TENANTS[1]))
    alpha = state_of(stack, TENANTS[0])
    where = str(alpha.get("socket") or alpha.get("port"))
    tried = as_uid(bravo, sys.executable, "-S", "-c", CONNECT, where)
    assert tried.returncode != 0 and "Permission denied" in tried.stderr, (
        f"bravo's uid reached alpha's workload at {where}: {tried.stdout!r}"
    )
    assert edge(stack, TENANTS[0], "/healthz").status == 200  # its users still reach it


def test_only_the_platform_can_change_the_gateways_routes(stack: Stack) -> None:
    """Caddy's admin endpoint is a 0600 Unix socket of the platform's user in the data directory;
    no TCP admin port (Caddy's default is localhost:2019)."""
    admin = stack.data_dir.resolve() / "edge" / "admin.sock"
    info = os.stat(admin)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    uid = uid_of(workload_pid(stack, TENANTS[0]))
    tried = as_uid(uid, sys.executable, "-S", "-c", CONNECT, str(admin))
    assert tried.returncode != 0 and "Permission denied" in tried.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 2019), timeout=5).close()
    caddy = gateway_pid(stack.data_dir)
    assert tcp_ports_of([caddy]) == {stack.edge_port, stack.https_port}


# Open a route at the gateway for a tenant that has none: a marker in `edge/open/`.
MARK = r"""
import os, sys
open(os.path.join(sys.argv[1], "open", "mallory-iso"), "w").close()
"""


def test_a_workload_cannot_open_a_route_by_writing_the_gateways_markers(stack: Stack) -> None:
    """The gateway serves a host whose marker is in `edge/open/`: that directory, and the edge's
    above it, are the platform user's alone (0700), so a workload can neither add a marker nor
    point a link at its own socket."""
    edge = stack.data_dir.resolve() / "edge"
    for directory in (edge, edge / "open", edge / "closed", edge / "to"):
        info = os.stat(directory)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid(), directory
    uid = uid_of(workload_pid(stack, TENANTS[0]))
    tried = as_uid(uid, sys.executable, "-S", "-c", MARK, str(edge))
    assert tried.returncode != 0 and "Permission denied" in tried.stderr
    assert not (edge / "open" / "mallory-iso").exists()


def test_no_certificate_for_a_name_that_is_not_an_active_tenants(stack: Stack) -> None:
    """A handshake naming any other host fails (the platform's `ask` said no): nobody can make
    the platform ask a CA for names of their choosing."""
    for host in (f"ghost-{ORG}.localhost", "localhost", f"{TENANTS[0]}-other.localhost"):
        with pytest.raises(ssl.SSLError):
            stack.edge_get(host, "/")
    asked = requests.get(
        f"{stack.api_base}/gateway/ask", params={"domain": f"{TENANTS[0]}-{ORG}.localhost"}
    )
    assert asked.status_code == 200
    refused = requests.get(f"{stack.api_base}/gateway/ask", params={"domain": "ghost.localhost"})
    assert refused.status_code == 404


def test_the_data_directory_is_the_platforms_alone(stack: Stack) -> None:
    """0600 files and 0700 directories, an older version's included; only each tenant's identity
    directory belongs to its workload's uid."""
    workload_uids = {uid_of(workload_pid(stack, slug)) for slug in TENANTS} - {os.geteuid()}
    data = stack.data_dir.resolve()
    loose = []
    for root in (data, Path(stack.env["DAGSTER_HOME"])):
        for top, _dirs, files in os.walk(root):
            for path in [Path(top), *(Path(top) / f for f in files)]:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    continue
                if info.st_uid in workload_uids:
                    assert (
                        path.parent == data / "identity" or path.parent.parent == data / "identity"
                    ), path
                elif info.st_mode & 0o077:
                    loose.append(f"{path} {stat.filemode(info.st_mode)}")
    assert loose == [], "readable by others:\n" + "\n".join(loose)
    for slug in TENANTS:
        directory = data / "identity" / f"{slug}-{ORG}"
        info = os.stat(directory)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid in workload_uids, directory
