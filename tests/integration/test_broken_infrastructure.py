"""Broken infrastructure under `tenantctl` and the API: a corrupt or unreadable registry file, an
unreachable PostgreSQL. Every command says so in one line (and `{"error": ...}` with --json),
exits 1, never a traceback; `diagnose` and `inventory` report what they could still read."""

import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tenant_pipelines.domain.errors import RegistryUnavailable
from tenant_pipelines.domain.tokens import TokenGrant
from tenant_pipelines.orchestration.feed import feed_instance
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.db_url import normalize_url
from tests.api_helpers import api_server, platform_env
from tests.disk_helpers import fill, small_disk
from tests.pg_helpers import terminate_backends
from tests.platform_fixtures import LocalPlatform, embedded_default, platform_on
from tests.stack_helpers import REPO, TENANTCTL, free_port

pytestmark = pytest.mark.integration

REQUEST = [
    "request",
    "--slug=acme",
    "--org=widgets",
    "--plan=team",
    "--admin-email=admin@acme.example.com",
    "--caller=alice",
    "--role=org-admin",
]
# Every command that reads or writes the registry (`audit` reads only Dagster's instance).
COMMANDS = [
    REQUEST,
    ["status", "acme"],
    ["list"],
    ["retry", "acme"],
    ["decommission", "acme"],
    ["diagnose", "acme"],
    ["inventory"],
    ["emails", "acme"],
    ["token", "create", "--subject=bob", "--role=platform-admin"],
    ["token", "list"],
    ["token", "revoke", "tok_x"],
    ["up", "--edge-port", "0", "--api-port", "0"],
]


@dataclass
class Broken:
    env: dict[str, str]
    store: str  # what the message must name
    cause: str  # and the cause, as the driver says it


def tenantctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TENANTCTL, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _corrupt(tmp_path: Path) -> Broken:
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.db").write_bytes(b"not a database at all " * 200)
    env = platform_env(data, data / "dagster")
    return Broken(env, str(data / "registry.db"), "file is not a database")


def _unreadable(tmp_path: Path) -> Broken:
    # A directory where the file should be: unreadable even for root, whom chmod does not stop.
    data = tmp_path / "data"
    (data / "registry.db").mkdir(parents=True)
    env = platform_env(data, data / "dagster")
    return Broken(env, str(data / "registry.db"), "unable to open database file")


def _unreachable(tmp_path: Path) -> Broken:
    port = free_port()  # nothing listens there
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/tp_gone"
    env = platform_env(tmp_path / "data", tmp_path / "data" / "dagster", TENANT_DB_URL=url)
    return Broken(env, f"127.0.0.1:{port}/tp_gone", "Connection refused")


def _make_instance(env: dict[str, str]) -> None:
    """Create the (healthy) Dagster instance once: several first-time openers of one SQLite
    instance at once race in Dagster's own Alembic stamping ("more than one head")."""
    settings = Settings.from_env(env)
    open_instance(settings.dagster_home, settings).dispose()


