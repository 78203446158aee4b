"""`/v1/batches` through real HTTP against a running API server: a batch never reaches a tenant
its caller cannot see (a filter leaves another org's out; a named one is refused as an unknown
slug would be, with the same sentence), a role that may not act is refused before anything is
recorded, and a batch is nobody's to read but its caller's and a platform-admin's."""

from collections.abc import Iterator
from typing import Any

import pytest

from tenant_pipelines.domain.states import TenantState
from tests.api_helpers import World, api_server, seeded_platform
from tests.integration.test_api import OTHER, OWN, grant, tenant
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("batches")
    env, registry = seeded_platform(tmp)
    tokens = {
        "admin": grant(registry, "platform-admin"),
        "own": grant(registry, "org-admin", OWN, subject="ops"),
        "other": grant(registry, "org-admin", OTHER, subject="ops"),  # the same subject
        "viewer": grant(registry, "viewer", OWN),
    }
    tenant(registry, "theirs-failed", OTHER, TenantState.FAILED)
    with api_server(env, tmp / "api.log") as server:
        yield World(server, tokens)
    registry.close()


def finished(world: World, token: str, batch_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        batch = world.server.call("GET", f"/v1/batches/{batch_id}", token).json()
        return batch if batch["finished_at"] else None

    return wait_until(read, 30, f"batch {batch_id} never finished")


def test_a_filter_never_selects_another_orgs_tenant(world: World) -> None:
    body = {"action": "decommission", "filter": {"state": "failed", "org": OTHER}}
    answer = world.server.call("POST", "/v1/batches", world.tokens["own"], body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["count"] == 0


def test_another_orgs_tenant_named_is_refused_as_unknown(world: World) -> None:
    token = world.tokens["own"]
    body = {"action": "decommission", "slugs": ["theirs-failed", "never-made"]}
    batch = finished(
        world, token, world.server.call("POST", "/v1/batches", token, body).json()["id"]
    )
    details = {item["slug"]: (item["outcome"], item["detail"]) for item in batch["items"]}
    assert details == {
        "theirs-failed": ("refused", "no tenant or request with slug 'theirs-failed'"),
        "never-made": ("refused", "no tenant or request with slug 'never-made'"),
    }
    feed = world.server.call("GET", "/v1/events?type=tenant.batch.*", world.tokens["admin"])
    assert feed.json() == [], "nothing reported on a tenant the caller cannot see"


def test_a_viewer_starts_no_batch(world: World) -> None:
    body = {"action": "retry", "slugs": ["theirs-failed"]}
    answer = world.server.call("POST", "/v1/batches", world.tokens["viewer"], body)
    assert (answer.status_code, answer.json()["error"]) == (
        403,
        "role viewer may not retry tenants",
    )


def test_a_batch_is_read_by_its_caller_and_platform_admins_only(world: World) -> None:
    body = {"action": "retry", "filter": {"state": "failed"}}
    started = world.server.call("POST", "/v1/batches", world.tokens["own"], body).json()
    path = f"/v1/batches/{started['id']}"
    assert world.server.call("GET", path, world.tokens["own"]).status_code == 200
    assert world.server.call("GET", path, world.tokens["admin"]).status_code == 200
    for reader in ("other", "viewer"):  # another org's token with the same subject included
        answer = world.server.call("GET", path, world.tokens[reader])
        assert answer.status_code == 404, reader
        assert started["id"] in answer.json()["error"]
