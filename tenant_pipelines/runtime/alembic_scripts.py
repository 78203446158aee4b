"""Dagster's Alembic migration scripts, read once per fork server instead of once per check.

Every Dagster SQL storage checks its database's revision when it opens it, and each check reads
and executes all of Dagster's migration scripts to find their head (Alembic keeps no cache across
`ScriptDirectory.from_config` calls). A run worker opens an instance and its run's event-log
database: profiled with py-spy under a burst, those checks were ~15% of every run's CPU. The fork
server reads the scripts once, before it forks, and every run worker inherits them. The scripts
are part of the installed Dagster, which a fork server never sees change (it is restarted with
the stack), so what it read stays true.
"""

from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

from tenant_pipelines.runtime.dagster_private import ALEMBIC_SCRIPTS_LOCATION

_read: dict[str, ScriptDirectory] = {}
_from_config = ScriptDirectory.from_config.__func__  # type: ignore[attr-defined]


def _shared_from_config(cls: type[ScriptDirectory], config: Config) -> ScriptDirectory:
    location = config.get_main_option("script_location")
    if location != ALEMBIC_SCRIPTS_LOCATION:
        return _from_config(cls, config)
    if location not in _read:
        script = _from_config(cls, config)
        script.as_revision_number("head")  # reads every script now
        _read[location] = script
    return _read[location]


def read_dagster_scripts_once() -> None:
    """From now on in this process (and its forks), Dagster's scripts are read at most once."""
    shared: Any = classmethod(_shared_from_config)
    ScriptDirectory.from_config = shared  # type: ignore[method-assign]
    config = Config()
    config.set_main_option("script_location", ALEMBIC_SCRIPTS_LOCATION)
    ScriptDirectory.from_config(config)
