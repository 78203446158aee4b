"""Local edge routes in a real shared SQLite table: closed until opened, safe under concurrency."""

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from resources.traffic import LocalEdgeRoutes, Route, lookup_route, routes_db_path
from tenant_pipelines.domain.tenant import TenantSpec

pytestmark = pytest.mark.integration

DOMAIN = "localhost"
# Another process holding the write lock for a while, as a run worker mid-transaction would.
LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(0.6)
conn.execute("COMMIT")
"""


def tenant(slug: str = "acme", org: str = "corp") -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org=org,
        plan="free",
        admin_email=f"admin@{org}.example",
    )


def route(data_dir: Path, host: str) -> Route:
    found = lookup_route(data_dir, host)
    assert found is not None, f"no route for {host}"
    return found


@pytest.fixture
def routes(tmp_path: Path) -> LocalEdgeRoutes:
    return LocalEdgeRoutes(data_dir=str(tmp_path), domain=DOMAIN)


def test_ensure_adds_the_route_closed(routes: LocalEdgeRoutes, tmp_path: Path) -> None:
    assert lookup_route(tmp_path, "acme-corp.localhost") is None
    handle = routes.ensure(tenant())

    assert (handle.kind, handle.tenant_key, handle.name) == (
        "route",
        "acme-corp",
        "acme-corp.localhost",
    )
    assert handle.details == {"state": "closed"}
    assert routes.is_open("acme-corp") is False
    found = route(tmp_path, "acme-corp.localhost")
    assert found.tenant_key == "acme-corp" and not found.is_open
    with sqlite3.connect(routes_db_path(tmp_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_second_ensure_returns_the_same_handle(routes: LocalEdgeRoutes, tmp_path: Path) -> None:
    first = routes.ensure(tenant())
    updated_at = route(tmp_path, "acme-corp.localhost").updated_at
    assert routes.ensure(tenant()) == first
    assert route(tmp_path, "acme-corp.localhost").updated_at == updated_at
    assert routes.list_existing() == {"acme-corp"}


def test_open_opens_and_ensure_never_closes_an_open_route(
    routes: LocalEdgeRoutes, tmp_path: Path
) -> None:
    routes.ensure(tenant())
    opened = routes.open(tenant())
    assert opened.details == {"state": "open"}
    assert routes.is_open("acme-corp") is True

    assert routes.ensure(tenant()).details == {"state": "open"}
    assert routes.open(tenant()) == opened
    assert route(tmp_path, "ACME-CORP.localhost").is_open


def test_open_creates_a_missing_route(routes: LocalEdgeRoutes) -> None:
    assert routes.open(tenant()).details == {"state": "open"}
    assert routes.list_existing() == {"acme-corp"}


def test_listing_and_release_are_idempotent(routes: LocalEdgeRoutes, tmp_path: Path) -> None:
    assert routes.list_existing() == set()
    assert routes.release("acme-corp") is False  # nothing yet, and no table created for it
    assert not routes_db_path(tmp_path).exists()

    routes.ensure(tenant("acme", "corp"))
    routes.open(tenant("beta", "labs"))
    assert routes.list_existing() == {"acme-corp", "beta-labs"}
    assert routes.release("beta-labs") is True
    assert routes.release("beta-labs") is False
    assert routes.list_existing() == {"acme-corp"}
    assert lookup_route(tmp_path, "beta-labs.localhost") is None
    assert routes.is_open("beta-labs") is False


def test_concurrent_writers_and_readers_all_succeed(
    routes: LocalEdgeRoutes, tmp_path: Path
) -> None:
    specs = [tenant(f"t{i:02d}x", "corp") for i in range(12)]
    errors: list[BaseException] = []

    def write(spec: TenantSpec) -> None:
        try:
            routes.ensure(spec)
            routes.open(spec)
            routes.ensure(spec)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    def read() -> None:
        try:
            for spec in specs * 3:
                lookup_route(tmp_path, spec.host(DOMAIN))
        except BaseException as error:
            errors.append(error)

    routes.ensure(specs[0])  # the table exists before readers start
    threads = [threading.Thread(target=write, args=(s,)) for s in specs]
    threads += [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert routes.list_existing() == {s.key for s in specs}
    assert all(routes.is_open(s.key) for s in specs)


def test_a_writer_in_another_process_delays_writes_but_never_blocks_reads(
    routes: LocalEdgeRoutes, tmp_path: Path
) -> None:
    routes.ensure(tenant())
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(routes_db_path(tmp_path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        assert lookup_route(tmp_path, "acme-corp.localhost") is not None
        assert time.monotonic() - started < 0.3, "a WAL reader must not wait for the writer"
        routes.open(tenant())  # waits on the busy timeout instead of failing "locked"
        assert time.monotonic() - started >= 0.3
        assert routes.is_open("acme-corp")
    finally:
        holder.kill()
        holder.wait()
