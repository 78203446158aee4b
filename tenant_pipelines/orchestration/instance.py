"""The Dagster instance the local stack runs on: `$DAGSTER_HOME/dagster.yaml`.

Rendered from a template beside this module when absent, so a newcomer's first `tenantctl up`
gets the settings this project is tuned for (runs that start at once under their limits, run
limits per plan): `dagster.yaml` stores on SQLite in DAGSTER_HOME, `dagster.postgres.yaml` on
the PostgreSQL database at DAGSTER_PG_URL. The run limits are rendered in from the settings
because Dagster's schema takes no `{env: ...}` for tag limits; the URL is not, since it is a
secret: every Dagster process reads it from its environment.

An existing dagster.yaml is never rewritten. It is checked instead, so that the environment and
the file cannot silently disagree: its storage must be the one DAGSTER_PG_URL selects, and a
file we generated must still carry the run limits the environment asks for and be what this
version would write (an older one lacks, say, the run launcher). A file without our first line
is the operator's, and only its storage is checked.
"""

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml
from dagster import DagsterInstance

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.registry.migrate import ensure_upgraded
from tenant_pipelines.service.jobs import PLAN_TAG
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.db_url import same_database
from tenant_pipelines.support.files import write_atomically

CONFIG_FILE = "dagster.yaml"
TEMPLATES = {"sqlite": "dagster.yaml", "postgres": "dagster.postgres.yaml"}
GENERATED_MARK = "# tenant-pipelines: generated from the environment"
PG_STORAGE_MODULE = "tenant_pipelines.runtime.pg_storage"  # Dagster's, pooled per process
LEGACY_STORAGE_KEYS = ("run_storage", "event_log_storage", "schedule_storage")


PREFORK_LAUNCHER = """\
# Each run in its own process, forked from a server that has already imported Dagster and this
# code location (tenant_pipelines/runtime/run_launcher.py): a run starts in milliseconds instead of
# spending ~1 s of CPU on imports. Restart the stack after changing the code location.
run_launcher:
  module: tenant_pipelines.runtime.run_launcher
  class: PreforkRunLauncher
"""
HOST_LAUNCHER = """\
# Several hosts (TENANT_WORKER_HOSTS): each run goes through the broker at TENANT_CELERY_BROKER (a
# secret, read from the environment) to its tenant's host, where `tenantctl worker` runs it
# (tenant_pipelines/runtime/host_launcher.py). A run of no placed tenant goes to ${first_host}.
run_launcher:
  module: tenant_pipelines.runtime.host_launcher
  class: HostRunLauncher
  config:
    broker:
      env: TENANT_CELERY_BROKER
    backend:
      env: TENANT_CELERY_BROKER
    default_queue: ${first_host}
"""


def storage_for(settings: Settings) -> str:
    return "postgres" if settings.dagster_pg_url else "sqlite"


def run_launcher_block(settings: Settings) -> str:
    if not settings.worker_hosts:
        return PREFORK_LAUNCHER
    return Template(HOST_LAUNCHER).substitute(first_host=settings.worker_hosts[0])


def tag_limits(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"key": PLAN_TAG, "value": plan, "limit": limit}
        for plan, limit in settings.plan_concurrency.items()
    ]


def render_instance_config(settings: Settings) -> str:
    template = resources.files(__package__ or "").joinpath(
        "templates", TEMPLATES[storage_for(settings)]
    )
    limits = tag_limits(settings)
    indent = " " * 6  # under run_coordinator.config.tag_concurrency_limits
    block = "".join(
        f"\n{indent}- key: {item['key']}\n{indent}  value: {item['value']}"
        f"\n{indent}  limit: {item['limit']}"
        for item in limits
    )
    return Template(template.read_text()).substitute(
        dagster_home=settings.dagster_home,
        run_launcher=run_launcher_block(settings),
        max_concurrent_runs=settings.max_concurrent_runs,
        tag_concurrency_limits=block if limits else " []",
    )


