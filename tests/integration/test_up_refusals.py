"""What `tenantctl up` refuses before it starts anything: a data directory that does not exist
(unless --init), and a platform whose data directory or Dagster instance another `up` holds; and
the stack file other commands trust only while the lock is held."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from resources.workload_state import max_data_dir_chars
from tenant_pipelines.localstack import leftovers, platform_lock
from tenant_pipelines.localstack.stack_file import read_stack, stack_file
from tenant_pipelines.settings import Settings
from tenant_pipelines.support import procs
from tests.stack_helpers import REPO, TENANTCTL, free_port, local_stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def up(
    data_dir: Path, dagster_home: Path, *extra: str, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))}
    env.update(TENANT_DATA_DIR=str(data_dir), DAGSTER_HOME=str(dagster_home), **settings)
    ports = ["--edge-port", str(free_port())]
    return subprocess.run(
        [TENANTCTL, "up", *ports, "--api-port", str(free_port()), *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def lock_owner(data_dir: Path) -> int | None:
    """The pid the data directory's lock file names: `up` writes it once it holds the lock (read,
    not locked, so that asking cannot make an `up` that is starting refuse itself)."""
    try:
        return int(json.loads((data_dir / platform_lock.LOCK_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def test_a_missing_data_dir_is_refused_and_not_created(tmp_path: Path) -> None:
    mistyped = tmp_path / "tenant-dta"
    result = up(mistyped, tmp_path / "dagster")
    assert result.returncode == 1
    assert result.stderr == (
        f"tenantctl: the data directory {mistyped} does not exist (TENANT_DATA_DIR); check it,"
        " or run `tenantctl up --init` to create a new platform there\n"
    )
    assert not mistyped.exists() and not (tmp_path / "dagster").exists()


@pytest.mark.parametrize(
    ("said", "refusal"),
    [
        ("v2.6.2 h1:abc", "is 'v2.6.2'; this platform needs v2.11.x"),
        (None, "cannot run Caddy at"),
    ],
)
def test_a_caddy_of_another_version_or_none_is_refused(
    tmp_path: Path, said: str | None, refusal: str
) -> None:
    """TENANT_CADDY names a binary `up` checks before anything starts: Debian's 2.6, say, or
    a path with nothing there."""
    caddy = tmp_path / "caddy"
    if said is not None:
        caddy.write_text(f"#!/bin/sh\necho '{said}'\n")
        caddy.chmod(0o755)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = up(data_dir, tmp_path / "dagster", TENANT_CADDY=str(caddy))
    assert result.returncode == 1
    assert result.stderr.startswith(f"tenantctl: Caddy at {caddy} is ") or (
        result.stderr.startswith(f"tenantctl: cannot run Caddy at {caddy}")
    )
    assert refusal in result.stderr
    assert not (data_dir / "stack.json").exists()


def test_a_data_dir_too_long_for_the_workloads_sockets_is_refused(tmp_path: Path) -> None:
    """A Unix socket's path has at most 107 bytes: the platform says so before it starts rather
    than fail every tenant's deploy."""
    deep = tmp_path / ("d" * (max_data_dir_chars() + 1 - len(str(tmp_path)) - 1))
    assert len(str(deep)) == max_data_dir_chars() + 1
    result = up(deep, tmp_path / "dagster", "--init")
    assert result.returncode == 1
    assert result.stderr == (
        f"tenantctl: the data directory {deep} is too long a path for the Unix sockets under it:"
        f" at most {max_data_dir_chars()} bytes (TENANT_DATA_DIR)\n"
    )
    assert not deep.exists()


@pytest.mark.parametrize("shared", ["data directory", "Dagster instance"])
def test_a_second_up_is_refused_naming_the_running_one(tmp_path: Path, shared: str) -> None:
    """The lock is held by this test process, as a running `up` holds it (an fcntl lock is
    per open file, so another process sees it taken); the real thing is in the e2e matrix."""
    data_dir, home = tmp_path / "data", tmp_path / "dagster"
    data_dir.mkdir()
    held = platform_lock.hold(data_dir, home, {"edge": 8081, "api": 8001})
    try:
        other = data_dir if shared == "data directory" else tmp_path / "other-data"
        other.mkdir(exist_ok=True)
        result = up(other, home)
    finally:
        for fd in held:
            os.close(fd)
    where = data_dir if shared == "data directory" else home
    assert result.returncode == 1
    assert result.stderr == (
        f"tenantctl: tenantctl up is already running for the {shared} {where}"
        f" (pid {os.getpid()}; ports edge 8081, api 8001)\n"
    )


