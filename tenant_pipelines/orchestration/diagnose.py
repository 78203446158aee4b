"""`tenantctl diagnose`: the "recover a stuck provisioning saga" runbook as a command.

It gathers what an operator would look up by hand (state, recent runs, the failing step and its
error, the ledger, whether compensation ran) and names the next action. A request whose run
failed before its tenant existed is diagnosed from the request and its runs. When the registry or
the Dagster instance cannot be read, it reports what the other one says and names the one it
could not read (`unreadable`), rather than failing as a whole.
"""

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from tenant_pipelines.domain.errors import NotFound, RegistryUnavailable
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.states import RequestState, StatusState, TenantState, status_of_request
from tenant_pipelines.domain.status import TenantStatus
from tenant_pipelines.orchestration.runs import IN_FLIGHT_STATUSES, runs_for_tenant
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.operations import retry_command, unreleased
from tenant_pipelines.service.jobs import PROVISION_JOB, REQUEST_TAG

RECENT_RUNS = 10


class NextAction(StrEnum):
    WAIT = "wait"
    NONE = "none"
    RETRY = "retry"
    DECOMMISSION = "decommission"
    COMPENSATE = "compensate"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    job: str
    status: str
    failed_step: str | None
    error: str | None
    parent_run_id: str | None


@dataclass(frozen=True)
class Diagnosis:
    slug: str
    state: str  # a StatusState, or "unknown" when the registry cannot be read
    failed_step: str | None
    failure_reason: str | None
    runs: list[RunSummary]
    ledger: list[dict[str, Any]]
    compensations: list[dict[str, Any]]
    next_action: str
    why: str
    commands: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # store -> why it could not be read
    # The lifecycle operation holding the tenant, if any: {kind, run_id, claimed_at}.
    operation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize_run(instance: DagsterInstance, run: DagsterRun) -> RunSummary:
    failed_step = error = None
    if run.status == DagsterRunStatus.FAILURE:
        failures = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        if failures:
            event = failures[-1].get_dagster_event()
            failed_step = event.step_key
            data = event.step_failure_data
            error = _step_error(data.error) if data and data.error else None
        else:
            error = _run_failure_message(instance, run)
    return RunSummary(
        run.run_id, run.job_name, run.status.value, failed_step, error, run.parent_run_id
    )


def _step_error(error: Any) -> str:
    """The step's error (Dagster's SerializableErrorInfo); under "Exceeded max_retries" the one
    that was retried, which is what the operator must fix (a full disk, say)."""
    while error.cls_name == "RetryRequestedFromPolicy" and error.cause is not None:
        error = error.cause
    return str(error.message).strip()


def _run_failure_message(instance: DagsterInstance, run: DagsterRun) -> str | None:
    failures = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    return failures[-1].message if failures else None


def gave_up_reason(registry: TenantRegistry, tenant: TenantRecord) -> str | None:
    """Why a compensation of this tenant was given up, naming what would not release."""
    claim = registry.compensations.get(tenant.last_run_id or "")
    if claim is None or claim.gave_up_at is None:
        return None
    kinds = [f"{r['kind']} ({r['name']})" for r in unreleased(registry.ledger, tenant.tenant_id)]
    return (
        f"compensation of run {claim.failed_run_id} gave up after {claim.attempts} attempts; "
        f"would not release: {', '.join(kinds) or 'nothing left'}"
    )


def next_action(
    tenant: TenantRecord, runs: list[RunSummary], unfinished: int, gave_up: str | None = None
) -> tuple[NextAction, str]:
    in_flight = [r for r in runs if r.status in IN_FLIGHT_STATUSES]
    if in_flight:
        run = in_flight[0]
        return NextAction.WAIT, f"run {run.run_id} ({run.job}) is {run.status}"
    if unfinished:
        return NextAction.WAIT, "compensation has not finished releasing the tenant's resources"
    if gave_up and tenant.state == TenantState.FAILED:
        return NextAction.COMPENSATE, f"{gave_up}; fix the cause, then compensate again"
    if tenant.state == TenantState.ACTIVE:
        return NextAction.NONE, "the tenant is active"
    if tenant.state == TenantState.DECOMMISSIONED:
        return NextAction.NONE, "the tenant is decommissioned; its slug is free"
    if tenant.state == TenantState.FAILED:
        failed = DagsterRunStatus.FAILURE.value
        failures = sum(1 for r in runs if r.job == PROVISION_JOB and r.status == failed)
        if failures >= 3:
            why = f"provisioning failed {failures} times; fix the cause first"
            return NextAction.DECOMMISSION, why
        return NextAction.RETRY, "compensation is done; a retry resumes from the failed step"
    if tenant.state == TenantState.DECOMMISSIONING:
        why = "the decommission run ended without finishing; launch it again"
        return NextAction.DECOMMISSION, why
    return NextAction.RETRY, "no run is working on this provisioning tenant; it is stuck"


