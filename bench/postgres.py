"""The production configuration (`deploy/postgres.env`) for a benchmark round, on databases of
its own.

`--backend postgres` in a benchmark runs each round with Dagster's storage, the registry and the
tenants' stores on the PostgreSQL server at 127.0.0.1:5432, as `deploy/postgres.env` sets them,
but on three fresh databases and a deployment prefix of the round's own, all dropped afterwards
(the tenants' roles too: roles are cluster-wide). Everything else stays at the product's defaults.
"""

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from sqlalchemy import create_engine, text

from tenant_pipelines.support.db_url import normalize_url
from tests.conftest import PG_ADMIN_URL, empty_broker, fresh_pg_database
from tests.worker_hosts import on_loopback

BACKENDS = ("sqlite", "postgres", "hosts")
# `hosts`: the production configuration with two worker hosts (`tenantctl worker`, started by
# `tests.worker_hosts.worker_hosts` beside the control host's `up`) and Redis as the broker, on a
# database of its own, emptied before and after the round.
WORKER_HOSTS = ("bench-a", "bench-b")
BROKER = "redis://127.0.0.1:6379/12"
POSTGRES_URL_KEYS = ("DAGSTER_PG_URL", "TENANT_DB_URL", "TENANT_BACKENDS_PG_URL")


@contextmanager
def backend_env(backend: str) -> Iterator[dict[str, str]]:
    """The environment a stack needs for `backend` ({} for the embedded default)."""
    if backend == "sqlite":
        yield {}
        return
    if backend == "hosts":
        with backend_env("postgres") as env, empty_broker(BROKER):
            yield {
                **env,
                "TENANT_WORKER_HOSTS": on_loopback(WORKER_HOSTS),
                "TENANT_CELERY_BROKER": BROKER,
            }
        return
    deployment = f"b{uuid.uuid4().hex[:8]}"  # at most 10 characters
    with ExitStack() as databases:
        dagster, registry, data = (
            databases.enter_context(fresh_pg_database(PG_ADMIN_URL, f"bench_{kind}"))
            for kind in ("dagster", "registry", "data")
        )
        try:
            yield {
                "DAGSTER_PG_URL": dagster,
                "TENANT_DB_URL": registry,
                "TENANT_BACKENDS": "postgres",
                "TENANT_BACKENDS_PG_URL": data,
                "TENANT_DEPLOYMENT": deployment,
            }
        finally:
            databases.close()  # the roles' objects go with the databases, then the roles
            drop_roles(f"t_{deployment}_")


def drop_roles(prefix: str) -> None:
    engine = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            names = conn.execute(
                text("SELECT rolname FROM pg_roles WHERE starts_with(rolname, :prefix)"),
                {"prefix": prefix},
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


class ConnectionSampler:
    """The platform's PostgreSQL connections (`pg_stat_activity` on the round's databases), read
    every 250 ms: the peak in all, and each process kind's peak (its `application_name`)."""

    INTERVAL_S = 0.25  # the query itself costs the server a few milliseconds

    def __init__(self, env: dict[str, str]) -> None:
        self.databases = [env[key].rsplit("/", 1)[1] for key in POSTGRES_URL_KEYS if key in env]
        self.peak_total = 0
        self.peak_by_name: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ConnectionSampler":
        if self.databases:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        engine = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
        query = text(
            "SELECT coalesce(nullif(application_name, ''), '(unnamed)'), count(*) "
            "FROM pg_stat_activity WHERE datname = ANY(:names) GROUP BY 1"
        )
        try:
            with engine.connect() as conn:
                while not self._stop.wait(self.INTERVAL_S):
                    counts = dict(conn.execute(query, {"names": self.databases}).tuples().all())
                    self.peak_total = max(self.peak_total, sum(counts.values()))
                    for name, count in counts.items():
                        self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), count)
        finally:
            engine.dispose()
