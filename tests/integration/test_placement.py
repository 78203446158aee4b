"""Placement: a request is placed on the least loaded host when it is recorded, its tenant keeps
that host, and a run on another host acts on nothing of the tenant (a release that finds
nothing there would otherwise count as done, free the slug and orphan the workload)."""

import uuid

import pytest
from dagster import DagsterRun, DagsterRunStatus, build_reconstructable_job, execute_job

from tenant_pipelines.domain.access import Operator
from tenant_pipelines.domain.errors import SlugInUse, WrongHost
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.localstack.reconcile import LocalWorkloads
from tenant_pipelines.orchestration.recovery import settle_interrupted_runs
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga import compensation, emails, phases
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.inventory import Finding, take_inventory
from tenant_pipelines.saga.ports import TenantBackend
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import (
    DECOMMISSION_JOB,
    WORKER_HOST_TAG,
    provision_tags,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.service.placement import place
from tenant_pipelines.service.ports import NoRuns
from tenant_pipelines.service.submit import submit
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration


def _request(slug: str, org: str = "widgets") -> TenantRequest:
    return TenantRequest.parse(
        {
            "slug": slug,
            "org": org,
            "plan": "team",
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "alice", "role": "platform-admin"},
        }
    )


def _placed(registry: TenantRegistry, slug: str, host: str | None, *, reserve: bool) -> str:
    """A request recorded on `host`; its tenant reserved too if `reserve`. The request id."""
    record, _ = registry.requests.submit(_request(slug), worker_host=host)
    if reserve:
        registry.tenants.reserve(record)
    return record.request_id


def _on(local: LocalPlatform, host: str) -> SagaContext:
    return SagaContext(
        registry=local.registry,
        backends=local.platform.backends(),
        served_at=local.settings.served_at,
        run_id=str(uuid.uuid4()),
        emit=local.events.append,
        host=host,
    )


def test_the_least_loaded_host_is_chosen_counting_tenants_and_requests_waiting_for_one(
    registry: TenantRegistry,
) -> None:
    _placed(registry, "one", "h-a", reserve=True)
    _placed(registry, "two", "h-a", reserve=True)
    _placed(registry, "three", "h-b", reserve=False)  # waiting for its tenant: it counts
    gone = registry.tenants.reserve(
        registry.requests.get(_placed(registry, "four", "h-b", reserve=False))
    )
    for state in (TenantState.ACTIVE, TenantState.DECOMMISSIONING, TenantState.DECOMMISSIONED):
        registry.tenants.transition(gone.tenant_id, state)  # a decommissioned one does not
    registry.requests.reject(_placed(registry, "five", "h-c", reserve=False), "refused")
    _placed(registry, "six", "h-c", reserve=False)

    assert registry.tenants.load_by_host(["h-a", "h-b", "h-c", "h-d"]) == {
        "h-a": 2,
        "h-b": 1,
        "h-c": 1,
        "h-d": 0,
    }
    assert place(registry, ["h-a", "h-b", "h-c"]) == "h-b"  # a tie: the first named
    assert place(registry, ["h-c", "h-b", "h-a"]) == "h-c"
    assert place(registry, ["h-a", "h-b", "h-c", "h-d"]) == "h-d"
    assert place(registry, ["h-a"]) == "h-a"
    assert place(registry, []) is None


