"""One lifecycle operation per tenant, and what happens to a compensation that fails.

Retry, decommission and compensation of one tenant exclude each other through one claim in the
registry (`registry.operations.claim`). A compensation's claim is named after the run it
compensates, so every attempt for that run holds the same claim.

A compensation run that fails is launched again by the backstop sensor, a bounded number of
times with exponential backoff; after the last attempt the saga gives up and reports it
(`tenant.provisioning.compensation_failed`, naming what would not release and the command to try
again): a person has to look, and retrying forever would hide that.
"""

from enum import StrEnum

from tenant_pipelines.domain.events import AuditEvent, EventType, Step, make_event
from tenant_pipelines.domain.records import CompensationRecord, TenantRecord
from tenant_pipelines.domain.states import LIVE_LEDGER_STATES
from tenant_pipelines.saga.ports import Ledger

MAX_COMPENSATION_ATTEMPTS = 3
COMPENSATION_BACKOFF_S = 2.0  # before attempt 2; doubled before each later attempt


def compensation_holder(failed_run_id: str) -> str:
    """The operation claim of the compensation of `failed_run_id` (the same for every attempt)."""
    return f"compensation:{failed_run_id}"


class Move(StrEnum):
    WAIT = "wait"  # the attempt is running, or its backoff has not passed
    RELAUNCH = "relaunch"
    GIVE_UP = "give_up"
    DONE = "done"  # finished or already given up: nothing to do


def backoff_s(attempts: int) -> float:
    """The pause after the `attempts`-th attempt failed, before the next one."""
    return COMPENSATION_BACKOFF_S * float(2 ** max(attempts - 1, 0))


def next_move(claim: CompensationRecord, attempt_ended: bool, seconds_since_end: float) -> Move:
    """What the backstop does with a compensation, given whether its latest attempt has ended
    without finishing (failed, canceled, or never started) and how long ago."""
    if claim.finished_at is not None or claim.gave_up_at is not None:
        return Move.DONE
    if not attempt_ended:
        return Move.WAIT
    if claim.attempts >= MAX_COMPENSATION_ATTEMPTS:
        return Move.GIVE_UP
    if seconds_since_end < backoff_s(claim.attempts):
        return Move.WAIT
    return Move.RELAUNCH


def unreleased(ledger: Ledger, tenant_id: str) -> list[dict[str, str | None]]:
    """The tenant's resources still live in the ledger: what compensation could not release."""
    return [
        {"kind": e.kind, "state": e.state, "name": e.handle.get("name")}
        for e in ledger.entries(tenant_id)
        if e.state in LIVE_LEDGER_STATES
    ]


def retry_command(slug: str) -> str:
    return f"tenantctl compensate {slug} --wait"


def compensation_failed_event(
    ledger: Ledger, tenant: TenantRecord, claim: CompensationRecord, last_run_id: str | None
) -> AuditEvent:
    """The report of a compensation given up: what would not release, and how to try again."""
    resources = unreleased(ledger, tenant.tenant_id)
    return make_event(
        EventType.COMPENSATION_FAILED,
        tenant=tenant.slug,
        org=tenant.org,
        run_id=last_run_id or claim.failed_run_id,
        step=Step.COMPENSATE,
        details={
            "failed_run_id": claim.failed_run_id,
            "attempts": claim.attempts,
            "unreleased": resources,
            "message": (
                f"compensation gave up after {claim.attempts} attempts; would not release: "
                + (", ".join(str(r["kind"]) for r in resources) or "nothing left")
            ),
            "command": retry_command(tenant.slug),
        },
    )
