"""The service layer's use cases on a real registry (SQLite and PostgreSQL), with typed in-memory
stand-ins for the orchestrator's ports (its runs, a launcher): who may, what state admits it,
the tenant's one operation claim, the launch, release on error, naming the run."""

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tenant_pipelines.domain.access import Caller, Forbidden, Operator
from tenant_pipelines.domain.errors import (
    NotFound,
    OperationInFlight,
    PlatformNotRunning,
    Refused,
    SlugInUse,
)
from tenant_pipelines.domain.plans import Role
from tenant_pipelines.domain.records import TenantRecord
from tenant_pipelines.domain.request import TenantFields, TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.service import lifecycle
from tenant_pipelines.service.compensation import compensate_failed_run
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import (
    COMPENSATE_JOB,
    DECOMMISSION_JOB,
    PROVISION_JOB,
    REQUEST_TAG,
    REQUESTED_BY_TAG,
)
from tenant_pipelines.service.ports import RunStatus, RunView
from tenant_pipelines.service.submit import request_of, submit

pytestmark = pytest.mark.integration

ADMIN = Caller("alice", Role.PLATFORM_ADMIN, None, "tok-a")
OWN = Caller("carol", Role.ORG_ADMIN, "corp", "tok-c")
OTHER = Caller("mallory", Role.ORG_ADMIN, "rivals", "tok-m")
VIEWER = Caller("vic", Role.VIEWER, "corp", "tok-v")
OPERATOR = Operator("operator:root")


@dataclass
class Runs:
    """The orchestrator's runs, as a dict."""

    runs: dict[str, RunView] = field(default_factory=dict)
    succeeded: dict[str, set[str]] = field(default_factory=dict)

    def get(self, run_id: str) -> RunView | None:
        return self.runs.get(run_id)

    def for_request(self, request_id: str) -> list[RunView]:
        found = [r for r in self.runs.values() if r.tags.get(REQUEST_TAG) == request_id]
        return list(reversed(found))

    def requests_with_runs(self, request_ids: Collection[str]) -> set[str]:
        return {r.tags[REQUEST_TAG] for r in self.runs.values()} & set(request_ids)

    def succeeded_steps(self, run_id: str) -> set[str]:
        return self.succeeded.get(run_id, set())


@dataclass
class Launcher:
    """Records what it launches; `fail` makes the next launch raise."""

    runs: Runs
    launched: list[tuple[str, dict[str, str], Sequence[str] | None]] = field(default_factory=list)
    fail: Exception | None = None
    ids: Any = field(default_factory=lambda: (f"run-{n}" for n in itertools.count(100)))

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        return self._start(job_name, tags, None)

    def reexecute(
        self, parent: RunView, tags: Mapping[str, str], steps: Sequence[str] | None = None
    ) -> str:
        return self._start(parent.job_name, {**parent.tags, **tags}, steps, parent)

    def _start(
        self,
        job: str,
        tags: Mapping[str, str],
        steps: Sequence[str] | None,
        parent: RunView | None = None,
    ) -> str:
        if self.fail is not None:
            raise self.fail
        run_id = next(self.ids)
        root = parent.chain if parent else None
        self.runs.runs[run_id] = RunView(run_id, job, RunStatus.STARTED, root, None, dict(tags))
        self.launched.append((job, dict(tags), steps))
        return run_id


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def ctx(registry: TenantRegistry, runs: Runs) -> ServiceContext:
    return ServiceContext(registry, runs, Launcher(runs))


def launcher_of(ctx: ServiceContext) -> Launcher:
    assert isinstance(ctx.launcher, Launcher)
    return ctx.launcher


def fields(slug: str = "acme", org: str = "corp", plan: str = "team") -> TenantFields:
    return TenantFields.model_validate(
        {"slug": slug, "org": org, "plan": plan, "admin_email": f"a@{slug}.example.com"}
    )


def tenant_in(ctx: ServiceContext, runs: Runs, state: str, slug: str = "acme") -> TenantRecord:
    """A tenant of org corp whose last provisioning run ended as `state` says."""
    registry = ctx.registry
    record, _ = registry.requests.submit(request_of(ADMIN, fields(slug), None))
    run_id = f"first-{slug}"
    assert registry.requests.claim(record.request_id, run_id)
    tenant = registry.tenants.reserve(record)
    status = RunStatus.FAILURE if state == TenantState.FAILED else RunStatus.SUCCESS
    tags = {REQUEST_TAG: record.request_id}
    runs.runs[run_id] = RunView(run_id, PROVISION_JOB, status, None, None, tags)
    registry.tenants.record_run(tenant.tenant_id, run_id)
    if state != TenantState.PROVISIONING:
        registry.tenants.transition(tenant.tenant_id, state, failed_step="deploy")
    return registry.tenants.get_by_id(tenant.tenant_id)


