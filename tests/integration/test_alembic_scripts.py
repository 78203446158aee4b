"""In a fork server (and so in every run worker), Dagster's migration scripts are read once and
the revision checks still find the same head; other Alembic script directories are untouched.
Run in a child interpreter: the change is process-wide."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

PROBE = """
import json
from alembic.config import Config
from alembic.script import ScriptDirectory
from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION

def config(location):
    c = Config()
    c.set_main_option("script_location", location)
    return c

from tenant_pipelines.registry.migrate import MIGRATIONS_DIR
dagster, registry = config(ALEMBIC_SCRIPTS_LOCATION), config(str(MIGRATIONS_DIR))
head_before = ScriptDirectory.from_config(dagster).as_revision_number("head")

from tenant_pipelines.runtime.alembic_scripts import read_dagster_scripts_once
read_dagster_scripts_once()
first, second = ScriptDirectory.from_config(dagster), ScriptDirectory.from_config(dagster)
head_after = second.as_revision_number("head")
print(json.dumps({
    "same_head": head_before == head_after,
    "shared": first is second,
    "registry_shared": (
        ScriptDirectory.from_config(registry) is ScriptDirectory.from_config(registry)
    ),
}))
"""


def test_dagsters_scripts_are_read_once_and_give_the_same_head() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(answer.stdout.strip().splitlines()[-1])
    assert seen["same_head"] and seen["shared"]
    assert not seen["registry_shared"]
