"""TENANT_BACKENDS=postgres: how the backends are chosen, and a local workload whose identity store
is a PostgreSQL schema (it logs in as the tenant's identity role, the DSN passed outside argv)."""

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import EnvVar
from psycopg2.extensions import parse_dsn
from sqlalchemy.engine import make_url

from resources.deployer import LocalProcessDeployer
from resources.faults import FaultyIdentityStore
from resources.identity import LocalSQLiteIdentityStore, PostgresIdentityStore, pg_identity_schema
from resources.storage import LocalSQLiteStorage, PostgresSchemaStorage
from resources.workload_env import PG_APPLICATION_NAME
from resources.workload_server import IDLE_CLOSE_S
from tenant_pipelines.composition import build_platform
from tenant_pipelines.domain.errors import ConfigError, ReadinessTimeout
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.settings import Settings
from tenant_pipelines.support import procs
from tenant_pipelines.support.unix_http import UnixHTTPConnection
from tests.pg_helpers import admin_sql, backend_pids, drop_our_roles, terminate_backends

pytestmark = pytest.mark.integration

SECRET = "s3cret-not-checked-by-trust-auth"


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"TENANT_DATA_DIR": str(tmp_path / "data"), **env})


def test_local_backends_are_the_default(tmp_path: Path) -> None:
    platform = build_platform(settings(tmp_path))
    assert isinstance(platform.storage, LocalSQLiteStorage)
    assert isinstance(platform.identity, LocalSQLiteIdentityStore)
    assert platform.deployer.identity_pg_url is None  # type: ignore[attr-defined]


def test_postgres_backends_take_their_url_only_as_an_env_var(tmp_path: Path) -> None:
    url = "postgresql://u@h/t"
    chosen = settings(tmp_path, TENANT_BACKENDS="postgres", TENANT_BACKENDS_PG_URL=url)
    # The code location's resource names the variable; its value never enters config.
    resource = TenantPlatform.for_settings(chosen)
    assert resource.backends_pg_url == EnvVar("TENANT_BACKENDS_PG_URL")
    platform = build_platform(chosen)
    assert isinstance(platform.storage, PostgresSchemaStorage)
    assert isinstance(platform.identity, PostgresIdentityStore)
    for held in (
        platform.storage.admin_url,
        platform.identity.admin_url,
        platform.deployer.identity_pg_url,  # type: ignore[attr-defined]
    ):
        assert held == url
    assert url not in repr(platform)
    # Fault injection wraps them like any other backend.
    wrapped = build_platform(Settings.from_env({**chosen.child_env({}), "TENANT_FAULT_PLAN": "x"}))
    assert isinstance(wrapped.identity, FaultyIdentityStore)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TENANT_BACKENDS": "mongo"},
            r"TENANT_BACKENDS='mongo' is unknown \(known: local, postgres\)",
        ),
        ({"TENANT_BACKENDS": "postgres"}, "TENANT_BACKENDS=postgres needs TENANT_BACKENDS_PG_URL"),
    ],
)
def test_a_selection_that_cannot_work_is_refused(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_platform(settings(tmp_path, **env))


@pytest.fixture
def backends_url(pg_database: str) -> Iterator[str]:
    """The test database, with a password in its URL that must never show up anywhere."""
    yield make_url(pg_database).set(password=SECRET).render_as_string(hide_password=False)
    drop_our_roles(pg_database)


@pytest.fixture
def deployer(
    tmp_path: Path, backends_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalProcessDeployer]:
    monkeypatch.setenv("TENANT_BACKENDS_PG_URL", backends_url)
    monkeypatch.setenv("TENANT_DB_URL", "postgresql://control-plane-only@127.0.0.1/registry")
    deployer = LocalProcessDeployer(
        data_dir=str(tmp_path / "data"),
        domain="localhost",
        identity_pg_url=backends_url,  # as the composition root reads it from the env
    )
    yield deployer
    deployer.stop_all()


def tenant(slug: str) -> TenantSpec:
    org = f"wl{uuid.uuid4().hex[:6]}"
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=str(uuid.uuid4()),
        slug=slug,
        org=org,
        plan="free",
        admin_email=f"admin@{slug}.example.com",
    )


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


