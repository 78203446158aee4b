"""Local workloads as real processes: readiness, reuse, safe stopping, and nothing left behind."""

import dataclasses
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resources.deployer import LocalProcessDeployer, read_endpoint
from resources.identity import LocalSQLiteIdentityStore
from tenant_pipelines.domain.errors import PermanentError, ReadinessTimeout
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support import procs
from tenant_pipelines.support.unix_http import UnixHTTPConnection
from tests.local_backends import workload_pids
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DOMAIN = "localhost"


def tenant(slug: str = "acme", org: str = "corp", plan: str = "free") -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org=org,
        plan=plan,
        admin_email=f"admin@{org}.example",
    )


def gone(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or not cmdline.read_bytes()


def wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    wait_until(lambda: gone(pid), timeout_s, f"process {pid} is still there", 0.05)


def get(socket_path: str, path: str) -> tuple[int, str, bytes]:
    conn = UnixHTTPConnection(socket_path, 5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not ours, whose PID ends up in a state file."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def write_state(data_dir: Path, key: str, pid: int, where: str = "/nowhere.sock") -> Path:
    path = data_dir / "workloads" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"pid": pid, "socket": where, "started_at": "2024-01-01T00:00:00Z"}
    path.write_text(json.dumps(state))
    return path


def test_ensure_starts_a_ready_workload_in_its_own_session(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    assert deployer.list_existing() == set()
    identity.ensure(tenant())
    handle = deployer.ensure(tenant())

    pid, sock = handle.details["pid"], handle.details["socket"]
    assert (handle.kind, handle.tenant_key) == ("workload", "acme-corp")
    assert workload_pids(data_dir) == {pid}
    assert os.getsid(pid) == pid, "it must outlive the run worker that started it"
    status, _, body = get(sock, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "tenant": "acme-corp"})
    state = json.loads((data_dir / "workloads" / "acme-corp.json").read_text())
    assert (state["pid"], state["socket"], bool(state["started_at"])) == (pid, sock, True)
    assert read_endpoint(data_dir, "acme-corp") == sock
    assert deployer.list_existing() == {"acme-corp"}
    assert (data_dir / "workloads" / "acme-corp.log").exists()


@pytest.mark.parametrize("plan", ["free", "enterprise"])
def test_a_workload_is_held_to_its_plans_memory(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, plan: str
) -> None:
    identity.ensure(tenant(plan=plan))
    handle = deployer.ensure(tenant(plan=plan))

    limits = Path(f"/proc/{handle.details['pid']}/limits").read_text().splitlines()
    [data] = [line.split() for line in limits if line.startswith("Max data size")]
    cap = PLANS[plan].workload_memory_mb * 1024 * 1024
    assert (int(data[3]), int(data[4])) == (cap, cap)  # soft and hard limit
    assert get(handle.details["socket"], "/healthz")[0] == 200  # and it serves within it


@pytest.mark.parametrize("plan", ["free", "team", "enterprise"])
def test_a_workload_runs_at_its_plans_cpu_priority(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, plan: str
) -> None:
    """Its plan's, started from this process at ours (as `up` restores it) as from a run worker
    at the plan's already: field 19 of /proc/PID/stat is the nice value."""
    identity.ensure(tenant(plan=plan))
    handle = deployer.ensure(tenant(plan=plan))

    stat = Path(f"/proc/{handle.details['pid']}/stat").read_text()
    niceness = int(stat.rsplit(")", 1)[1].split()[16])
    assert niceness == max(os.getpriority(os.PRIO_PROCESS, 0), PLANS[plan].cpu_nice)


def test_second_ensure_reuses_the_running_workload(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    identity.ensure(tenant())
    first = deployer.ensure(tenant())
    assert deployer.ensure(tenant()) == first
    assert workload_pids(data_dir) == {first.details["pid"]}


def test_release_stops_the_workload_and_is_idempotent(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    identity.ensure(tenant())
    pid = deployer.ensure(tenant()).details["pid"]

    assert deployer.release("acme-corp") is True
    wait_gone(pid, timeout_s=0.5)
    assert not (data_dir / "workloads" / "acme-corp.json").exists()
    assert deployer.release("acme-corp") is False
    assert deployer.list_existing() == set()
    assert read_endpoint(data_dir, "acme-corp") is None


def test_the_workload_serves_discovery_admin_and_json_404(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore
) -> None:
    identity.ensure(tenant())
    sock = deployer.ensure(tenant()).details["socket"]

    status, content_type, body = get(sock, "/.well-known/openid-configuration")
    document = json.loads(body)
    assert (status, content_type) == (200, "application/json")
    assert document["issuer"] == "https://acme-corp.localhost"
    for field in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert document[field].startswith("https://acme-corp.localhost/")
    for field in (
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ):
        assert document[field]
    status, content_type, body = get(sock, "/admin")  # the console asks for its admin
    assert (status, content_type) == (401, "application/json")
    assert json.loads(body)["tenant"] == "acme-corp"
    status, content_type, body = get(sock, "/nope?x=1")
    assert (status, content_type, json.loads(body)["path"]) == (
        404,
        "application/json",
        "/nope?x=1",
    )


def test_a_workload_that_cannot_open_its_identity_store_fails_readiness(
    deployer: LocalProcessDeployer, data_dir: Path
) -> None:
    # No identity store was allocated: the workload exits instead of becoming healthy.
    with pytest.raises(ReadinessTimeout, match=r"acme-corp.*10 s") as raised:
        deployer.ensure(tenant())
    assert not isinstance(raised.value, PermanentError), "readiness failures are retried"
    assert workload_pids(data_dir) == set()
    assert deployer.list_existing() == set()
    assert not (data_dir / "workloads" / "acme-corp.json").exists()
    assert "cannot open identity store" in (data_dir / "workloads" / "acme-corp.log").read_text()


def test_readiness_timeout_kills_the_process_it_started(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    # A deadline no process can meet: it passes before the interpreter has even started.
    impatient = dataclasses.replace(deployer, readiness_timeout_s=0.001)
    identity.ensure(tenant())

    with pytest.raises(ReadinessTimeout, match=r"'acme-corp' was not ready within 0\.001 s"):
        impatient.ensure(tenant())
    assert workload_pids(data_dir) == set()
    assert not (data_dir / "workloads" / "acme-corp.json").exists()


def test_a_pid_that_is_not_our_workload_is_never_signalled(
    deployer: LocalProcessDeployer,
    identity: LocalSQLiteIdentityStore,
    stranger: subprocess.Popen[bytes],
    data_dir: Path,
) -> None:
    write_state(data_dir, "acme-corp", stranger.pid)  # a recycled PID in a stale state file

    assert read_endpoint(data_dir, "acme-corp") is None
    assert deployer.list_existing() == set()
    assert deployer.release("acme-corp") is True  # the stale state file went
    assert deployer.stop_all() == []
    assert stranger.poll() is None, "a foreign process was signalled"

    write_state(data_dir, "acme-corp", stranger.pid)
    identity.ensure(tenant())
    handle = deployer.ensure(tenant())
    assert handle.details["pid"] != stranger.pid
    assert stranger.poll() is None


def test_another_tenants_workload_is_never_signalled(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    identity.ensure(tenant("acme", "corp"))
    acme = deployer.ensure(tenant("acme", "corp"))
    write_state(data_dir, "beta-labs", acme.details["pid"], acme.details["socket"])

    assert read_endpoint(data_dir, "beta-labs") is None
    deployer.release("beta-labs")
    assert get(acme.details["socket"], "/healthz")[0] == 200
    assert deployer.list_existing() == {"acme-corp"}


def test_ensure_replaces_a_workload_that_died(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    identity.ensure(tenant())
    old = deployer.ensure(tenant()).details["pid"]
    os.kill(old, signal.SIGKILL)  # a crash: no chance to remove its state file
    wait_gone(old)
    assert read_endpoint(data_dir, "acme-corp") is None

    new = deployer.ensure(tenant())
    assert new.details["pid"] != old
    assert workload_pids(data_dir) == {new.details["pid"]}


def test_stop_all_stops_every_workload_and_touches_nothing_else(
    deployer: LocalProcessDeployer,
    identity: LocalSQLiteIdentityStore,
    stranger: subprocess.Popen[bytes],
    data_dir: Path,
) -> None:
    for spec in (tenant("acme", "corp"), tenant("beta", "labs")):
        identity.ensure(spec)
        deployer.ensure(spec)

    started = time.monotonic()
    assert deployer.stop_all() == ["acme-corp", "beta-labs"]
    assert time.monotonic() - started < 3, "workloads are stopped together, not one by one"
    assert workload_pids(data_dir) == set()
    assert deployer.stop_all() == []
    assert identity.list_existing() == {"acme-corp", "beta-labs"}
    assert stranger.poll() is None


def test_a_stopping_workload_keeps_a_state_file_that_names_a_successor(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    identity.ensure(tenant())
    pid = deployer.ensure(tenant()).details["pid"]
    successor = write_state(data_dir, "acme-corp", pid + 1_000_000)

    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    assert json.loads(successor.read_text())["pid"] == pid + 1_000_000


def test_as_root_a_workload_runs_as_its_own_uid_shut_in_its_identity_store(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    identity.ensure(tenant())
    handle = deployer.ensure(tenant())
    pid, uid = handle.details["pid"], handle.details["uid"]

    assert os.geteuid() == 0, "this machine's tests run as root, as the platform does"
    assert uid >= 0x70000000
    credentials = procs.credentials(pid)
    assert credentials is not None and credentials.confined_to(uid, uid), credentials
    store_dir = data_dir / "identity" / "acme-corp"
    assert os.readlink(f"/proc/{pid}/root") == str(store_dir), "shut in its store's directory"
    assert (os.stat(store_dir).st_uid, stat.S_IMODE(os.stat(store_dir).st_mode)) == (uid, 0o700)
    assert os.stat(store_dir / "identity.db").st_uid == uid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[argv.index("--run-as") + 1] == f"{uid}:{uid}"
    for platform_file in (data_dir / "workloads", data_dir / "workloads" / "acme-corp.json"):
        info = os.stat(platform_file)
        assert info.st_uid == 0 and not info.st_mode & 0o077, f"{platform_file} is the platform's"


def test_the_workloads_uid_can_write_its_store_and_journal_beside_it(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    """What the tenant's admin sign-in needs: a write transaction, as the workload makes it."""
    identity.ensure(tenant())
    uid = deployer.ensure(tenant()).details["uid"]
    store_dir = data_dir / "identity" / "acme-corp"
    write = (
        "import sqlite3, sys\n"
        "from pathlib import Path\n"
        "from tenant_pipelines.support.privileges import drop_to\n"
        f"drop_to({uid}, {uid}, root=Path({str(store_dir)!r}))\n"
        "conn = sqlite3.connect('/identity.db', isolation_level=None)\n"
        "conn.execute('PRAGMA journal_mode = DELETE')\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "conn.execute(\"UPDATE users SET status = 'active' WHERE role = 'admin'\")\n"
        "print(sorted(p.name for p in Path('/').iterdir()))\n"
        "conn.execute('COMMIT')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", write], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "identity.db-journal" in done.stdout, "SQLite made its journal beside the store"
    assert identity.invitation("acme-corp").status == "active"
    assert get(deployer.ensure(tenant()).details["socket"], "/healthz")[0] == 200


def test_every_request_path_answers_after_the_workload_gave_up_root(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore
) -> None:
    identity.ensure(tenant())
    sock = deployer.ensure(tenant()).details["socket"]

    assert get(sock, "/healthz")[0] == 200
    assert get(sock, "/admin")[0] == 401  # the admin console asks for its admin
    assert get(sock, "/admin/sign-in")[0] == 200
    assert get(sock, "/.well-known/openid-configuration")[0] == 200
    assert get(sock, "/missing")[0] == 404
    for raw in (
        b"HEAD /admin HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /admin HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(sock)
            conn.sendall(raw)
            answer = conn.recv(4096)
        assert answer.split(b"\r\n", 1)[0] in (
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 401 Unauthorized",
            b"HTTP/1.1 403 Forbidden",
            b"HTTP/1.1 405 Method Not Allowed",
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.1 400 Bad Request",
        ), (raw, answer)
    assert get(sock, "/healthz")[0] == 200, "and it still serves"


def test_a_tenant_keeps_its_uid_across_restarts_and_tenants_never_share_one(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    for spec in (tenant("acme", "corp"), tenant("beta", "labs")):
        identity.ensure(spec)
    first = deployer.ensure(tenant("acme", "corp"))
    other = deployer.ensure(tenant("beta", "labs"))
    assert first.details["uid"] != other.details["uid"]

    adopted = LocalProcessDeployer(data_dir=str(data_dir), domain=DOMAIN).ensure(tenant())
    assert adopted == first, "a restored platform adopts the running workload, uid and all"
    deployer.stop_all()
    restarted = deployer.ensure(tenant())
    assert restarted.details["pid"] != first.details["pid"]
    assert restarted.details["uid"] == first.details["uid"]
    assert deployer.release("acme-corp") is True
    assert deployer.ensure(tenant()).details["uid"] == first.details["uid"]


def test_the_edge_relays_only_to_the_socket_the_deployer_bound(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    """A state whose process no longer holds that very socket (closed, or another descriptor),
    runs as another uid, or is not the tenant's workload leads nowhere."""
    identity.ensure(tenant())
    deployer.ensure(tenant())
    path = data_dir / "workloads" / "acme-corp.json"
    good = json.loads(path.read_text())
    assert read_endpoint(data_dir, "acme-corp") == good["socket"]
    for change in (
        {"socket_inode": good["socket_inode"] + 1},
        {"listen_fd": 1},  # its log: held, but not the socket
        {"listen_fd": 999},
        {"uid": 0},
        {"pid": os.getpid()},
    ):
        path.write_text(json.dumps({**good, **change}))
        assert read_endpoint(data_dir, "acme-corp") is None, change
    path.write_text(json.dumps(good))
    assert read_endpoint(data_dir, "acme-corp") == good["socket"]


def test_a_process_of_a_workloads_uid_cannot_pass_for_another_tenants_workload(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore, data_dir: Path
) -> None:
    """Command lines are the process's to write; uids are not: a process of one tenant's uid
    claiming another tenant's key (and another tenant id) is neither listed, nor signalled, nor
    able to make the deployer refuse the real tenant."""
    for spec in (tenant("acme", "corp"), tenant("evil", "corp")):
        identity.ensure(spec)
    acme = deployer.ensure(tenant("acme", "corp"))
    evil_uid = deployer.ensure(tenant("evil", "corp")).details["uid"]
    claim = ["resources.workload_server", "--tenant-key", "acme-corp", "--tenant-id", "t-evil"]
    claim += ["--state-file", str(data_dir / "workloads" / "acme-corp.json")]
    as_evil = ["setpriv", f"--reuid={evil_uid}", f"--regid={evil_uid}", "--clear-groups", "--"]
    forger = subprocess.Popen([*as_evil, "sh", "-c", "while :; do sleep 1; done", *claim])
    try:
        wait_until(
            lambda: (
                b"resources.workload_server" in Path(f"/proc/{forger.pid}/cmdline").read_bytes()
            ),
            5,
            "the forger never claimed the key",
            0.05,
        )
        assert deployer.ensure(tenant("acme", "corp")) == acme
        assert deployer.list_existing() == {"acme-corp", "evil-corp"}
        assert deployer.release("acme-corp", "t-acme") is True
        assert deployer.stop_all() == ["evil-corp"]
        assert forger.poll() is None, "a process that is no workload was signalled"
    finally:
        forger.kill()
        forger.wait()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--listen-fd", "99"], "workload acme-corp: no socket to serve on: [Errno 9]"),
        (["--listen-fd", "0", "--run-as", "0:0"], "cannot give up root for (0, 0): refusing"),
    ],
)
def test_a_workload_that_cannot_serve_or_confine_itself_exits_saying_why(
    identity: LocalSQLiteIdentityStore, data_dir: Path, extra: list[str], said: str
) -> None:
    identity.ensure(tenant())
    command = [sys.executable, "-m", "resources.workload_server", "--tenant-key", "acme-corp"]
    command += ["--tenant-id", "t-acme", "--domain", DOMAIN, "--state-file", "/nonexistent"]
    command += ["--identity-db", str(identity.path_for("acme-corp")), *extra]
    with socket.socket() as sock:  # descriptor 0: a socket, so only the drop can fail
        done = subprocess.run(
            command, stdin=sock, capture_output=True, text=True, timeout=30, check=False
        )
    assert (done.returncode, done.stdout) == (1, "")
    assert said in done.stderr and "Traceback" not in done.stderr


@contextmanager
def refused_line(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore
) -> Iterator[tuple[socket.socket, str]]:
    """A connection to a ready workload that has sent a request line past its 8 KB limit (the
    connection and the workload's socket path)."""
    identity.ensure(tenant())
    sock = deployer.ensure(tenant()).details["socket"]
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(sock)
        conn.sendall(b"GET /" + b"a" * 9000)
        yield conn, sock


def test_a_refused_request_still_being_written_gets_its_400_not_a_broken_socket(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore
) -> None:
    """The edge writes a long request line in pieces; the workload refuses it after its first
    8 KB. It must let the rest be written and answer 400: a socket closed under the writer is
    what the edge reports as "workload is down" (503), blaming the tenant for a client's
    request (seen in the edge's fuzz test under load)."""
    with refused_line(deployer, identity) as (conn, sock):
        time.sleep(0.3)  # the workload has read its 8 KB, refused, and answered by now
        conn.sendall(b"a" * 600_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
    assert get(sock, "/healthz")[0] == 200, "and it still serves"


def test_a_refused_request_trickled_in_is_drained_for_one_second_in_all(
    deployer: LocalProcessDeployer, identity: LocalSQLiteIdentityStore
) -> None:
    """The drain after a refusal is bounded in all (`DRAIN_S`), not per read: a writer sending a
    byte every 0.2 s would otherwise hold the workload's thread for a megabyte of them."""
    with refused_line(deployer, identity) as (conn, _sock):
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 4:
            time.sleep(0.2)
            try:
                conn.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        elapsed = time.monotonic() - started
    assert closed and elapsed < 2.5, f"still open after {elapsed:.1f} s"
