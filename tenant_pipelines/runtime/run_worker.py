"""What a run worker forked by `PreforkRunLauncher` executes: `dagster api execute_run`, in-process.

The launcher's fork server imports this module once, and with it Dagster and this code location;
each run's process is forked from there, so a run starts without the ~1 s of CPU a fresh Python
spends importing them (docs/dagster.md).
"""

import os
from collections.abc import Iterable

# What `DagsterInstance.from_ref` imports in every worker unless the fork server has it: ~30 ms
# of CPU a run (py-spy over the run workers).
import upath.core  # noqa: F401
from dagster import DagsterInstance, deserialize_value

import tenant_pipelines.definitions  # noqa: F401 - imported once, in the fork server
from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.runtime.alembic_scripts import read_dagster_scripts_once
from tenant_pipelines.runtime.dagster_private import (
    InstanceRef,
    capture_interrupts,
    execute_run_in_process,
)
from tenant_pipelines.runtime.pg_storage import adopt_seen_schema
from tenant_pipelines.runtime.run_coordinator import LAUNCH_NOW_ENV
from tenant_pipelines.support.procs import identity

read_dagster_scripts_once()  # in the fork server, for every worker it forks


def execute_run(
    run_id: str, serialized_instance_ref: str, schema_facts: Iterable[tuple[str, str]] = ()
) -> None:
    """Execute one run to its end, as `dagster api execute_run` would.

    The worker records its identity on the run before the run starts, so the launcher can tell
    a live worker from a dead one (and stop it) from any process. SIGTERM and SIGINT become
    Dagster's execution interrupts, as in Dagster's own run workers.
    """
    # A run launches no run of its own in this process (compensation is queued instead).
    os.environ.pop(LAUNCH_NOW_ENV, None)
    os.environ["PGAPPNAME"] = "tenant-run-worker"  # its PostgreSQL connections say so
    # What the launcher's process knew of Dagster's schema (its tables included: the run was read
    # from them) is not asked again.
    adopt_seen_schema(schema_facts)
    with capture_interrupts():
        ref = deserialize_value(serialized_instance_ref, InstanceRef)
        with DagsterInstance.from_ref(ref) as instance:
            instance.add_run_tags(run_id, {WORKER_TAG: identity(os.getpid())})
            execute_run_in_process(run_id, instance)
