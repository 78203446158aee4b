"""Runs launched from the Dagster UI, admitted on the same terms as the API's and the CLI's.

The UI (served only through the API server's door, `api.dagster_door`) can launch any job with
any tags, and re-execute any run. When such a run is submitted, the run coordinator
(`runtime.run_coordinator`) hands it here with the door's caller: `requested_by` becomes the
caller's subject, whatever tag the launch carried (re-executions copy their parent's), so the
feed names who really asked; `worker_host` becomes the tenant's host as the registry records
it (a launch that claims another is refused); and the service holds a lifecycle job to the
lifecycle rules (`service.lifecycle.admit_ui_run`: the tenant's state, its one operation claim).
Refused, the run is deleted before it starts and the error (naming the operation in flight) goes
back to the UI: nothing is released, nothing queued.
"""

from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRun

from tenant_pipelines.domain.errors import NotFound, TenantPipelinesError
from tenant_pipelines.orchestration.runs import DagsterRuns, run_view
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import REQUESTED_BY_TAG
from tenant_pipelines.service.lifecycle import admit_ui_run

# Where the door leaves its caller in the ASGI scope of a UI request; Dagster hands that request
# to the run coordinator as the submission's source.
DOOR_SCOPE_KEY = "tenant_pipelines.door"


@dataclass(frozen=True)
class DoorCaller:
    """Who is launching through the door, and the registry their claims are taken in."""

    subject: str
    registry: TenantRegistry


def admit(instance: DagsterInstance, run: DagsterRun, caller: DoorCaller) -> DagsterRun:
    """The run as it may start: requested by the caller, holding its claim. Raises (and deletes
    the run) when the tenant's state or another operation refuses it."""
    instance.add_run_tags(run.run_id, {REQUESTED_BY_TAG: caller.subject})
    try:
        placement = admit_ui_run(
            ServiceContext(caller.registry, DagsterRuns(instance)), run_view(run)
        )
    except TenantPipelinesError:
        instance.delete_run(run.run_id)
        raise
    if placement:
        instance.add_run_tags(run.run_id, placement)
    admitted = instance.get_run_by_id(run.run_id)
    if admitted is None:
        raise NotFound(f"run {run.run_id} disappeared while it was being admitted")
    return admitted
