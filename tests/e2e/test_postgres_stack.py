"""The whole stack on PostgreSQL: the Dagster instance, the registry and the tenant backends.

One `tenantctl up` for the module, on three fresh databases (dropped afterwards, with the
cluster-wide tenant roles this module made). The org name is unique per run, so the roles of two
runs sharing the server never collide. `free` is limited to one run at a time.
"""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_postgres import PostgresRunStorage

from resources.identity import pg_identity_schema
from resources.pg_tenant import object_name
from resources.storage import PG_DATA_SUFFIX, PostgresSchemaStorage
from tenant_pipelines.domain.tenant import TenantSpec
from tests.conftest import fresh_pg_database
from tests.e2e.matrix_helpers import runs_of, story
from tests.pg_helpers import (
    admin_sql,
    drop_our_roles,
    grants_mentioning,
    role_exists,
    schema_exists,
)
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ORG = f"pg{uuid.uuid4().hex[:6]}"
PHASES = ["validate", "allocate", "deploy", "mark_active", "send_welcome_emails"]
HAPPY = [
    ("started", "validate"),
    *[("step_completed", phase) for phase in PHASES[:4]],
    ("completed", "mark_active"),
    ("step_completed", "send_welcome_emails"),
]
DEPLOYMENT = "pgstack"  # TENANT_DEPLOYMENT: prefixes the tenants' role and schema names
HOLD_S = 2.0  # how long the queue is watched while a free run holds its only slot


@dataclass(frozen=True)
class Databases:
    dagster: str
    registry: str
    backends: str


@pytest.fixture(scope="module")
def databases(pg_admin_url: str) -> Iterator[Databases]:
    with (
        fresh_pg_database(pg_admin_url, "dagster") as dagster,
        fresh_pg_database(pg_admin_url, "registry") as registry,
        fresh_pg_database(pg_admin_url, "backends") as backends,
    ):
        try:
            yield Databases(dagster, registry, backends)
        finally:
            drop_our_roles(backends)


@pytest.fixture(scope="module", autouse=True)
def dagster_pg_url(databases: Databases) -> Iterator[None]:
    """This process opens the instance too (Stack.instance): its dagster.yaml reads the URL here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_PG_URL", databases.dagster)
        yield


@pytest.fixture(scope="module")
def stack_options(databases: Databases) -> StackOptions:
    env = {
        "DAGSTER_PG_URL": databases.dagster,
        "TENANT_DB_URL": databases.registry,
        "TENANT_BACKENDS": "postgres",
        "TENANT_BACKENDS_PG_URL": databases.backends,
        "TENANT_FREE_CONCURRENCY": "1",
        "TENANT_DEPLOYMENT": DEPLOYMENT,
    }
    return StackOptions(faults=True, env=env)


@pytest.fixture
def instance(stack: Stack) -> Iterator[DagsterInstance]:
    opened = stack.instance()
    try:
        yield opened
    finally:
        opened.dispose()


def faults(stack: Stack, *rules: dict[str, object]) -> None:
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, list(rules))


def submit(stack: Stack, slug: str, plan: str = "team") -> None:
    stack.cli(
        *("request", "--slug", slug, "--org", ORG, "--plan", plan),
        *(
            "--admin-email",
            f"admin@{slug}.example.com",
            "--caller",
            "pg",
            "--role",
            "platform-admin",
        ),
    )


def names(slug: str) -> list[str]:
    """The tenant's schemas (and roles of the same names): storage's, then identity's."""
    key = f"{slug}-{ORG}"
    return [object_name(key, PG_DATA_SUFFIX, DEPLOYMENT), pg_identity_schema(key, DEPLOYMENT)]