# submit ---------------------------------------------------------------------------------------
def test_submit_records_takes_the_launch_and_starts_the_run(ctx: ServiceContext) -> None:
    submission = submit(ctx, OWN, request_of(OWN, fields(), None))
    assert submission.created and submission.claimed and submission.run_id == "run-100"
    assert submission.to_json()["state"] == "launched"
    [(job, tags, _)] = launcher_of(ctx).launched
    assert job == PROVISION_JOB and tags[REQUESTED_BY_TAG] == "carol"

    again = submit(ctx, OWN, request_of(OWN, fields(), uuid_of(submission)))
    assert (again.created, again.claimed, again.run_id) == (False, False, None)
    assert len(launcher_of(ctx).launched) == 1  # the same request: launched once


def uuid_of(submission: Any) -> Any:
    import uuid

    return uuid.UUID(submission.request.request_id)


def test_submit_without_a_launcher_records_only(registry: TenantRegistry, runs: Runs) -> None:
    records_only = ServiceContext(registry, runs)
    submission = submit(records_only, OPERATOR, request_of(ADMIN, fields(), None))
    assert not submission.claimed and submission.request.state == "pending"


def test_a_failed_launch_leaves_the_request_launched_for_the_sensor(ctx: ServiceContext) -> None:
    launcher_of(ctx).fail = ConnectionError("no code server")
    submission = submit(ctx, OWN, request_of(OWN, fields(), None))
    assert submission.claimed and submission.run_id is None
    assert submission.request.state == "launched"


@pytest.mark.parametrize(
    ("actor", "error"), [(VIEWER, "may not submit"), (OTHER, "cannot act on org 'corp'")]
)
def test_submit_refused_records_nothing(ctx: ServiceContext, actor: Caller, error: str) -> None:
    request = TenantRequest(**{**request_of(ADMIN, fields(), None).model_dump()})
    with pytest.raises(Forbidden, match=error):
        submit(ctx, actor, request)
    assert ctx.registry.requests.in_progress() == []


def test_a_taken_slug_names_its_holder_only_to_whoever_sees_its_org(ctx: ServiceContext) -> None:
    submit(ctx, OWN, request_of(OWN, fields("acme", "corp"), None))
    rival = fields("acme", "rivals")
    with pytest.raises(SlugInUse) as told_other:
        submit(ctx, OTHER, request_of(OTHER, rival, None))
    assert str(told_other.value) == "slug acme is not available"
    with pytest.raises(SlugInUse) as told_operator:
        submit(ctx, OPERATOR, request_of(ADMIN, rival, None))
    assert str(told_operator.value).startswith("slug acme is taken by request ")


# retry ----------------------------------------------------------------------------------------
def test_retry_reexecutes_the_failed_run_under_the_claim_then_names_it(
    ctx: ServiceContext, runs: Runs
) -> None:
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    run_id = lifecycle.retry(ctx, OWN, "acme")
    [(job, tags, steps)] = launcher_of(ctx).launched
    assert (job, steps, tags[REQUESTED_BY_TAG]) == (PROVISION_JOB, None, "carol")
    claim = ctx.registry.operations.get(tenant.tenant_id)
    assert claim is not None and (claim.kind, claim.run_id) == ("retry", run_id)

    with pytest.raises(OperationInFlight, match=f"has a retry in flight \\(run {run_id}\\)"):
        lifecycle.decommission_now(ctx, ADMIN, "acme")


def test_a_canceled_run_is_reexecuted_from_the_steps_that_did_not_succeed(
    ctx: ServiceContext, runs: Runs
) -> None:
    tenant_in(ctx, runs, TenantState.FAILED)
    first = runs.runs["first-acme"]
    runs.runs["first-acme"] = RunView(
        first.run_id, PROVISION_JOB, RunStatus.CANCELED, tags=first.tags
    )
    runs.succeeded["first-acme"] = {"validate", "allocate"}
    lifecycle.retry(ctx, OPERATOR, "acme")
    [(_, _, steps)] = launcher_of(ctx).launched
    assert steps == ["deploy", "mark_active", "send_welcome_emails"]


@pytest.mark.parametrize(
    ("state", "refusal"),
    [
        (TenantState.ACTIVE, "is active; only a failed tenant can be retried"),
        (TenantState.PROVISIONING, "is provisioning; only a failed tenant can be retried"),
    ],
)
def test_retry_refused_by_the_state_releases_the_claim(
    ctx: ServiceContext, runs: Runs, state: str, refusal: str
) -> None:
    tenant = tenant_in(ctx, runs, state)
    with pytest.raises(Refused, match=refusal):
        lifecycle.retry(ctx, ADMIN, "acme")
    assert ctx.registry.operations.get(tenant.tenant_id) is None
    assert launcher_of(ctx).launched == []


def test_a_launch_that_fails_releases_the_claim(ctx: ServiceContext, runs: Runs) -> None:
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    launcher_of(ctx).fail = RuntimeError("code server gone")
    with pytest.raises(RuntimeError):
        lifecycle.retry(ctx, ADMIN, "acme")
    assert ctx.registry.operations.get(tenant.tenant_id) is None


