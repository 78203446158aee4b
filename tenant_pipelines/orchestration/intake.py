"""Submitting a tenant request: record it, then launch its run at once if the platform is up.

Shared by `POST /v1/tenants`, the host's `/local/requests` and `tenantctl request` when no
platform runs. Whoever wins the registry's compare-and-set `pending -> launched` launches the run
(this path or the intake sensor), so a request has one run however many times, and from however
many processes, it is submitted. A launch that fails here
is left to the sensor, which catches up on launched requests without a run.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import RequestState
from tenant_pipelines.orchestration.runs import PROVISION_JOB, provision_run_config, provision_tags
from tenant_pipelines.registry.store import TenantRegistry


class Launcher(Protocol):
    """Starts a run of one of this code location's jobs; its run id. Dagster's GraphQL API
    (`DagsterApi`) does, and so does the API server itself (`runtime.direct_launch`)."""

    def launch(
        self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str: ...


@dataclass(frozen=True)
class Submission:
    request: RequestRecord
    created: bool  # False: the same request was submitted before (same id, same content)
    run_id: str | None  # the run launched by this submission, if it launched one

    def to_json(self) -> dict[str, Any]:
        """What `tenantctl request --json` prints and `POST /v1/tenants` answers."""
        state = RequestState.LAUNCHED.value if self.run_id else self.request.state
        return {
            "request_id": self.request.request_id,
            "state": state,
            "created": self.created,
            "run_id": self.run_id,
            "slug": self.request.slug,
            "org": self.request.org,
            "plan": self.request.plan,
        }


# Launches a recorded request's run, by request id, unless someone has; its run id, or None.
LaunchRecorded = Callable[[str], str | None]


def submit(
    registry: TenantRegistry, request: TenantRequest, launch_recorded: LaunchRecorded | None
) -> Submission:
    """Record the request (RequestConflict if its id came with other content; SlugInUse if a
    live tenant or another request in flight holds the slug) and launch it when the platform is
    up (`launch_recorded` given)."""
    record, created = registry.submit_request(request, exclusive_slug=True)
    run_id = launch_recorded(record.request_id) if launch_recorded else None
    return Submission(registry.get_request(record.request_id), created, run_id)


def launching(
    registry: TenantRegistry, launcher: Launcher, warn: Callable[[str], None]
) -> LaunchRecorded:
    """`launch` with its registry and launcher bound: how this process launches a request."""
    return lambda request_id: launch(registry, launcher, request_id, warn)


def launch(
    registry: TenantRegistry, launcher: Launcher, request_id: str, warn: Callable[[str], None]
) -> str | None:
    """Launch the request's run if nobody has; its run id, or None."""
    if not registry.mark_launched(request_id):
        return None  # launched already, by the sensor or an earlier submission
    return start_claimed(registry, launcher, request_id, warn)


def start_claimed(
    registry: TenantRegistry, launcher: Launcher, request_id: str, warn: Callable[[str], None]
) -> str | None:
    """Start the run of a request this process has marked launched; its run id, or None."""
    request = registry.get_request(request_id)
    try:
        return launcher.launch(
            PROVISION_JOB, provision_run_config(request), provision_tags(request)
        )
    except Exception as error:  # the request stays launched-without-a-run: the sensor's job
        warn(f"direct launch failed, the intake sensor will launch it: {error}")
        return None
