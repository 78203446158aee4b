"""Configuration from the environment, read when asked for, never at import time."""

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.tenant import served_at
from tenant_pipelines.support.db_url import is_sqlite, normalize_url
from tenant_pipelines.support.hosts import SINGLE_HOST, host_name, worker_ingresses

DEFAULT_DATA_DIR = ".tenant-data"
DEFAULT_DOMAIN = "localhost"
CELERY_BROKER_VAR = "TENANT_CELERY_BROKER"  # a secret: its URL may hold a password
DEFAULT_SENSOR_INTERVAL_S = 1
DEFAULT_SENDGRID_API_HOST = "https://api.sendgrid.com"
DEFAULT_MAX_CONCURRENT_RUNS = 8
DEFAULT_BACKENDS = "local"
DEFAULT_HTTPS_PORT = 8443  # the edge's; 443 in production (deploy/postgres.env)
EDGE_PLAIN_HTTP = ("redirect", "serve")  # what the edge's plain-HTTP port does for tenants
DEFAULT_EDGE_CLIENT_TIMEOUT_S = 60
# dagster-postgres hands DAGSTER_PG_URL to SQLAlchemy 2.0 as it is (the instance reads it through
# `{env: DAGSTER_PG_URL}`, so we cannot rewrite it): only these schemes reach psycopg2.
DAGSTER_PG_SCHEMES = ("postgresql://", "postgresql+psycopg2://")


# TENANT_DEPLOYMENT prefixes the PostgreSQL role and schema names of tenants (roles are
# cluster-wide): short enough that a name keeps the whole slug within PostgreSQL's 63 bytes.
DEPLOYMENT_MAX_CHARS = 10
_DEPLOYMENT = re.compile(rf"[a-z][a-z0-9_]{{0,{DEPLOYMENT_MAX_CHARS - 1}}}")
_DEPLOYMENT_HASH_CHARS = 6


def plan_concurrency_var(plan: str) -> str:
    return f"TENANT_{plan.upper()}_CONCURRENCY"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _dagster_pg_url(env: Mapping[str, str]) -> str | None:
    url = env.get("DAGSTER_PG_URL") or None
    if url and not url.startswith(DAGSTER_PG_SCHEMES):
        raise ConfigError(
            "DAGSTER_PG_URL must start with postgresql:// (dagster-postgres passes it to"
            f" SQLAlchemy unchanged), not {url.split(':', 1)[0]}://"
        )
    return url


# Redis: the broker and the store of each run's task state, which the control host's daemon reads
# to check a run's worker (docs/architecture.md "Several hosts").
CELERY_BROKER_SCHEMES = ("redis://", "rediss://")