@pytest.mark.postgres
def test_workload_checks_its_identity_schema_with_the_dsn_outside_argv(
    deployer: LocalProcessDeployer, backends_url: str
) -> None:
    spec = tenant("acme")
    PostgresIdentityStore(admin_url=backends_url).ensure(spec)
    handle = deployer.ensure(spec)
    pid = handle.details["pid"]

    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[argv.index("--identity-schema") + 1] == pg_identity_schema(spec.key)
    assert "--identity-db" not in argv
    assert not any(SECRET in arg for arg in argv), "argv is world-readable"
    environ = environ_of(pid)
    dsn = parse_dsn(environ["TENANT_WORKLOAD_IDENTITY_DSN"])
    assert dsn["user"] == pg_identity_schema(spec.key), "it logs in as its identity role"
    assert len(dsn["password"]) == 64, "with a password the platform derived for the role"
    assert not any(SECRET in value for value in environ.values()), "not as the server's admin"
    uid = handle.details["uid"]
    credentials = procs.credentials(pid)
    assert credentials is not None and credentials.confined_to(uid, uid), "root given up"
    assert os.readlink(f"/proc/{pid}/root") == "/", "no file to reach: not shut in"
    for path, status in (("/healthz", 200), ("/admin/sign-in", 200), ("/missing", 404)):
        conn = UnixHTTPConnection(handle.details["socket"], 5)
        try:
            conn.request("GET", path)
            assert conn.getresponse().status == status
        finally:
            conn.close()
    for control_plane_only in ("TENANT_BACKENDS_PG_URL", "TENANT_DB_URL"):
        assert control_plane_only not in environ
    assert deployer.list_existing() == {spec.key}


@pytest.mark.postgres
def test_a_workload_without_its_identity_schema_never_becomes_ready(
    deployer: LocalProcessDeployer, tmp_path: Path
) -> None:
    spec = tenant("nostore")
    with pytest.raises(ReadinessTimeout, match=r"exited with status 1"):
        deployer.ensure(spec)
    log = (tmp_path / "data" / "workloads" / f"{spec.key}.log").read_text()
    assert f"cannot open identity store schema {pg_identity_schema(spec.key)}" in log
    assert SECRET not in log
    assert deployer.list_existing() == set()


@pytest.mark.postgres
def test_a_workload_whose_store_lost_its_admin_turns_unhealthy(
    deployer: LocalProcessDeployer, backends_url: str
) -> None:
    spec = tenant("noadmin")
    PostgresIdentityStore(admin_url=backends_url).ensure(spec)
    where = deployer.ensure(spec).details["socket"]
    admin_sql(backends_url, f'DELETE FROM "{pg_identity_schema(spec.key)}".users')
    conn = UnixHTTPConnection(where, 5)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 503
        assert b"no admin" in response.read()
    finally:
        conn.close()


def healthz(socket_path: str) -> int:
    conn = UnixHTTPConnection(socket_path, 5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.postgres
def test_a_workloads_checks_share_one_session_that_closes_once_idle(
    deployer: LocalProcessDeployer, backends_url: str
) -> None:
    spec = tenant("kept")
    PostgresIdentityStore(admin_url=backends_url).ensure(spec)
    where = deployer.ensure(spec).details["socket"]  # its start and the readiness check
    sessions = backend_pids(backends_url, PG_APPLICATION_NAME)
    assert len(sessions) == 1
    for _ in range(3):
        assert healthz(where) == 200
    assert backend_pids(backends_url, PG_APPLICATION_NAME) == sessions, "no new session a check"

    terminate_backends(backends_url)  # as a server restart would, while the session is idle
    assert healthz(where) == 200, "a session the server ended is replaced at the next check"
    assert len(backend_pids(backends_url, PG_APPLICATION_NAME)) == 1

    deadline = time.monotonic() + IDLE_CLOSE_S + 5
    while backend_pids(backends_url, PG_APPLICATION_NAME) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend_pids(backends_url, PG_APPLICATION_NAME) == set(), "an idle tenant holds none"
    assert healthz(where) == 200