def diagnose(
    registry: TenantRegistry | None,
    instance: DagsterInstance | None,
    slug: str,
    unreadable: dict[str, str] | None = None,
) -> Diagnosis:
    """Raises NotFound when neither a tenant nor a request has the slug. `None` for a store (with
    its reason in `unreadable`) that could not be opened."""
    unreadable = dict(unreadable or {})
    runs = _runs(instance, slug, {}, unreadable)
    tenant, request = _records(registry, slug, unreadable)
    newer = request is not None and (tenant is None or request.created_at > tenant.created_at)
    if newer and request is not None and request.tenant_id is None:
        return _of_request(instance, request, unreadable)
    if tenant is not None and registry is not None:
        try:
            return _of_tenant(registry, tenant, runs, unreadable)
        except RegistryUnavailable as error:
            unreadable["registry"] = str(error)
    if "registry" not in unreadable:
        raise NotFound(f"no tenant or request with slug {slug!r}")
    why = "the registry cannot be read: the tenant's state and ledger are unknown"
    return Diagnosis(
        slug, "unknown", None, None, runs, [], [], NextAction.WAIT, why, [], unreadable
    )


def _records(
    registry: TenantRegistry | None, slug: str, unreadable: dict[str, str]
) -> tuple[TenantRecord | None, RequestRecord | None]:
    if registry is None:
        return None, None
    try:
        request = registry.requests.latest_for_slug(slug)
        try:
            return registry.tenants.get(slug), request
        except NotFound:
            return None, request
    except RegistryUnavailable as error:
        unreadable["registry"] = str(error)
        return None, None


def _runs(
    instance: DagsterInstance | None, slug: str, tags: dict[str, str], unreadable: dict[str, str]
) -> list[RunSummary]:
    if instance is None:
        return []
    try:
        found = runs_for_tenant(instance, slug, RECENT_RUNS, tags)
        return [summarize_run(instance, r) for r in found]
    except Exception as error:  # any storage error: report the registry's side regardless
        unreadable["dagster"] = f"the Dagster instance cannot be read: {_first_line(error)}"
        return []


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def explain_request(instance: DagsterInstance, found: TenantStatus) -> TenantStatus:
    """A launched request whose run ended before its tenant existed (a full disk at Validate, say)
    shows that run's failure instead of looking as if it were still on its way."""
    if found.tenant_id is not None or found.state != StatusState.REQUEST_LAUNCHED:
        return found
    runs = runs_for_tenant(instance, found.slug, 1, {REQUEST_TAG: found.request_id or ""})
    if not runs or runs[0].status.value in IN_FLIGHT_STATUSES:
        return found
    summary = summarize_run(instance, runs[0])
    reason = summary.error or f"its run ended {summary.status} before the tenant existed"
    return found.model_copy(
        update={
            "last_run_id": summary.run_id,
            "failed_step": summary.failed_step or "validate",
            "failure_reason": reason,
        }
    )