def _worker_ingresses(
    env: Mapping[str, str], dagster_pg_url: str | None, db_url: str
) -> dict[str, str]:
    """TENANT_WORKER_HOSTS (checked); several hosts need what they all reach: the registry and
    the Dagster instance on PostgreSQL, and a broker for the runs (TENANT_CELERY_BROKER)."""
    try:
        hosts = worker_ingresses(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not hosts:
        return hosts
    if is_sqlite(db_url):
        raise ConfigError(
            "TENANT_WORKER_HOSTS needs TENANT_DB_URL on PostgreSQL: every host reads and writes"
            " the same registry (its tenants, ledgers and routes), which a SQLite file cannot be"
        )
    if not dagster_pg_url:
        raise ConfigError(
            "TENANT_WORKER_HOSTS needs DAGSTER_PG_URL: every host reads and writes the same"
            " Dagster instance, which SQLite files on one host cannot be"
        )
    if not env.get(CELERY_BROKER_VAR):
        raise ConfigError(
            f"TENANT_WORKER_HOSTS needs {CELERY_BROKER_VAR}: the broker that hands each run to"
            " its tenant's host (redis://host:6379/0)"
        )
    return hosts


def _celery_broker(env: Mapping[str, str]) -> str | None:
    url = env.get(CELERY_BROKER_VAR) or None
    if url and not url.startswith(CELERY_BROKER_SCHEMES):
        raise ConfigError(
            f"{CELERY_BROKER_VAR} must start with {', '.join(CELERY_BROKER_SCHEMES)},"
            f" not {url.split(':', 1)[0]}://"
        )
    return url


def _deployment(env: Mapping[str, str]) -> str:
    """TENANT_DEPLOYMENT as set (checked), or "" for the default (`Settings.deployment`)."""
    raw = env.get("TENANT_DEPLOYMENT")
    if not raw:
        return ""
    if not _DEPLOYMENT.fullmatch(raw):
        raise ConfigError(
            f"TENANT_DEPLOYMENT must be 1 to {DEPLOYMENT_MAX_CHARS} lowercase letters, digits or"
            f" '_', starting with a letter (it prefixes PostgreSQL role names), not {raw!r}"
        )
    return raw


def derived_deployment(db_url: str) -> str:
    """The default deployment name, from the registry database's: two registries give two names.

    A PostgreSQL database's name when it fits (`tenants`); otherwise, and for a SQLite file
    (whose name, `registry.db`, every checkout shares), its first letters and a hash of where it is.
    """
    parsed = normalize_url(db_url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        name, where = Path(database).stem, str(Path(database).expanduser().resolve())
    else:
        name, where = database, f"{parsed.host}:{parsed.port or 5432}/{database}"
    label = re.sub(r"[^a-z0-9_]", "", name.lower())
    if not label[:1].isalpha():
        label = "d" + label
    if parsed.get_backend_name() == "sqlite" or len(label) > DEPLOYMENT_MAX_CHARS:
        digest = hashlib.sha256(where.encode()).hexdigest()[:_DEPLOYMENT_HASH_CHARS]
        label = label[: DEPLOYMENT_MAX_CHARS - _DEPLOYMENT_HASH_CHARS] + digest
    return label


def _host_name(env: Mapping[str, str]) -> str:
    try:
        return host_name(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _plain_http(env: Mapping[str, str]) -> str:
    value = env.get("TENANT_EDGE_PLAIN_HTTP") or EDGE_PLAIN_HTTP[0]
    if value not in EDGE_PLAIN_HTTP:
        raise ConfigError(
            f"TENANT_EDGE_PLAIN_HTTP must be {' or '.join(EDGE_PLAIN_HTTP)}, not {value!r}"
        )
    return value


def _plan_concurrency(env: Mapping[str, str], max_runs: int) -> dict[str, int]:
    """Per-plan run limits: the catalog's, overridden by TENANT_<PLAN>_CONCURRENCY.

    A plan without a limit is never starved by the others only if their limits together leave
    it a slot under the global limit; a configuration that breaks that promise is refused.
    """
    limits: dict[str, int] = {}
    for name, plan in PLANS.items():
        limit = _int(env, plan_concurrency_var(name), plan.run_concurrency or 0, minimum=1)
        if limit:
            limits[name] = limit
    unlimited = [name for name in PLANS if name not in limits]
    if unlimited and sum(limits.values()) >= max_runs:
        spelled = " + ".join(f"{plan_concurrency_var(p)}={n}" for p, n in limits.items())
        raise ConfigError(
            f"{spelled} leave no run slot for {', '.join(unlimited)} under"
            f" TENANT_MAX_CONCURRENT_RUNS={max_runs}: lower them or raise the global limit"
        )
    return limits


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db_url: str
    domain: str
    dagster_home: Path
    sensor_interval_s: int
    sendgrid_configured: bool
    sendgrid_api_host: str
    fault_plan: Path | None  # TENANT_FAULT_PLAN: drills and tests only
    dagster_pg_url: str | None = None  # None: the instance stores on SQLite in DAGSTER_HOME
    backends: str = DEFAULT_BACKENDS  # tenant storage and identity: "local" or "postgres"
    backends_pg_url: str | None = None  # the PostgreSQL server of TENANT_BACKENDS=postgres
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    plan_concurrency: Mapping[str, int] = field(default_factory=dict)
    deployment_set: str = ""  # TENANT_DEPLOYMENT as set; "" derives it (`deployment`)
    https_port: int = DEFAULT_HTTPS_PORT  # the edge's HTTPS port: tenants' addresses name it
    edge_plain_http: str = EDGE_PLAIN_HTTP[0]  # redirect to HTTPS, or serve (TLS ends in front)
    acme_email: str = ""  # ACME's contact for certificates of a real domain (TENANT_ACME_EMAIL)
    edge_client_timeout_s: int = DEFAULT_EDGE_CLIENT_TIMEOUT_S  # a silent client is dropped
    caddy: str = ""  # TENANT_CADDY: the edge's Caddy binary; "" the venv's (localstack.gateway)
    host_name: str = SINGLE_HOST  # TENANT_HOST_NAME: this host among the platform's (support.hosts)
    # TENANT_WORKER_HOSTS: each worker host's ingress address, by name; {} runs all on this host
    worker_ingresses: Mapping[str, str] = field(default_factory=dict)
    celery_broker: str | None = field(default=None, repr=False)  # TENANT_CELERY_BROKER

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("TENANT_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
        max_runs = _int(env, "TENANT_MAX_CONCURRENT_RUNS", DEFAULT_MAX_CONCURRENT_RUNS, minimum=1)
        dagster_pg_url = _dagster_pg_url(env)
        db_url = env.get("TENANT_DB_URL") or f"sqlite:///{data_dir / 'registry.db'}"
        return cls(
            data_dir=data_dir,
            db_url=db_url,
            domain=env.get("TENANT_DOMAIN") or DEFAULT_DOMAIN,
            dagster_home=Path(env.get("DAGSTER_HOME") or data_dir / "dagster").resolve(),
            sensor_interval_s=_int(
                env, "TENANT_SENSOR_INTERVAL_S", DEFAULT_SENSOR_INTERVAL_S, minimum=1
            ),
            sendgrid_configured=bool(env.get("SENDGRID_API_KEY")),
            sendgrid_api_host=env.get("SENDGRID_API_HOST") or DEFAULT_SENDGRID_API_HOST,
            fault_plan=Path(env["TENANT_FAULT_PLAN"]).resolve()
            if env.get("TENANT_FAULT_PLAN")
            else None,
            dagster_pg_url=dagster_pg_url,
            backends=env.get("TENANT_BACKENDS") or DEFAULT_BACKENDS,
            backends_pg_url=env.get("TENANT_BACKENDS_PG_URL") or None,
            max_concurrent_runs=max_runs,
            plan_concurrency=_plan_concurrency(env, max_runs),
            deployment_set=_deployment(env),
            https_port=_int(env, "TENANT_HTTPS_PORT", DEFAULT_HTTPS_PORT, minimum=1),
            edge_plain_http=_plain_http(env),
            acme_email=env.get("TENANT_ACME_EMAIL") or "",
            edge_client_timeout_s=_int(
                env, "TENANT_EDGE_CLIENT_TIMEOUT_S", DEFAULT_EDGE_CLIENT_TIMEOUT_S, minimum=1
            ),
            caddy=env.get("TENANT_CADDY") or "",
            host_name=_host_name(env),
            worker_ingresses=_worker_ingresses(env, dagster_pg_url, db_url),
            celery_broker=_celery_broker(env),
        )

    @property
    def worker_hosts(self) -> tuple[str, ...]:
        """The worker hosts' names, in the order given; () on one host."""
        return tuple(self.worker_ingresses)

    @property
    def ingress_secret(self) -> str:
        """What the control host's edge shows a worker host's ingress (`resources.gateway`):
        derived from the broker's URL, a secret every host of the platform already holds, so
        that there is no second one to set and keep in step. "" without a broker."""
        if not self.celery_broker:
            return ""
        key = self.celery_broker.encode()
        return hmac.new(key, b"tenant-pipelines edge to ingress", hashlib.sha256).hexdigest()

    @property
    def placement_hosts(self) -> tuple[str, ...]:
        """The hosts a new tenant may be placed on: the worker hosts, or this one."""
        return self.worker_hosts or (self.host_name,)

    @property
    def served_at(self) -> str:
        return served_at(self.domain, self.https_port)

    @cached_property
    def deployment(self) -> str:
        """Prefixes tenants' PostgreSQL role and schema names: TENANT_DEPLOYMENT, or derived
        from the registry's database. Derived when first asked for: parsing the URL loads
        SQLAlchemy, which the commands answered by the API server never need."""
        return self.deployment_set or derived_deployment(self.db_url)

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for processes we start: every setting spelled out.

        URLs (secrets) are passed on as they came, never written anywhere: the children's
        dagster.yaml and resources read them back through `{env: ...}` and `EnvVar`.
        """
        env = dict(os.environ if base is None else base)
        env.update(
            TENANT_DATA_DIR=str(self.data_dir),
            TENANT_DB_URL=self.db_url,
            TENANT_DOMAIN=self.domain,
            DAGSTER_HOME=str(self.dagster_home),
            TENANT_SENSOR_INTERVAL_S=str(self.sensor_interval_s),
            TENANT_BACKENDS=self.backends,
            TENANT_MAX_CONCURRENT_RUNS=str(self.max_concurrent_runs),
            TENANT_DEPLOYMENT=self.deployment,
            TENANT_HTTPS_PORT=str(self.https_port),
            TENANT_EDGE_PLAIN_HTTP=self.edge_plain_http,
            TENANT_ACME_EMAIL=self.acme_email,
            TENANT_EDGE_CLIENT_TIMEOUT_S=str(self.edge_client_timeout_s),
            TENANT_CADDY=self.caddy,
            TENANT_HOST_NAME=self.host_name,
            TENANT_WORKER_HOSTS=",".join(f"{n}={a}" for n, a in self.worker_ingresses.items()),
        )
        for plan in PLANS:
            env[plan_concurrency_var(plan)] = str(self.plan_concurrency.get(plan, ""))
        for name, value in (
            ("DAGSTER_PG_URL", self.dagster_pg_url),
            ("TENANT_BACKENDS_PG_URL", self.backends_pg_url),
            (CELERY_BROKER_VAR, self.celery_broker),
        ):
            if value:
                env[name] = value
        return env