BREAKAGES = {"corrupt": _corrupt, "unreadable": _unreadable, "unreachable": _unreachable}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_every_command_says_it_in_one_line(tmp_path: Path, breakage: str) -> None:
    broken = BREAKAGES[breakage](tmp_path)
    _make_instance(broken.env)
    plain = [(args, False) for args in COMMANDS if args[0] in ("list", "diagnose", "inventory")]
    runs = [(args, True) for args in COMMANDS] + plain
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(
                lambda run: tenantctl(broken.env, *run[0], *(["--json"] if run[1] else [])), runs
            )
        )
    for (args, json_flag), result in zip(runs, results, strict=True):
        where = f"tenantctl {' '.join(args)}{' --json' if json_flag else ''}"
        assert result.returncode == 1, (where, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (where, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, where
        assert "s3cret" not in result.stderr + result.stdout, where
        line = lines[0]
        assert line.startswith("tenantctl: "), (where, line)
        assert "registry" in line and broken.store in line and broken.cause in line, (where, line)
        if json_flag and args[0] not in ("diagnose", "inventory"):
            assert json.loads(result.stdout) == {"error": line.removeprefix("tenantctl: ")}


def test_diagnose_and_inventory_report_what_they_could_read(tmp_path: Path) -> None:
    broken = _corrupt(tmp_path)
    diagnosis = tenantctl(broken.env, "diagnose", "acme", "--json")
    assert diagnosis.returncode == 1
    body = json.loads(diagnosis.stdout)
    assert body["state"] == "unknown" and body["runs"] == []  # Dagster was read: no runs
    assert "file is not a database" in body["unreadable"]["registry"]

    inventory = tenantctl(broken.env, "inventory", "--json")
    assert inventory.returncode == 1
    body = json.loads(inventory.stdout)
    assert set(body["existing"]) == {"storage", "identity", "route", "workload"}
    assert body["findings"] == [] and body["clean"] is False
    assert "file is not a database" in body["unreadable"]["registry"]
    text_out = tenantctl(broken.env, "inventory").stdout
    assert "UNREADABLE: registry" in text_out and "not judged" in text_out


def test_the_registry_layer_raises_one_domain_error(tmp_path: Path, pg_database: str) -> None:
    corrupt = tmp_path / "registry.db"
    corrupt.write_bytes(b"x" * 4096)
    with pytest.raises(RegistryUnavailable, match=f"{corrupt}.*file is not a database"):
        TenantRegistry.open(f"sqlite:///{corrupt}")

    # A database that goes away under an open registry: its next statement says so.
    registry = TenantRegistry.open(pg_database)
    try:
        assert registry.tenants.all() == []
        _drop(pg_database)
        name = pg_database.rsplit("/", 1)[1]
        with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:5432/{name}.*does not exist"):
            registry.tenants.all()
    finally:
        registry.close()


def _drop(url: str) -> None:
    admin_url, name = url.rsplit("/", 1)
    admin = create_engine(normalize_url(admin_url + "/postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE "{name}"'))
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_the_api_answers_503_with_the_reason(tmp_path: Path, pg_admin_url: str) -> None:
    name = f"tp_api503_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(pg_admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        registry = TenantRegistry.open(url)
        token, _ = registry.tokens.create(
            TokenGrant.parse({"subject": "ops", "role": "platform-admin"})
        )
        registry.close()
        data = tmp_path / "data"
        env = platform_env(data, data / "dagster", TENANT_DB_URL=url)
        with api_server(env, tmp_path / "api.log") as server:
            assert server.call("GET", "/v1/tenants", token).status_code == 200
            _drop(url)
            answer = server.call("GET", "/v1/tenants", token)
            assert answer.status_code == 503, answer.text
            reason = answer.json()["error"]
            assert f"the registry at 127.0.0.1:5432/{name} is unavailable" in reason
            assert "does not exist" in reason
            assert "Traceback" not in server.log.read_text()
    finally:
        _drop_if_exists(pg_admin_url, name)


def _drop_if_exists(admin_url: str, name: str) -> None:
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@pytest.fixture
def platform_on_small_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalPlatform]:
    """The embedded default with its data directory on an 8 MB tmpfs (Dagster's home elsewhere,
    so that the runs' story is still written while the data directory is full)."""
    embedded_default(tmp_path, monkeypatch)
    with small_disk(tmp_path / "data", 8), platform_on(Settings.from_env()) as local:
        try:
            yield local
        finally:
            local.registry.close()  # its files must close before the tmpfs is unmounted


def test_a_full_disk_at_validate_is_explained_and_recovered(
    platform_on_small_disk: LocalPlatform, tmp_path: Path
) -> None:
    local = platform_on_small_disk
    env = platform_env(local.settings.data_dir, local.settings.dagster_home)
    record = local.submit()
    assert local.registry.requests.mark_launched(record.request_id)
    token, _ = local.registry.tokens.create(
        TokenGrant.parse({"subject": "ops", "role": "platform-admin"})
    )
    # Started before the disk fills: a first start writes the operator key there.
    with api_server(env, tmp_path / "api.log") as server:
        filler = fill(local.settings.data_dir)
        _, success, _ = local.provision(record.request_id)  # Validate cannot write: fails
        assert not success
        answer = server.call("GET", "/v1/tenants/acme", token).json()
        assert answer["failed_step"] == "validate", answer
        assert "database or disk is full" in answer["failure_reason"]
    _explained_by_the_cli(env)

    filler.unlink()  # the operator frees space: the next request goes through
    again = local.submit(slug="gamma")
    assert local.registry.requests.mark_launched(again.request_id)
    _, success, _ = local.provision(again.request_id)
    assert success
    assert local.registry.tenants.get("gamma").state == "active"


def _explained_by_the_cli(env: dict[str, str]) -> None:
    status = json.loads(tenantctl(env, "status", "acme", "--json").stdout)
    assert (status["state"], status["failed_step"]) == ("request-launched", "validate")
    assert "database or disk is full" in status["failure_reason"]
    diagnosis = json.loads(tenantctl(env, "diagnose", "acme", "--json").stdout)
    assert diagnosis["next_action"] == "retry"
    assert "before the tenant existed" in diagnosis["why"]
    assert "database or disk is full" in diagnosis["why"]
    for args in (["inventory"], ["list"]):
        result = tenantctl(env, *args)
        assert "Traceback" not in result.stderr, args
        assert len(result.stderr.splitlines()) <= 1, (args, result.stderr)
    refused = tenantctl(env, *REQUEST[:1], "--slug=beta", *REQUEST[2:])
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "database or disk is full" in refused.stderr or "No space left" in refused.stderr


@pytest.mark.postgres
def test_held_dagster_connections_survive_the_server_dropping_them(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a PostgreSQL restart does to the webserver's pooled connections, without restarting
    the shared server: the backends are terminated under a webserver-style instance."""
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)
    settings = Settings.from_env(
        {"TENANT_DATA_DIR": str(tmp_path / "data"), "DAGSTER_PG_URL": pg_database}
    )
    instance = feed_instance(open_instance(settings.dagster_home, settings))
    try:
        assert instance.get_runs(limit=1) == []  # a connection is now held in each pool
        instance.get_run_records(limit=1)
        terminate_backends(pg_database)
        assert instance.get_runs(limit=1) == []  # pinged, replaced: no error
        assert instance.get_run_records(limit=1) == []
    finally:
        instance.dispose()


def test_an_unreachable_dagster_database_leaves_the_registry_side_readable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/tp_gone"
    env = platform_env(data, data / "dagster")
    assert tenantctl(env, *REQUEST).returncode == 0  # recorded; nothing launches it
    env["DAGSTER_PG_URL"] = url

    diagnosis = tenantctl(env, "diagnose", "acme", "--json")
    assert diagnosis.returncode == 1
    assert len(diagnosis.stderr.splitlines()) == 1 and "DAGSTER_PG_URL" in diagnosis.stderr
    body = json.loads(diagnosis.stdout)
    assert body["state"] == "request-pending" and "dagster" in body["unreadable"]
    audit = tenantctl(env, "audit", "--json")
    assert audit.returncode == 1 and len(audit.stderr.splitlines()) == 1
    assert json.loads(audit.stdout) == {"error": audit.stderr.strip().removeprefix("tenantctl: ")}
    for result in (diagnosis, audit):
        assert "Traceback" not in result.stderr and "s3cret" not in result.stderr + result.stdout
