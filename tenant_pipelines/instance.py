"""The Dagster instance the local stack runs on: `$DAGSTER_HOME/dagster.yaml`.

Written from the template beside this module when absent, so a newcomer's first `tenantctl up`
gets the settings this project is tuned for (fast dequeue, run monitoring, crash retries).
An existing dagster.yaml is the operator's and is left alone.
"""

from importlib import resources
from pathlib import Path

from dagster import DagsterInstance

TEMPLATE = "dagster.yaml"


def ensure_dagster_home(dagster_home: Path) -> Path:
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        text = resources.files("tenant_pipelines").joinpath("templates", TEMPLATE).read_text()
        config.write_text(text)
    return config


def open_instance(dagster_home: Path) -> DagsterInstance:
    ensure_dagster_home(dagster_home)
    return DagsterInstance.from_config(str(dagster_home))
