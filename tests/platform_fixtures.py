"""A real local platform in a temporary directory: settings, registry, instance, backends."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_reconstructable_job,
    execute_job,
)

from tenant_pipelines.composition import Platform, build_platform
from tenant_pipelines.domain.events import AuditEvent
from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.service.jobs import provision_run_config, provision_tags
from tenant_pipelines.settings import Settings


@dataclass
class LocalPlatform:
    settings: Settings
    platform: Platform
    registry: TenantRegistry
    instance: DagsterInstance
    events: list[AuditEvent]

    def submit(
        self,
        slug: str = "acme",
        org: str = "widgets",
        plan: str = "team",
        role: str = "org-admin",
        request_id: str | None = None,
    ) -> RequestRecord:
        fields: dict[str, object] = {
            "slug": slug,
            "org": org,
            "plan": plan,
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "alice", "role": role},
        }
        if request_id:
            fields["request_id"] = request_id
        record, _ = self.registry.requests.submit(TenantRequest.parse(fields))
        return record

    def provision(self, request_id: str) -> tuple[str, bool, list[DagsterEventType]]:
        """Run `provision_tenant` through Dagster on the persistent instance:
        (run id, success, event types)."""
        record = self.registry.requests.get(request_id)
        job = build_reconstructable_job(
            "tests.job_target", "job_named", ("provision_tenant", str(self.settings.data_dir))
        )
        with execute_job(
            job,
            instance=self.instance,
            run_config=provision_run_config(record),
            tags=provision_tags(record),
            raise_on_error=False,
        ) as result:
            return result.run_id, result.success, [e.event_type for e in result.all_events]

    def phase_context(self, run_id: str, root_run_id: str | None = None) -> SagaContext:
        return SagaContext(
            registry=self.registry,
            backends=self.platform.backends(),
            served_at=self.settings.served_at,
            run_id=run_id,
            emit=self.events.append,
            root_run_id=root_run_id,
        )

    def existing(self) -> dict[str, set[str]]:
        p = self.platform
        return {b.kind: b.list_existing() for b in (p.storage, p.identity, p.traffic, p.deployer)}


def embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default under `tmp_path`, whatever the developer's shell selects
    (deploy/postgres.env, a SendGrid key, ...)."""
    for name in [n for n in os.environ if n.startswith(("TENANT_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    monkeypatch.setenv("TENANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))


@contextmanager
def platform_on(settings: Settings) -> Iterator[LocalPlatform]:
    """The platform's adapters and Dagster instance for `settings`; workloads stopped after."""
    platform = build_platform(settings)
    instance = open_instance(settings.dagster_home, settings)
    local = LocalPlatform(settings, platform, platform.registry, instance, [])
    try:
        yield local
    finally:
        platform.deployer.stop_all()
        instance.dispose()


@pytest.fixture
def local_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlatform]:
    embedded_default(tmp_path, monkeypatch)
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True)
    with platform_on(settings) as local:
        yield local
