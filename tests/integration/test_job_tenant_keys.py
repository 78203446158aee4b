"""One tenant key, one tenant, with the real provisioning job and the real local backends: a
request that reaches Validate for a key another tenant holds (a race past submission) ends
rejected with a reason naming only its own slug and org, its run fails once without retries,
and nothing of the first tenant is touched. `tenantctl request` refuses it up front (exit 2)."""

import os
import subprocess

import pytest
from dagster import DagsterEventType

from tests.platform_fixtures import LocalPlatform
from tests.stack_helpers import REPO, TENANTCTL

pytestmark = pytest.mark.integration

KEY = "shop-prod-zeta"
REASON = "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken"


def files_under(local: LocalPlatform) -> dict[str, bytes]:
    """Every backend file of the data directory (storage, identity, routes, outbox, state)."""
    data = local.settings.data_dir
    return {
        str(p.relative_to(data)): p.read_bytes()
        for folder in ("storage", "identity", "outbox", "workloads")
        if (data / folder).exists()
        for p in sorted((data / folder).rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


def test_a_key_race_lost_at_validate_rejects_the_request_and_touches_nothing(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    first = local.submit("shop-prod", "zeta")
    _, success, _ = local.provision(first.request_id)
    assert success
    holder = local.registry.tenants.get("shop-prod")
    ledger = local.registry.ledger.entries(holder.tenant_id)
    before = (files_under(local), local.existing())

    loser = local.submit("shop", "prod-zeta")  # recorded past the submission check
    _, success, events = local.provision(loser.request_id)

    assert not success
    assert events.count(DagsterEventType.STEP_FAILURE) == 1  # one attempt: never retried
    assert DagsterEventType.STEP_UP_FOR_RETRY not in events
    request = local.registry.requests.get(loser.request_id)
    assert (request.state, request.reason, request.tenant_id) == ("rejected", REASON, None)
    assert [t.slug for t in local.registry.tenants.all()] == ["shop-prod"]
    assert (files_under(local), local.existing()) == before
    assert local.registry.ledger.entries(holder.tenant_id) == ledger
    assert local.registry.tenants.get("shop-prod").state == "active"
    assert local.platform.traffic.is_open(KEY)


def test_tenantctl_request_refuses_a_key_held_under_another_split(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    holder = local.submit("shop-prod", "zeta")
    local.registry.tenants.reserve(holder)
    env = {
        **os.environ,
        "TENANT_DATA_DIR": str(local.settings.data_dir),
        "DAGSTER_HOME": str(local.settings.dagster_home),
    }
    args = ["--slug", "shop", "--org", "prod-zeta", "--plan", "team"]
    args += ["--admin-email", "a@prod-zeta.example.com", "--caller", "bob", "--role", "org-admin"]

    refused = subprocess.run(
        [TENANTCTL, "request", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )

    assert refused.returncode == 2
    # The host's operator sees every org: the holder is named.
    assert refused.stderr == (
        f"tenantctl: {REASON} by tenant shop-prod of org zeta (provisioning)\n"
    )
    assert local.registry.requests.in_progress() == []
    assert local.registry.requests.latest_for_slug("shop") is None