def inventory_clean(stack: Stack) -> None:
    result = stack.cli("inventory", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def wait_for_compensation(stack: Stack, slug: str) -> None:
    wait_until(
        lambda: ("compensation_finished", "compensate") in story(stack, slug),
        60,
        f"{slug} was never compensated",
        0.5,
    )


def test_request_to_active_with_everything_on_postgres(
    stack: Stack, databases: Databases, instance: DagsterInstance
) -> None:
    submit(stack, "acme")
    status = stack.wait_for_state("acme", {"active", "failed"})
    assert status["state"] == "active", status
    host = f"acme-{ORG}.localhost"
    answer = stack.edge_get(host, "/.well-known/openid-configuration")
    code, body = answer.status, answer.body
    assert code == 200 and json.loads(body)["issuer"] == f"https://{host}:{stack.https_port}"
    assert story(stack, "acme") == HAPPY

    # Each part on its PostgreSQL database: the runs, the registry, the tenant's schemas and roles.
    assert isinstance(instance.run_storage, PostgresRunStorage)
    (run,) = runs_of(instance, "acme", "provision_tenant")
    assert run.run_id == status["last_run_id"] and run.tags["plan"] == "team"
    assert "postgresql://" not in json.dumps(run.run_config), "URLs stay out of run config"
    assert admin_sql(
        databases.registry, "SELECT state FROM tenants WHERE slug = %s", ("acme",)
    ) == [("active",)]
    data_role, identity_role = names("acme")
    for name in (data_role, identity_role):
        assert schema_exists(databases.backends, name) and role_exists(databases.backends, name)
        [(can_login, password)] = admin_sql(
            databases.backends,
            "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s",
            (name,),
        )
        # Only the identity role logs in: its workload's, with a password the platform derives.
        assert can_login is (name == identity_role)
        assert (password or "").startswith("SCRAM-SHA-256$") is (name == identity_role)
    inventory_clean(stack)


def test_permanent_deploy_failure_is_compensated_then_retried_to_active(
    stack: Stack, databases: Databases
) -> None:
    faults(stack, {"phase": "deploy", "tenant": "broken", "mode": "permanent"})
    submit(stack, "broken")
    failed = stack.wait_for_state("broken", {"active", "failed"})
    assert failed["state"] == "failed" and failed["failed_step"] == "deploy"
    wait_for_compensation(stack, "broken")
    for name in names("broken"):
        assert not schema_exists(databases.backends, name), f"{name} survived compensation"
        assert not role_exists(databases.backends, name), f"role {name} survived compensation"
    inventory_clean(stack)

    faults(stack)
    stack.cli("retry", "broken", "--wait")
    assert stack.cli_json("status", "broken")["state"] == "active"  # type: ignore[index]
    for name in names("broken"):
        assert schema_exists(databases.backends, name) and role_exists(databases.backends, name)
    assert story(stack, "broken")[-5:] == [("started", "deploy"), *HAPPY[3:]]
    inventory_clean(stack)


def test_decommission_leaves_no_role_schema_or_grant(stack: Stack, databases: Databases) -> None:
    stack.cli("decommission", "acme", "--wait")
    assert stack.cli_json("status", "acme")["state"] == "decommissioned"  # type: ignore[index]
    for name in names("acme"):
        assert not schema_exists(databases.backends, name)
        assert not role_exists(databases.backends, name)
        assert grants_mentioning(databases.backends, name) == []
    inventory_clean(stack)


def test_inventory_names_an_orphan_schema(stack: Stack, databases: Databases) -> None:
    storage = PostgresSchemaStorage(admin_url=databases.backends)
    stray = TenantSpec(
        tenant_id="t-stray",
        request_id=str(uuid.uuid4()),
        slug="stray",
        org=ORG,
        plan="free",
        admin_email="admin@stray.example.com",
    )
    storage.ensure(stray)  # made behind the control plane's back: no ledger entry
    try:
        result = stack.cli("inventory", check=False)
        assert result.returncode == 1
        assert f"ORPHAN: storage of {stray.key}" in result.stdout
    finally:
        storage.release(stray.key)
    inventory_clean(stack)


def deploying(instance: DagsterInstance, slug: str) -> DagsterRunStatus | None:
    """The status of the tenant's provisioning run; None while it has none."""
    runs = runs_of(instance, slug, "provision_tenant")
    return runs[0].status if runs else None


def in_deploy(instance: DagsterInstance, slug: str) -> bool:
    for run in runs_of(instance, slug, "provision_tenant"):
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
        if run.status == DagsterRunStatus.STARTED and any(e.step_key == "deploy" for e in starts):
            return True
    return False


def run_spans(instance: DagsterInstance, slugs: list[str]) -> dict[str, tuple[float, float]]:
    """(start, end) of each tenant's provisioning run, once every one has ended: a tenant is
    `active` from Mark active on, while its run still sends the welcome emails."""

    def ended() -> dict[str, tuple[float, float]] | None:
        records = {
            slug: instance.get_run_records(
                RunsFilter(job_name="provision_tenant", tags={"tenant": slug})
            )[0]
            for slug in slugs
        }
        span = {slug: (r.start_time, r.end_time) for slug, r in records.items()}
        if not all(start and end for start, end in span.values()):
            return None
        return {slug: (float(start or 0), float(end or 0)) for slug, (start, end) in span.items()}

    return wait_until(ended, 60, "the runs did not end", 0.2)


def test_free_runs_one_at_a_time_while_a_team_run_proceeds(
    stack: Stack, instance: DagsterInstance
) -> None:
    free, team = ["free-one", "free-two"], "team-one"
    # Every deploy blocks until the plan is rewritten: whatever starts holds its slot meanwhile.
    faults(
        stack,
        *[{"phase": "deploy", "tenant": s, "mode": "hang", "times": 1} for s in [*free, team]],
    )
    # The team run first: its deploy may hang 25 s before it times out, a free one's only 15 s.
    submit(stack, team, plan="team")
    for slug in free:
        submit(stack, slug, plan="free")

    wait_until(
        lambda: in_deploy(instance, team) and any(in_deploy(instance, s) for s in free),
        60,
        "the team run and a free run never ran together",
        0.2,
    )
    running = next(s for s in free if in_deploy(instance, s))
    waiting = next(s for s in free if s != running)
    time.sleep(HOLD_S)  # dequeue passes every second: the second free run had its chances
    assert deploying(instance, waiting) == DagsterRunStatus.QUEUED
    faults(stack)

    for slug in [*free, team]:
        assert stack.wait_for_state(slug, {"active", "failed"})["state"] == "active"
    span = run_spans(instance, [*free, team])
    first, second = sorted(span[s] for s in free)
    assert first[1] <= second[0], f"the free runs overlapped: {span}"
    t_start, t_end = span[team]
    assert any(t_start < end and start < t_end for start, end in (first, second)), span
    inventory_clean(stack)
