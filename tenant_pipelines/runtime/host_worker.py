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
"""

import json
import os
from typing import Any

from dagster import DagsterInstance, deserialize_value, serialize_value
from dagster_celery.config import DEFAULT_CONFIG, TASK_EXECUTE_JOB_NAME
from dagster_celery.make_app import make_app

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


@app.task(name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(execute_job_args_packed: dict[str, Any]) -> bool:
    return _worker.execute(_run_id(execute_job_args_packed), _this_hosts_instance())