def test_without_a_launcher_the_platform_is_said_not_running(
    registry: TenantRegistry, runs: Runs
) -> None:
    no_launcher = ServiceContext(registry, runs)
    tenant = tenant_in(no_launcher, runs, TenantState.FAILED)
    with pytest.raises(PlatformNotRunning):
        lifecycle.retry(no_launcher, ADMIN, "acme")
    assert registry.operations.get(tenant.tenant_id) is None


@pytest.mark.parametrize(
    ("actor", "error"),
    [(OTHER, NotFound), (VIEWER, Forbidden)],
    ids=["another org's tenant does not exist", "a viewer may not"],
)
def test_lifecycle_is_refused_to_who_may_not(
    ctx: ServiceContext, runs: Runs, actor: Caller, error: type[Exception]
) -> None:
    tenant_in(ctx, runs, TenantState.FAILED)
    for operation in (lifecycle.retry, lifecycle.decommission_now, lifecycle.compensate):
        with pytest.raises(error):
            operation(ctx, actor, "acme")
    assert launcher_of(ctx).launched == []


# decommission ---------------------------------------------------------------------------------
@dataclass
class Clock:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)
    on_sleep: Any = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep()


def test_decommission_waits_for_a_compensation_in_flight_then_goes_ahead(
    registry: TenantRegistry, runs: Runs
) -> None:
    clock = Clock()
    ctx = ServiceContext(registry, runs, Launcher(runs), clock=clock)
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    registry.compensations.claim("first-acme", tenant.tenant_id)

    def compensation_ends() -> None:
        if len(clock.slept) == 3:
            registry.compensations.finish("first-acme")

    clock.on_sleep = compensation_ends
    run_id = lifecycle.decommission(ctx, OWN, "acme")
    assert len(clock.slept) == 3 and launcher_of(ctx).launched[0][0] == DECOMMISSION_JOB
    assert registry.operations.get(tenant.tenant_id).run_id == run_id  # type: ignore[union-attr]


def test_decommission_gives_up_waiting_after_its_bound(
    registry: TenantRegistry, runs: Runs
) -> None:
    ctx = ServiceContext(registry, runs, Launcher(runs), clock=Clock())
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    registry.compensations.claim("first-acme", tenant.tenant_id)
    with pytest.raises(OperationInFlight, match="compensation"):
        lifecycle.decommission(ctx, OWN, "acme", wait_s=2.0)


# compensation ---------------------------------------------------------------------------------
def test_a_failed_run_is_compensated_once_and_the_claim_named(
    ctx: ServiceContext, runs: Runs
) -> None:
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    failed = runs.runs["first-acme"]
    assert compensate_failed_run(ctx, failed, launcher_of(ctx))
    assert not compensate_failed_run(ctx, failed, launcher_of(ctx))  # once per failed run
    [(job, tags, _)] = launcher_of(ctx).launched
    assert job == COMPENSATE_JOB and tags["failed_run_id"] == "first-acme"
    record = ctx.registry.compensations.get("first-acme")
    assert record is not None and record.compensation_run_id == "run-100"
    assert ctx.registry.operations.get(tenant.tenant_id).run_id == "run-100"  # type: ignore[union-attr]


def test_a_compensation_waits_while_another_operation_holds_the_tenant(
    ctx: ServiceContext, runs: Runs
) -> None:
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    retry_run = lifecycle.retry(ctx, OWN, "acme")  # its run is in flight (STARTED)
    assert not compensate_failed_run(ctx, runs.runs["first-acme"], launcher_of(ctx))
    assert [job for job, _, _ in launcher_of(ctx).launched] == [PROVISION_JOB]
    claim = ctx.registry.operations.get(tenant.tenant_id)
    assert claim is not None and (claim.kind, claim.run_id) == ("retry", retry_run)


# the Dagster UI's launches --------------------------------------------------------------------
def test_a_decommission_launched_in_the_ui_takes_the_claim_or_is_refused(
    ctx: ServiceContext, runs: Runs
) -> None:
    tenant = tenant_in(ctx, runs, TenantState.FAILED)
    config = {"ops": {"decommission": {"config": {"tenant_id": tenant.tenant_id}}}}
    ui_run = RunView("ui-1", DECOMMISSION_JOB, RunStatus.NOT_STARTED, run_config=config)
    retry_run = lifecycle.retry(ctx, OWN, "acme")
    with pytest.raises(OperationInFlight, match=f"retry in flight \\(run {retry_run}\\)"):
        lifecycle.admit_ui_run(ctx, ui_run)
    ctx.registry.operations.release(tenant.tenant_id, run_id=retry_run)  # the retry ended

    lifecycle.admit_ui_run(ctx, ui_run)
    claim = ctx.registry.operations.get(tenant.tenant_id)
    assert claim is not None and (claim.kind, claim.run_id) == ("decommission", "ui-1")
