"""The fault plan for tests and drills (TENANT_FAULT_PLAN): which calls fail, and how.

The plan file is read again at every call that a rule may concern (a drill edits or deletes it
while the platform runs; a missing file means no faults), so nothing is cached. Rules with a count
(transient, hang) share their counts between processes, since Dagster runs each run in its own
process, through `<plan>.counts.json`, updated under an exclusive `flock`. Edit the plan
atomically (write a temporary file, then rename it): a half-written plan is refused as malformed.
Delete the counts file to reset the counts. The backends that obey it are in `resources.faults`.
"""

import contextlib
import fcntl
import fnmatch
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from tenant_pipelines.domain.errors import (
    FaultPlanError,
    InjectedFault,
    PermanentInjectedFault,
    TenantPipelinesError,
)
from tenant_pipelines.support.files import write_atomically

FAULT_PLAN_ENV = "TENANT_FAULT_PLAN"
HANG_S = 3600.0  # a hang ends by itself after this long, unless the plan drops its rule first
HANG_POLL_S = 0.1  # how often a hanging call rereads the plan
INJECTED_REASON = "injected fault"

# "release": the traffic boundary's release (compensation, decommission); its rules' `tenant`
# glob is matched against the tenant key `<slug>-<org>`, all a release is given.
Phase = Literal["allocate", "deploy", "mark_active", "send_welcome_emails", "release"]
Mode = Literal["transient", "permanent", "hang"]


class FaultRule(BaseModel):
    """Fail or block the calls of one phase for the tenants whose slug matches a glob."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    phase: Phase
    tenant: str = Field(default="*", min_length=1)
    mode: Mode
    times: int | None = Field(default=None, ge=1)  # transient and hang only; default 1

    @property
    def limit(self) -> int:
        return self.times or 1

    def matches(self, phase: str, slug: str) -> bool:
        return self.phase == phase and fnmatch.fnmatchcase(slug, self.tenant)


class FaultPlan(RootModel[list[FaultRule]]):
    """The plan file: a JSON list of rules, applied in order."""

    def matching(self, phase: str, slug: str) -> list[tuple[int, FaultRule]]:
        return [(i, rule) for i, rule in enumerate(self.root) if rule.matches(phase, slug)]


def _describe(error: ValidationError) -> str:
    """Each problem as `rule <index>, field '<name>': <message>`."""
    parts = []
    for item in error.errors():
        index, *field = item["loc"]
        where = f"rule {index}" + (f", field '{'.'.join(map(str, field))}'" if field else "")
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_fault_plan(text: str, source: str = "fault plan") -> FaultPlan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FaultPlanError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(data, list):
        raise FaultPlanError(f"{source}: must be a JSON list of rules, not {type(data).__name__}")
    try:
        return FaultPlan.model_validate(data)
    except ValidationError as error:
        raise FaultPlanError(f"{source}: {_describe(error)}") from None


def load_fault_plan(path: str | Path) -> FaultPlan:
    """The plan as the file says now; a missing file is an empty plan."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return FaultPlan([])
    except OSError as error:
        raise FaultPlanError(f"fault plan {path}: cannot read it ({error.strerror})") from None
    return parse_fault_plan(text, f"fault plan {path}")


class FaultCounters:
    """How often each counted rule has fired, per tenant and phase, shared by all processes."""

    def __init__(self, plan_path: str | Path) -> None:
        self.path = Path(f"{plan_path}.counts.json")
        self.lock_path = Path(f"{plan_path}.counts.lock")

    @staticmethod
    def key(index: int, phase: str, slug: str) -> str:
        return f"{index}:{phase}:{slug}"

    def read(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError) as error:
            raise FaultPlanError(f"fault counts {self.path} are unreadable: {error}") from None

    def take(self, key: str, limit: int) -> bool:
        """Count one more firing unless `limit` are counted already; True if this one fires."""
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            counts = self.read()
            if counts.get(key, 0) >= limit:
                return False
            counts[key] = counts.get(key, 0) + 1
            write_atomically(self.path, json.dumps(counts, indent=1, sort_keys=True))
            return True


def _hang(plan_path: str, rule: FaultRule) -> None:
    """Block until HANG_S passes or the plan no longer holds the rule (a drill released it)."""
    deadline = time.monotonic() + HANG_S
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(HANG_POLL_S, remaining))
        with contextlib.suppress(FaultPlanError):  # a half-written edit releases nothing
            if rule not in load_fault_plan(plan_path).root:
                return


def injected_fault(plan_path: str, phase: Phase, slug: str) -> TenantPipelinesError | None:
    """Apply the plan to one call: block through a hang, or return the error a rule calls for.

    The first matching rule that fires decides; a counted rule that has used up its count lets
    the next matching rule decide.
    """
    counters = FaultCounters(plan_path)
    for index, rule in load_fault_plan(plan_path).matching(phase, slug):
        what = f"{INJECTED_REASON}: {rule.mode} {phase} for {slug!r} (rule {index})"
        if rule.mode == "permanent":
            return PermanentInjectedFault(what)
        if not counters.take(counters.key(index, phase, slug), rule.limit):
            continue
        if rule.mode == "transient":
            return InjectedFault(what)
        _hang(plan_path, rule)
        return None
    return None


def raise_injected(plan_path: str, phase: Phase, slug: str) -> None:
    fault = injected_fault(plan_path, phase, slug)
    if fault is not None:
        raise fault
