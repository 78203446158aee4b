"""Fault injection around the real local backends: counts across processes, hangs, live edits."""

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, ResourceParam, RetryPolicy, job, op

from resources import fault_plan
from resources.fault_plan import FAULT_PLAN_ENV, INJECTED_REASON
from resources.faults import FaultyMailer, FaultyTrafficBoundary
from resources.mailer import OutboxMailer
from resources.traffic import LocalEdgeRoutes
from tenant_pipelines.composition import (
    Platform,
    build_platform,
    build_real_platform,
    deployment_config,
    with_faults,
)
from tenant_pipelines.domain.errors import FaultPlanError, InjectedFault, PermanentInjectedFault
from tenant_pipelines.domain.handles import Handle
from tenant_pipelines.domain.mail import OutgoingEmail
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.settings import Settings
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DOMAIN = "localhost"
JOIN_TIMEOUT_S = 10.0


def tenant(slug: str = "acme", org: str = "corp") -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org=org,
        plan="free",
        admin_email=f"admin@{org}.example",
    )


def hanging(plan_path: Path, phase: str) -> bool:
    """Whether the plan's first rule, a hang in `phase`, fired: it is counted before it blocks."""
    fired = Path(f"{plan_path}.counts.json").exists() and counts(plan_path)
    return bool(fired) and any(key.startswith(f"0:{phase}:") for key in fired)


