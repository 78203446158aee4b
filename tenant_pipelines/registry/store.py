"""The tenant registry: the control-plane database, one store per kind of record.

SQLAlchemy Core over SQLite (default) or PostgreSQL. The schema belongs to Alembic migrations
(`registry/migrations`); `TenantRegistry.open(url)` upgrades to head before use.
Every state change is a compare-and-set in SQL; every uniqueness rule is a database constraint.

The few transactions that touch two kinds of record belong to the kind they are about:
`requests.submit` reads tenants to keep a slug or key in use from being requested again,
`tenants.reserve` links the request to the tenant it made, `ledger.set` locks the tenant's row
to number its allocations, `tokens.revoke` ends the token's console sessions.
"""

import threading

from sqlalchemy import Engine

from tenant_pipelines.registry.batches import BatchStore
from tenant_pipelines.registry.compensations import CompensationStore
from tenant_pipelines.registry.engine import Database, make_engine
from tenant_pipelines.registry.ledger import LedgerStore
from tenant_pipelines.registry.migrate import ensure_upgraded
from tenant_pipelines.registry.operations import OperationStore
from tenant_pipelines.registry.platform_stats import PlatformStatsStore
from tenant_pipelines.registry.requests import RequestStore
from tenant_pipelines.registry.routes import RouteStore
from tenant_pipelines.registry.sessions import SessionStore
from tenant_pipelines.registry.tenants import TenantStore
from tenant_pipelines.registry.tokens import TokenStore

_SHARED: dict[str, "TenantRegistry"] = {}
_SHARED_LOCK = threading.Lock()


class TenantRegistry:
    """All reads and writes of the control-plane database, by kind of record, over one engine.
    Thread- and process-safe."""

    def __init__(self, engine: Engine) -> None:
        self.db = Database(engine)
        self.requests = RequestStore(self.db)
        self.tenants = TenantStore(self.db)
        self.ledger = LedgerStore(self.db)
        self.compensations = CompensationStore(self.db)
        self.operations = OperationStore(self.db)
        self.tokens = TokenStore(self.db)
        self.sessions = SessionStore(self.db)
        self.platform_stats = PlatformStatsStore(self.db)
        self.batches = BatchStore(self.db)
        self.routes = RouteStore(self.db)

    @classmethod
    def shared(cls, url: str) -> "TenantRegistry":
        """One migrated registry (and connection pool) per database URL per process."""
        with _SHARED_LOCK:
            if url not in _SHARED:
                _SHARED[url] = cls.open(url)
            return _SHARED[url]

    @classmethod
    def open(cls, url: str) -> "TenantRegistry":
        """Connect (postgresql:// is mapped to psycopg2) and upgrade the schema to head."""
        engine = make_engine(url)
        try:
            ensure_upgraded(url, engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self.db.close()