def _of_request(
    instance: DagsterInstance | None, request: RequestRecord, unreadable: dict[str, str]
) -> Diagnosis:
    """A request that has no tenant (yet, or because its run failed before making one)."""
    slug = request.slug
    runs = _runs(instance, slug, {REQUEST_TAG: request.request_id}, unreadable)
    state = status_of_request(request.state)
    in_flight = [r for r in runs if r.status in IN_FLIGHT_STATUSES]
    if request.state == RequestState.REJECTED:
        why = f"the request was rejected: {request.reason}"
        return Diagnosis(
            slug,
            state,
            "validate",
            request.reason,
            runs,
            [],
            [],
            NextAction.NONE,
            why,
            [],
            unreadable,
        )
    if in_flight:
        why = f"run {in_flight[0].run_id} ({in_flight[0].job}) is {in_flight[0].status}"
        return Diagnosis(
            slug, state, None, None, runs, [], [], NextAction.WAIT, why, [], unreadable
        )
    if not runs:
        why = "the request waits for its run (the intake sensor launches it)"
        if "dagster" in unreadable:
            why = "the request has no tenant yet and its runs cannot be read"
        return Diagnosis(
            slug, state, None, None, runs, [], [], NextAction.WAIT, why, [], unreadable
        )
    last = runs[0]
    step = last.failed_step or "validate"
    reason = last.error or f"run {last.run_id} ended {last.status}"
    why = (
        f"its run {last.run_id} failed at {step} before the tenant existed ({reason});"
        " fix the cause, then retry the request"
    )
    return Diagnosis(
        slug,
        state,
        step,
        reason,
        runs,
        [],
        [],
        NextAction.RETRY,
        why,
        [f"tenantctl retry {slug} --wait", f"tenantctl discard {slug}"],
        unreadable,
    )


def _of_tenant(
    registry: TenantRegistry,
    tenant: TenantRecord,
    runs: list[RunSummary],
    unreadable: dict[str, str],
) -> Diagnosis:
    slug = tenant.slug
    compensations = [c for r in runs if (c := registry.compensations.get(r.run_id)) is not None]
    unfinished = len(registry.compensations.unfinished(tenant.tenant_id))
    action, why = next_action(tenant, runs, unfinished, gave_up_reason(registry, tenant))
    commands = {
        NextAction.RETRY: [f"tenantctl retry {slug} --wait"],
        NextAction.DECOMMISSION: [f"tenantctl decommission {slug} --wait"],
        NextAction.COMPENSATE: [retry_command(slug)],
    }.get(action, [])
    operation = registry.operations.get(tenant.tenant_id)
    return Diagnosis(
        slug=slug,
        state=StatusState(tenant.state),
        failed_step=tenant.failed_step,
        failure_reason=tenant.failure_reason,
        runs=runs,
        ledger=[
            {
                "kind": e.kind,
                "state": e.state,
                "seq": e.seq,
                "name": e.handle.get("name"),
                "updated_at": e.updated_at.isoformat(),
            }
            for e in registry.ledger.entries(tenant.tenant_id)
        ],
        compensations=[
            {
                "failed_run_id": c.failed_run_id,
                "compensation_run_id": c.compensation_run_id,
                "finished": c.finished_at is not None,
                "attempts": c.attempts,
                "gave_up": c.gave_up_at is not None,
            }
            for c in compensations
        ],
        next_action=action,
        why=why,
        commands=commands,
        unreadable=unreadable,
        operation=None
        if operation is None
        else {
            "kind": operation.kind,
            "run_id": operation.run_id,
            "claimed_at": operation.claimed_at.isoformat(),
        },
    )


def format_diagnosis(d: Diagnosis) -> str:
    lines = [f"tenant {d.slug}: {d.state}"]
    if d.failed_step:
        lines.append(f"  failed at {d.failed_step}: {d.failure_reason}")
    lines.append("runs (newest first):")
    for r in d.runs:
        failure = f"  failed at {r.failed_step}: {r.error}" if r.failed_step or r.error else ""
        lines.append(f"  {r.run_id}  {r.job:<20} {r.status:<10}{failure}")
    lines.append("ledger:")
    lines += [
        f"  {e['seq']:>3} {e['kind']:<18} {e['state']:<11} {e['name'] or ''}" for e in d.ledger
    ]
    lines.append("compensations:")
    lines += [
        f"  for run {c['failed_run_id']}: {_compensation_outcome(c)}" for c in d.compensations
    ] or ["  none"]
    if d.operation:
        op = d.operation
        lines.append(f"operation in flight: {op['kind']} (run {op['run_id'] or 'launching'})")
    lines.append(f"next action: {d.next_action} ({d.why})")
    lines += [f"  $ {c}" for c in d.commands]
    lines += [f"could not read the {store}: {why}" for store, why in d.unreadable.items()]
    return "\n".join(lines)


def _compensation_outcome(c: dict[str, Any]) -> str:
    if c["finished"]:
        return "finished"
    if c["gave_up"]:
        return f"gave up after {c['attempts']} attempts"
    return f"not finished (attempt {c['attempts']})"
