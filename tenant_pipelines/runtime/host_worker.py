"""The Celery app of a worker host (`tenantctl worker` runs `celery worker` on it): the tasks that
execute and resume the runs `runtime.host_launcher` sends to this host's queue.

Each task executes its run in the Celery process that took it, as this project's own run workers
do (`runtime.run_worker.Worker`: the worker's identity recorded on the run, its instance and
sessions kept for the next run). Celery forks those processes from its main process after this
module, and so Dagster and the code location, are imported: a run pays no import. The instance
is this host's own (`DAGSTER_HOME`): the same PostgreSQL storage as every host, with step logs
under this host's DAGSTER_HOME, not the instance ref the control host sent, which names its own.
The task's name and arguments are dagster-celery's, which the launcher sends; a run is never
resumed in place (`HostRunLauncher.supports_resume_run`), so there is no resume task.

A run executes at its plan's CPU priority (`Plan.cpu_nice`), as one host's run workers do, so that
a burst of free runs leaves the CPU to an enterprise one; the process takes its own priority back
when the run ends, which needs privileges (root, as a worker host runs to isolate its tenants'
workloads): without them every run keeps the process's priority.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from dagster import DagsterInstance, deserialize_value, serialize_value
from dagster_celery.config import DEFAULT_CONFIG, TASK_EXECUTE_JOB_NAME
from dagster_celery.make_app import make_app

from tenant_pipelines.runtime.run_launcher import plan_niceness
from tenant_pipelines.runtime.run_worker import Worker
from tenant_pipelines.settings import CELERY_BROKER_VAR
from tenant_pipelines.support.hosts import HOST_NAME_VAR

broker = os.environ.get(CELERY_BROKER_VAR)
app = make_app(
    {
        "broker": broker,
        "backend": broker,
        "include": [],
        "config_source": DEFAULT_CONFIG,
        "task_default_queue": os.environ.get(HOST_NAME_VAR),
    }
)
_worker = Worker()  # one per Celery process: each is forked before its first task
_own_instance: list[str] = []  # this host's instance ref, serialized once per process


def _this_hosts_instance() -> str:
    if not _own_instance:
        with DagsterInstance.get() as instance:
            _own_instance.append(serialize_value(instance.get_ref()))
    return _own_instance[0]


def _run_id(packed_args: dict[str, Any]) -> str:
    """The run id of dagster-celery's `ExecuteRunArgs`."""
    return str(deserialize_value(json.dumps(packed_args)).run_id)  # type: ignore[union-attr]


@contextlib.contextmanager
def _plan_priority(run_id: str) -> Iterator[None]:
    """The run's plan's CPU priority while it runs, where this process can take its own back."""
    if os.geteuid() != 0:
        yield
        return
    run = _worker.instance(_this_hosts_instance()).get_run_by_id(run_id)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = plan_niceness(run) if run is not None else before
    os.setpriority(os.PRIO_PROCESS, 0, max(before, niceness))  # never above the worker's own
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


@app.task(name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(execute_job_args_packed: dict[str, Any]) -> bool:
    run_id = _run_id(execute_job_args_packed)
    with _plan_priority(run_id):
        return _worker.execute(run_id, _this_hosts_instance())