def test_a_stack_file_counts_only_while_its_up_holds_the_lock(tmp_path: Path) -> None:
    """A SIGKILLed `up` leaves stack.json naming a PID that may live on in another process."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings.from_env({"TENANT_DATA_DIR": str(data_dir)})
    stack = {"pid": os.getpid(), "edge_port": 8081, "api_port": 8001}
    stack_file(settings).write_text(json.dumps(stack))
    assert read_stack(settings) is None
    held = platform_lock.hold(data_dir, tmp_path / "dagster", {})
    try:
        assert read_stack(settings) == stack
    finally:
        for fd in held:
            os.close(fd)
    assert read_stack(settings) is None


def test_two_ups_started_a_second_apart_one_runs_one_is_refused(tmp_path: Path) -> None:
    """The drill that found two daemons: the lock is taken before anything slow, so the second
    `up` is refused while the first is still starting, and the first comes up alone."""
    with local_stack(tmp_path) as first:
        first.process = subprocess.Popen(
            [
                *(TENANTCTL, "up", "--edge-port", str(first.edge_port)),
                *("--api-port", str(first.api_port)),
            ],
            env=first.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_until(
            lambda: lock_owner(first.data_dir) == first.process.pid,  # type: ignore[union-attr]
            30,
            "the first up never took the lock",
        )
        second = up(first.data_dir, Path(first.env["DAGSTER_HOME"]))
        assert second.returncode == 1
        assert f"already running for the data directory {first.data_dir.resolve()}" in (
            second.stderr
        )
        assert f"(pid {first.process.pid}; ports edge {first.edge_port}" in second.stderr
        assert first.process.stdout is not None
        said = [first.process.stdout.readline()]  # up gives up after READY_TIMEOUT_S
        while said[-1] and "is up" not in said[-1]:
            said.append(first.process.stdout.readline())
        assert "is up" in said[-1], "".join(said)
        daemons = [
            p
            for p in leftovers.marked(str(first.data_dir.resolve()))
            if "dagster-daemon run" in (procs.command_line(p) or "")
        ]
        assert len(daemons) == 1
        assert first.stop() == 0
        assert leftovers.marked(str(first.data_dir.resolve())) == []


@pytest.mark.postgres
@pytest.mark.parametrize("shared", ["TENANT_DB_URL", "DAGSTER_PG_URL"])
def test_a_second_control_plane_on_the_same_postgresql_database_is_refused_naming_the_first(
    tmp_path: Path, pg_database: str, shared: str
) -> None:
    """Two hosts share no directory, so only the database can tell them apart: the first
    control plane (here this test process, holding the lock as a running `up` does) is named
    by host, PID and API port, and the second starts nothing."""
    held = platform_lock.hold_databases([pg_database], {"edge": 8081, "api": 8001})
    try:
        second = tmp_path / "second"
        second.mkdir()
        result = up(second, tmp_path / "second-dagster", **{shared: pg_database})
    finally:
        for session in held:
            session.close()
    database = pg_database.rsplit("@", 1)[1]
    first = f"tenantctl up on {socket.gethostname()} pid {os.getpid()} api 8001"
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"tenantctl: another control plane already runs on the PostgreSQL database {database}"
        f" ({first}, from 127.0.0.1, since "
    ), result.stderr
    assert not stack_file(Settings.from_env({"TENANT_DATA_DIR": str(second)})).exists()
    assert not (second / "logs").exists()

    # The lock goes with the session that held it: once it is closed, a control plane may start.
    retaken = platform_lock.hold_databases([pg_database], {"api": 8002})
    for session in retaken:
        session.close()


def test_a_postgresql_database_that_does_not_answer_is_named_and_nothing_starts(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://postgres:secret-pw@127.0.0.1:{closed}/tenant_registry"
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    result = up(data_dir, tmp_path / "dagster", TENANT_DB_URL=url)

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"tenantctl: the registry at 127.0.0.1:{closed}/tenant_registry is unavailable: "
    ), result.stderr
    assert "secret-pw" not in result.stderr + result.stdout
    assert not (data_dir / "logs").exists()