def test_a_submission_records_its_host_and_its_tenant_keeps_it(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    ctx = ServiceContext(local.registry, NoRuns(), hosts=("h-a",))
    submission = submit(ctx, Operator("alice"), _request("acme"))
    assert submission.request.worker_host == "h-a"
    tenant = phases.validate(_on(local, "h-a"), submission.request.request_id)
    assert tenant.worker_host == "h-a"
    record = local.registry.tenants.get("acme")
    assert record.worker_host == "h-a"
    # Every run of the tenant carries its host, for the UI and for a launcher that routes runs.
    assert provision_tags(submission.request)[WORKER_HOST_TAG] == "h-a"
    assert tenant_tags(record)[WORKER_HOST_TAG] == "h-a"


def _active_on(local: LocalPlatform, host: str | None, slug: str = "acme") -> str:
    """An active tenant placed on `host` (None: not placed), provisioned by phases run there;
    its tenant id."""
    request_id = _placed(local.registry, slug, host, reserve=False)
    ctx = _on(local, host or "h-any")
    tenant = phases.validate(ctx, request_id)
    phases.allocate(ctx, tenant)
    phases.deploy(ctx, tenant)
    phases.mark_active(ctx, tenant)
    emails.send_welcome_emails(ctx, tenant)
    return tenant.tenant_id


def test_a_decommission_on_another_host_releases_nothing_and_keeps_the_slug(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    tenant_id = _active_on(local, "h-a")
    tenant = local.registry.tenants.get_by_id(tenant_id).spec
    ledger = local.registry.ledger.entries(tenant_id)
    existing = local.existing()
    assert all(keys == {"acme-widgets"} for keys in existing.values())

    with pytest.raises(WrongHost, match="placed on host 'h-a'; this run is on host 'h-b'"):
        compensation.decommission(_on(local, "h-b"), tenant)
    with pytest.raises(WrongHost):
        compensation.compensate(_on(local, "h-b"), tenant, "some-failed-run")
    with pytest.raises(WrongHost):
        phases.deploy(_on(local, "h-b"), tenant)

    assert local.existing() == existing  # its workload, route and stores are all still there
    assert local.registry.ledger.entries(tenant_id) == ledger
    assert local.registry.tenants.get_by_id(tenant_id).state == TenantState.ACTIVE
    with pytest.raises(SlugInUse):  # the slug is still the tenant's
        local.registry.requests.submit(_request("acme"), exclusive_slug=True)

    compensation.decommission(_on(local, "h-a"), tenant)  # on its own host it goes
    assert all(keys == set() for keys in local.existing().values())
    assert local.registry.tenants.get_by_id(tenant_id).state == TenantState.DECOMMISSIONED


def test_a_decommission_run_on_another_host_fails_naming_both_hosts(
    local_platform: LocalPlatform,
) -> None:
    """The run's host comes from its own TENANT_HOST_NAME, through the `platform` resource."""
    local = local_platform
    tenant_id = _active_on(local, "h-a")
    record = local.registry.tenants.get_by_id(tenant_id)

    def decommission_run(host: str) -> tuple[bool, str]:
        job = build_reconstructable_job(
            "tests.job_target",
            "job_named",
            (DECOMMISSION_JOB, str(local.settings.data_dir), host),
        )
        config = tenant_op_config(record, "decommission")
        with execute_job(
            job,
            instance=local.instance,
            run_config=config,
            tags=tenant_tags(record),
            raise_on_error=False,
        ) as result:
            failures = [
                e.step_failure_data.error.to_string()
                for e in result.all_events
                if e.is_step_failure and e.step_failure_data.error is not None
            ]
            return result.success, " ".join(failures)

    success, failures = decommission_run("h-b")
    assert not success
    assert "tenant acme-widgets is placed on host 'h-a'; this run is on host 'h-b'" in failures
    assert all(keys == {"acme-widgets"} for keys in local.existing().values())
    assert local.registry.tenants.get_by_id(tenant_id).state == TenantState.ACTIVE

    success, _ = decommission_run("h-a")
    assert success
    assert local.registry.tenants.get_by_id(tenant_id).state == TenantState.DECOMMISSIONED


def _here_and_elsewhere(local: LocalPlatform, *, unplaced: bool = False) -> None:
    """Active tenants placed on this host and on another (and, if `unplaced`, one recorded
    before placement), all provisioned on this machine, then their workloads stopped, as after
    a stop of `tenantctl up`."""
    _active_on(local, local.settings.host_name, "here")
    _active_on(local, "h-elsewhere", "there")
    if unplaced:
        _active_on(local, None, "unplaced")  # acted on anywhere
    local.platform.deployer.stop_all()


def test_up_restores_the_workloads_of_its_own_hosts_tenants_only(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    _here_and_elsewhere(local, unplaced=True)

    restored = LocalWorkloads(local.settings).restore()

    assert sorted(restored) == ["here-widgets", "unplaced-widgets"]
    assert local.existing()["workload"] == {"here-widgets", "unplaced-widgets"}


def test_up_settles_the_interrupted_runs_of_its_own_host_only(
    local_platform: LocalPlatform,
) -> None:
    """A run of a tenant placed on another host is alive there: not interrupted by this stop."""
    instance = local_platform.instance
    here = local_platform.settings.host_name
    tags = {"here": {WORKER_HOST_TAG: here}, "there": {WORKER_HOST_TAG: "h-elsewhere"}, "old": {}}
    for run_id, run_tags in tags.items():
        instance.add_run(
            DagsterRun(
                job_name=DECOMMISSION_JOB,
                run_id=run_id,
                status=DagsterRunStatus.STARTED,
                tags=run_tags,
            )
        )

    assert sorted(settle_interrupted_runs(instance, here)) == ["here", "old"]

    runs = [instance.get_run_by_id(run_id) for run_id in tags]
    assert {run.run_id: run.status for run in runs if run is not None} == {
        "here": DagsterRunStatus.FAILURE,
        "there": DagsterRunStatus.STARTED,
        "old": DagsterRunStatus.FAILURE,
    }


def test_the_inventory_leaves_the_missing_things_of_another_hosts_tenants_to_that_host(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    _here_and_elsewhere(local)
    p = local.platform
    backends: list[TenantBackend] = [p.storage, p.identity, p.traffic, p.deployer]
    here = local.settings.host_name

    findings = take_inventory(local.registry.ledger, backends, frozenset(), None, here).findings

    assert findings == [Finding("ghost", "workload", "here-widgets")]
    everywhere = take_inventory(local.registry.ledger, backends, frozenset()).findings
    assert Finding("ghost", "workload", "there-widgets") in everywhere