def write_plan(path: Path, rules: list[dict[str, Any]] | str) -> None:
    """Replace the plan atomically, as a drill should."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(rules if isinstance(rules, str) else json.dumps(rules))
    os.replace(tmp, path)


def counts(plan_path: Path) -> dict[str, int]:
    return json.loads(Path(f"{plan_path}.counts.json").read_text())


@pytest.fixture
def plan_path(tmp_path: Path) -> Path:
    path = tmp_path / "drill" / "plan.json"
    path.parent.mkdir()
    return path


@pytest.fixture
def platform(data_dir: Path, plan_path: Path, tmp_path: Path) -> Iterator[Platform]:
    settings = Settings.from_env(
        {"TENANT_DATA_DIR": str(data_dir), "TENANT_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}
    )
    real = build_real_platform(deployment_config(settings))
    try:
        yield with_faults(real, str(plan_path))
    finally:
        real.deployer.stop_all()


def allocate(platform: Platform, spec: TenantSpec) -> Handle:
    """Allocate's three ensures, in the phase's order."""
    platform.storage.ensure(spec)
    platform.identity.ensure(spec)
    return platform.traffic.ensure(spec)


def test_transient_fails_the_first_n_calls_then_passes(platform: Platform, plan_path: Path) -> None:
    write_plan(plan_path, [{"phase": "allocate", "tenant": "ac*", "mode": "transient", "times": 2}])
    for _ in range(2):
        with pytest.raises(InjectedFault, match="injected fault: transient allocate for 'acme'"):
            allocate(platform, tenant())
        # The fault hits the last ensure: storage and identity are already there.
        assert platform.storage.list_existing() == {"acme-corp"}
        assert platform.identity.list_existing() == {"acme-corp"}
        assert platform.traffic.list_existing() == set()
    assert allocate(platform, tenant()).details == {"state": "closed"}
    assert allocate(platform, tenant("beta")).name == "beta-corp.localhost"
    assert counts(plan_path) == {"0:allocate:acme": 2}


def ensure_routes(data_dir: str, plan_path: str, slug: str, calls: int) -> list[str]:
    """In a child process: `calls` allocate calls for one tenant, each 'fault' or 'ok'."""
    routes = FaultyTrafficBoundary(
        inner=LocalEdgeRoutes(data_dir=data_dir, domain=DOMAIN), plan_path=plan_path
    )
    outcomes = []
    for _ in range(calls):
        try:
            routes.ensure(tenant(slug))
            outcomes.append("ok")
        except InjectedFault:
            outcomes.append("fault")
    return outcomes


def test_transient_counts_are_shared_between_processes(data_dir: Path, plan_path: Path) -> None:
    write_plan(
        plan_path,
        [
            {"phase": "allocate", "tenant": "acme", "mode": "transient", "times": 3},
            {"phase": "allocate", "tenant": "beta", "mode": "transient", "times": 4},
        ],
    )
    spawn = multiprocessing.get_context("spawn")
    args = (str(data_dir), str(plan_path))
    with spawn.Pool(1) as first:
        assert first.apply(ensure_routes, (*args, "acme", 2)) == ["fault", "fault"]
    with spawn.Pool(1) as second:
        assert second.apply(ensure_routes, (*args, "acme", 2)) == ["fault", "ok"]
    with spawn.Pool(2) as racing:
        results = racing.starmap(ensure_routes, [(*args, "beta", 5)] * 2)
    assert sorted(o for r in results for o in r) == ["fault"] * 4 + ["ok"] * 6
    assert counts(plan_path) == {"0:allocate:acme": 3, "1:allocate:beta": 4}


def test_permanent_always_fails_and_deploys_nothing(platform: Platform, plan_path: Path) -> None:
    write_plan(plan_path, [{"phase": "deploy", "mode": "permanent", "times": 1}])
    for _ in range(3):
        with pytest.raises(PermanentInjectedFault, match="permanent deploy"):
            platform.deployer.ensure(tenant())
    assert platform.deployer.list_existing() == set()
    assert not Path(f"{plan_path}.counts.json").exists()


def test_a_hang_blocks_until_the_drill_removes_its_rule(
    platform: Platform, plan_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fault_plan, "HANG_POLL_S", 0.02)
    hang = {"phase": "mark_active", "mode": "hang"}
    other = {"phase": "deploy", "tenant": "zeta", "mode": "permanent"}
    write_plan(plan_path, [hang, other])
    allocate(platform, tenant())
    opened: list[Handle] = []
    worker = threading.Thread(target=lambda: opened.append(platform.traffic.open(tenant())))
    worker.start()
    wait_until(lambda: hanging(plan_path, "mark_active"), JOIN_TIMEOUT_S, "the call never hung")
    assert worker.is_alive()
    assert not platform.traffic.is_open("acme-corp")
    write_plan(plan_path, [other])
    worker.join(JOIN_TIMEOUT_S)
    assert not worker.is_alive()
    assert opened[0].details == {"state": "open"}
    write_plan(plan_path, [hang, other])  # the one counted hang is spent: calls pass
    started = time.monotonic()
    platform.traffic.open(tenant())
    assert time.monotonic() - started < 1.0


def test_a_hang_ends_by_itself_after_hang_s(
    platform: Platform, plan_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fault_plan, "HANG_S", 0.3)
    monkeypatch.setattr(fault_plan, "HANG_POLL_S", 0.05)
    write_plan(plan_path, [{"phase": "allocate", "mode": "hang", "times": 2}])
    started = time.monotonic()
    assert allocate(platform, tenant()).details == {"state": "closed"}
    assert time.monotonic() - started >= 0.3


def test_the_plan_is_read_at_every_call(
    platform: Platform, plan_path: Path, data_dir: Path
) -> None:
    allocate(platform, tenant())  # no plan file: no faults
    write_plan(plan_path, [{"phase": "mark_active", "tenant": "acme", "mode": "permanent"}])
    with pytest.raises(PermanentInjectedFault):
        platform.traffic.open(tenant())
    write_plan(plan_path, [{"phase": "deploy", "mode": "transient", "times": 5}])
    with pytest.raises(InjectedFault):
        platform.deployer.ensure(tenant())
    plan_path.unlink()  # deleted mid-way: every fault is gone
    assert platform.traffic.open(tenant()).details == {"state": "open"}
    handle = platform.deployer.ensure(tenant())
    assert platform.deployer.list_existing() == {"acme-corp"}
    assert Path(f"/proc/{handle.details['pid']}/cmdline").exists()


def test_a_malformed_plan_fails_the_call_naming_the_rule(
    platform: Platform, plan_path: Path
) -> None:
    write_plan(plan_path, [{"phase": "deploy", "mode": "transient"}, {"phase": "deploy"}])
    with pytest.raises(FaultPlanError, match=r"plan\.json: rule 1, field 'mode': Field required"):
        platform.deployer.ensure(tenant())


def test_every_other_method_passes_through(platform: Platform, plan_path: Path) -> None:
    phases = ("allocate", "deploy", "mark_active", "send_welcome_emails")
    write_plan(plan_path, [{"phase": p, "mode": "permanent"} for p in phases])
    spec = tenant()
    assert platform.storage.ensure(spec).kind == "storage"
    assert platform.identity.ensure(spec).details["admin_email"] == "admin@corp.example"
    assert platform.identity.invitation(spec.key).email == "admin@corp.example"
    backends = (platform.storage, platform.identity, platform.traffic, platform.deployer)
    assert [b.kind for b in backends] == ["storage", "identity", "route", "workload"]
    assert [b.list_existing() for b in backends] == [{spec.key}, {spec.key}, set(), set()]
    assert not platform.traffic.is_open(spec.key)
    assert platform.deployer.stop_all() == []
    assert [b.release(spec.key) for b in backends] == [True, True, False, False]
    assert platform.storage.list_existing() == set()


def email(slug: str = "acme") -> OutgoingEmail:
    return OutgoingEmail(
        kind="welcome",
        tenant_key=f"{slug}-corp",
        tenant_slug=slug,
        to="admin@corp.example",
        from_email="Platform <platform@example.com>",
        subject="Welcome",
        text="Welcome.",
        html="<p>Welcome.</p>",
        idempotency_key="r-1:email:welcome",
        tenant_id=f"t-{slug}",
    )


def test_the_mailer_returns_faults_as_failed_results(platform: Platform, plan_path: Path) -> None:
    outbox = platform.mailer.inner
    assert isinstance(platform.mailer, FaultyMailer) and isinstance(outbox, OutboxMailer)
    assert platform.mailer.from_email == outbox.from_email
    write_plan(
        plan_path,
        [
            {"phase": "send_welcome_emails", "tenant": "acme", "mode": "permanent"},
            {"phase": "send_welcome_emails", "tenant": "beta", "mode": "transient"},
        ],
    )
    for slug in ("acme", "acme", "beta"):
        result = platform.mailer.send(email(slug))
        assert (result.ok, result.reason, result.maybe_delivered) == (False, INJECTED_REASON, False)
    assert platform.mailer.send(email("beta")).ok
    assert outbox.outbox_path("beta-corp", "welcome").exists()
    assert not outbox.outbox_path("acme-corp", "welcome").exists()
    write_plan(plan_path, "{not json")
    broken = platform.mailer.send(email("beta"))
    assert not broken.ok and not broken.maybe_delivered
    assert "not valid JSON" in (broken.reason or "")


def test_the_environment_switches_faults_on(tmp_path: Path) -> None:
    plain = build_platform(Settings.from_env({"TENANT_DATA_DIR": str(tmp_path)}))
    assert not isinstance(plain.traffic, FaultyTrafficBoundary)
    drill = Settings.from_env({"TENANT_DATA_DIR": str(tmp_path), FAULT_PLAN_ENV: "drill.json"})
    wrapped = build_platform(drill)
    assert isinstance(wrapped.traffic, FaultyTrafficBoundary)
    assert wrapped.traffic.plan_path == os.path.abspath("drill.json")


SPEC = tenant("jobby")


@op(retry_policy=RetryPolicy(max_retries=2))
def allocate_route(platform: ResourceParam[Platform]) -> str:
    assert isinstance(platform.traffic, FaultyTrafficBoundary)
    return str(allocate(platform, SPEC).details["state"])


@job
def fault_drill() -> None:
    allocate_route()


def test_a_wrapped_platform_runs_in_a_dagster_job(platform: Platform, plan_path: Path) -> None:
    write_plan(plan_path, [{"phase": "allocate", "tenant": "jobby", "mode": "transient"}])
    result = fault_drill.execute_in_process(resources={"platform": platform})
    assert result.success
    assert result.output_for_node("allocate_route") == "closed"
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 1
    assert "injected fault" in str(retries[0].event_specific_data)


def test_a_permanent_fault_fails_the_dagster_run(platform: Platform, plan_path: Path) -> None:
    write_plan(plan_path, [{"phase": "allocate", "mode": "permanent"}])
    result = fault_drill.execute_in_process(resources={"platform": platform}, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "PermanentInjectedFault" in failure.to_string()
