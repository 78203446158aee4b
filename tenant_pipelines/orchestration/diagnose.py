"""`tenantctl diagnose`: the "recover a stuck provisioning saga" runbook as a command.

It gathers what an operator would look up by hand (state, recent runs, the failing step and its
error, the ledger, whether compensation ran) and names the next action.
"""

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.orchestration.runs import (
    IN_FLIGHT_STATUSES,
    PROVISION_JOB,
    runs_for_request,
    runs_for_tenant,
)
from tenant_pipelines.registry.status import waiting_request
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.operations import retry_command, unreleased

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
    state: str
    failed_step: str | None
    failure_reason: str | None
    runs: list[RunSummary]
    ledger: list[dict[str, Any]]
    compensations: list[dict[str, Any]]
    next_action: str
    why: str
    commands: list[str] = field(default_factory=list)
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
            error = data.error.message.strip() if data and data.error else None
        else:
            error = _run_failure_message(instance, run)
    return RunSummary(
        run.run_id, run.job_name, run.status.value, failed_step, error, run.parent_run_id
    )


def _run_failure_message(instance: DagsterInstance, run: DagsterRun) -> str | None:
    failures = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    return failures[-1].message if failures else None


def gave_up_reason(registry: TenantRegistry, tenant: TenantRecord) -> str | None:
    """Why a compensation of this tenant was given up, naming what would not release."""
    claim = registry.get_compensation(tenant.last_run_id or "")
    if claim is None or claim.gave_up_at is None:
        return None
    kinds = [f"{r['kind']} ({r['name']})" for r in unreleased(registry, tenant.tenant_id)]
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


def diagnose_request(instance: DagsterInstance, request: RequestRecord) -> Diagnosis:
    """A request launched but without a tenant: its runs, and retry or discard once they ended."""
    runs = [summarize_run(instance, r) for r in runs_for_request(instance, request.request_id)]
    in_flight = [r for r in runs if r.status in IN_FLIGHT_STATUSES]
    failed = next((r for r in runs if r.status != DagsterRunStatus.SUCCESS.value), None)
    slug = request.slug
    if in_flight:
        action, why = NextAction.WAIT, f"run {in_flight[0].run_id} is {in_flight[0].status}"
        commands: list[str] = []
    elif not runs:
        action, why = NextAction.WAIT, "no run yet; the intake sensor launches it"
        commands = []
    else:
        action = NextAction.RETRY
        why = "the request's run ended before a tenant existed; nothing was allocated"
        commands = [f"tenantctl retry {slug} --wait", f"tenantctl discard {slug}"]
    return Diagnosis(
        slug=slug,
        state=f"request-{request.state}",
        failed_step=None if failed is None else failed.failed_step,
        failure_reason=None if failed is None else failed.error,
        runs=runs,
        ledger=[],
        compensations=[],
        next_action=action,
        why=why,
        commands=commands,
    )


def diagnose(registry: TenantRegistry, instance: DagsterInstance, slug: str) -> Diagnosis:
    if (request := waiting_request(registry, slug)) is not None:
        return diagnose_request(instance, request)
    tenant = registry.get_tenant(slug)
    runs = [summarize_run(instance, r) for r in runs_for_tenant(instance, slug, RECENT_RUNS)]
    compensations = [c for r in runs if (c := registry.get_compensation(r.run_id)) is not None]
    unfinished = len(registry.unfinished_compensations(tenant.tenant_id))
    action, why = next_action(tenant, runs, unfinished, gave_up_reason(registry, tenant))
    commands = {
        NextAction.RETRY: [f"tenantctl retry {slug} --wait"],
        NextAction.DECOMMISSION: [f"tenantctl decommission {slug} --wait"],
        NextAction.COMPENSATE: [retry_command(slug)],
    }.get(action, [])
    operation = registry.get_operation(tenant.tenant_id)
    return Diagnosis(
        slug=slug,
        state=tenant.state,
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
            for e in registry.ledger(tenant.tenant_id)
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
    return "\n".join(lines)


def _compensation_outcome(c: dict[str, Any]) -> str:
    if c["finished"]:
        return "finished"
    if c["gave_up"]:
        return f"gave up after {c['attempts']} attempts"
    return f"not finished (attempt {c['attempts']})"
