"""`tenantctl inventory`: backends held against the ledger, on real local backends."""

import uuid

import pytest

from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga import phases
from tenant_pipelines.saga.inventory import take_inventory
from tests.integration.test_cli import tenantctl
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration


def backends(local: LocalPlatform) -> list:
    p = local.platform
    return [p.storage, p.identity, p.traffic, p.deployer]


def test_clean_after_provisioning_then_orphans_and_ghosts_are_named(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    ctx = local.phase_context(str(uuid.uuid4()))
    tenant = phases.validate(ctx, local.submit().request_id)
    phases.allocate(ctx, tenant)
    assert take_inventory(local.registry.ledger, backends(local), frozenset()).clean

    # An orphan: storage made for a tenant the ledger knows nothing of.
    stray = TenantSpec(
        tenant_id="x",
        request_id="y",
        slug="stray",
        org="leak",
        plan="free",
        admin_email="a@leak.example.com",
    )
    local.platform.storage.ensure(stray)
    # A ghost: the ledger says allocated, the backend has nothing.
    local.platform.identity.release(tenant.key)

    result = tenantctl(local, "inventory")
    assert result.returncode == 1
    assert "ORPHAN: storage of stray-leak" in result.stdout
    assert "GHOST: identity of acme-widgets" in result.stdout
    findings = take_inventory(local.registry.ledger, backends(local), frozenset()).findings
    assert {(f.problem, f.kind, f.tenant_key) for f in findings} == {
        ("orphan", "storage", "stray-leak"),
        ("ghost", "identity", "acme-widgets"),
    }