def configured_storage(config: Mapping[str, Any]) -> str:
    """ "postgres" or "sqlite": what a dagster.yaml stores on (Dagster's default is SQLite)."""
    storage = config.get("storage") or {}
    custom = storage.get("custom") or {}
    if "postgres" in storage or custom.get("module") == PG_STORAGE_MODULE:
        return "postgres"
    legacy = [config.get(key) or {} for key in LEGACY_STORAGE_KEYS]
    if any(str(item.get("module", "")).startswith("dagster_postgres") for item in legacy):
        return "postgres"
    return "sqlite"


def _load(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must be a YAML mapping")
    return config


def check_instance_config(path: Path, settings: Settings) -> None:
    """Refuse a dagster.yaml that contradicts the environment (see the module's docstring)."""
    config = _load(path)
    found, wanted = configured_storage(config), storage_for(settings)
    if found != wanted:
        why = "DAGSTER_PG_URL is set" if wanted == "postgres" else "DAGSTER_PG_URL is not set"
        raise ConfigError(
            f"{path} stores the Dagster instance on {found}, but {why}: use the environment that"
            f" instance was made with, or another DAGSTER_HOME (or TENANT_DATA_DIR) for {wanted}"
        )
    if not path.read_text().startswith(GENERATED_MARK):
        return
    queue = (config.get("run_coordinator") or {}).get("config") or {}
    have = (queue.get("max_concurrent_runs"), queue.get("tag_concurrency_limits") or [])
    want = (settings.max_concurrent_runs, tag_limits(settings))
    if have != want:
        raise ConfigError(
            f"{path} was generated with run limits {_limits(*have)}, but the environment asks"
            f" for {_limits(*want)} (TENANT_MAX_CONCURRENT_RUNS, TENANT_<PLAN>_CONCURRENCY):"
            " delete the file and restart `tenantctl up` to apply them, or run with the same"
            " environment"
        )
    if config != yaml.safe_load(render_instance_config(settings)):
        raise ConfigError(
            f"{path} was generated by another version of tenant-pipelines (it differs from what"
            " this version writes, e.g. its run launcher): delete the file and restart"
            " `tenantctl up` to regenerate it"
        )


def _limits(total: Any, per_tag: list[dict[str, Any]]) -> str:
    plans = ", ".join(f"{item.get('value')}={item.get('limit')}" for item in per_tag)
    return f"{total} in all" + (f" ({plans})" if plans else "")


def ensure_dagster_home(dagster_home: Path, settings: Settings | None = None) -> Path:
    """Write dagster.yaml if absent (atomically: several processes may start at once), else check
    it. `settings` defaults to the environment's."""
    settings = Settings.from_env() if settings is None else settings
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / CONFIG_FILE
    if not config.exists():
        write_atomically(config, render_instance_config(settings))
    check_instance_config(config, settings)
    return config


def _adopt_shared_registry(settings: Settings) -> None:
    """On a database it shares with the registry, Dagster stamps its revision into
    `alembic_version`: a registry from before it had its own version table must move its revision
    out of there first, or Dagster finds a revision it cannot locate."""
    if settings.dagster_pg_url and same_database(settings.dagster_pg_url, settings.db_url):
        ensure_upgraded(settings.db_url)


def open_instance(dagster_home: Path, settings: Settings) -> DagsterInstance:
    """The instance at `dagster_home`, after checking its dagster.yaml against `settings`: those
    of the stack that owns it (the process's own environment may differ, as in a benchmark)."""
    ensure_dagster_home(dagster_home, settings)
    if storage_for(settings) == "sqlite":
        return DagsterInstance.from_config(str(dagster_home))
    _adopt_shared_registry(settings)
    from dagster_postgres.utils import DagsterPostgresException

    try:
        return DagsterInstance.from_config(str(dagster_home))
    except DagsterPostgresException as error:
        # The driver's message names host, port and database, never the password.
        reason = str(error.__cause__ or error).strip().splitlines()[0]
        raise ConfigError(f"the Dagster instance's database (DAGSTER_PG_URL): {reason}") from None
