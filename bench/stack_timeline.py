"""Where a provisioning run's time goes, read from the registry and the Dagster event log."""

from dataclasses import dataclass
from datetime import datetime

from dagster import DagsterEventType, DagsterInstance, DagsterRun, RunsFilter

from tenant_pipelines.orchestration.feed import read_events
from tenant_pipelines.registry.store import TenantRegistry

PHASES = ["validate", "allocate", "deploy", "mark_active", "send_welcome_emails"]
RUN_MARKS = {
    DagsterEventType.RUN_ENQUEUED: "enqueued",
    DagsterEventType.RUN_DEQUEUED: "dequeued",
    DagsterEventType.RUN_STARTING: "starting",
    DagsterEventType.RUN_START: "started",
}


@dataclass(frozen=True)
class Timeline:
    slug: str
    to_active_s: float  # request recorded -> tenant active
    intake_s: float  # request recorded -> run created
    queue_s: float  # run created -> dequeued by the daemon
    launch_s: float  # dequeued -> run worker started
    phases_s: dict[str, float]  # each op, start to success


def provisioning_run(instance: DagsterInstance, slug: str) -> DagsterRun:
    runs = instance.get_runs(RunsFilter(job_name="provision_tenant", tags={"tenant": slug}))
    return runs[-1]  # the first one


def _marks(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    marks: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type in RUN_MARKS:
            marks.setdefault(RUN_MARKS[event.event_type], entry.timestamp)
        elif event.event_type == DagsterEventType.STEP_START:
            marks.setdefault(f"{event.step_key}:start", entry.timestamp)
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            marks[f"{event.step_key}:end"] = entry.timestamp
    return marks


def timeline(registry: TenantRegistry, instance: DagsterInstance, slug: str) -> Timeline:
    tenant = registry.tenants.get(slug)
    requested = registry.requests.get(tenant.request_id).created_at.timestamp()
    run = provisioning_run(instance, slug)
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    created = record.create_timestamp.timestamp()
    marks = _marks(instance, run.run_id)
    events, _ = read_events(instance, tenant=slug, type_glob="tenant.provisioning.completed")
    active = datetime.fromisoformat(events[0].at).timestamp()
    dequeued = marks.get("dequeued", marks.get("starting", created))
    return Timeline(
        slug=slug,
        to_active_s=active - requested,
        intake_s=created - requested,
        queue_s=dequeued - created,
        launch_s=marks["started"] - dequeued,
        phases_s={
            p: marks[f"{p}:end"] - marks[f"{p}:start"] for p in PHASES if f"{p}:end" in marks
        },
    )
