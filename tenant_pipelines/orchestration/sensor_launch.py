"""The service's `Launcher` inside a sensor's tick: each launch becomes a `RunRequest` that the
sensor returns, and the daemon creates the run after the tick. The run key makes asking again
harmless (a request's provisioning run, a failed run's compensation attempt: one run each); the
run's id is not known here, so the launch returns None and the run names itself when it starts
(Validate claims its request, the compensation op its claim)."""

from collections.abc import Mapping
from typing import Any

from dagster import RunRequest

from tenant_pipelines.service.jobs import (
    COMPENSATE_JOB,
    COMPENSATION_ATTEMPT_TAG,
    FAILED_RUN_TAG,
    PROVISION_JOB,
    REQUEST_TAG,
)


def run_key(job_name: str, tags: Mapping[str, str]) -> str:
    if job_name == PROVISION_JOB:
        return tags[REQUEST_TAG]
    if job_name == COMPENSATE_JOB:
        attempt = int(tags.get(COMPENSATION_ATTEMPT_TAG, "1"))
        return f"compensate:{tags[FAILED_RUN_TAG]}" + (f":{attempt}" if attempt > 1 else "")
    raise ValueError(f"sensors launch no {job_name} runs")


class SensorLauncher:
    """Collects the tick's launches as run requests (`requests`)."""

    def __init__(self) -> None:
        self.requests: list[RunRequest] = []

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.requests.append(
            RunRequest(
                run_key=run_key(job_name, tags),
                job_name=job_name,
                run_config=dict(run_config),
                tags=dict(tags),
            )
        )
