"""A request whose run failed before a tenant existed: status, diagnose, discard, and the slug
it holds, through `tenantctl` against a real registry and instance (no stack)."""

import json

import pytest

from tests.integration.test_cli import VALID, platform_api_server, tenantctl
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration


def stuck_request(local: LocalPlatform) -> tuple[str, str]:
    """A launched request whose run failed in Validate for a reason that is not a refusal (here:
    another run, which never ran, had claimed it); (request id, failed run id)."""
    request = local.submit()
    local.registry.requests.mark_launched(request.request_id)
    local.registry.requests.claim(request.request_id, "run-that-died")
    run_id, success, _ = local.provision(request.request_id)
    assert not success
    return request.request_id, run_id


def test_a_request_stuck_before_its_tenant_shows_and_can_be_discarded(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    request_id, run_id = stuck_request(local)

    status = json.loads(tenantctl(local, "status", "acme", "--json").stdout)
    assert (status["state"], status["request_id"]) == ("request-launched", request_id)
    diagnosis = json.loads(tenantctl(local, "diagnose", "acme", "--json").stdout)
    assert (diagnosis["state"], diagnosis["next_action"]) == ("request-launched", "retry")
    assert diagnosis["commands"] == ["tenantctl retry acme --wait", "tenantctl discard acme"]
    [run] = diagnosis["runs"]
    assert (run["run_id"], run["status"], run["failed_step"]) == (run_id, "FAILURE", "validate")
    assert "already owned by run run-that-died" in diagnosis["failure_reason"]
    text = tenantctl(local, "diagnose", "acme").stdout
    assert "$ tenantctl discard acme" in text

    rival = list(VALID)
    rival[rival.index("--org") + 1] = "rivals"
    taken = tenantctl(local, "request", *rival)
    assert taken.returncode == 2 and f"taken by request {request_id}, in flight" in taken.stderr

    discarded = tenantctl(local, "discard", "acme", "--json")
    assert discarded.returncode == 0, discarded.stderr
    assert json.loads(discarded.stdout) == {
        "request_id": request_id,
        "slug": "acme",
        "state": "rejected",
    }
    record = local.registry.requests.get(request_id)
    assert record.state == "rejected" and (record.reason or "").startswith("discarded by operator:")
    assert local.registry.tenants.all() == []

    again = tenantctl(local, "discard", "acme")
    assert (again.returncode, again.stderr) == (
        3,
        "tenantctl: slug acme has no request waiting without a tenant\n",
    )
    assert tenantctl(local, "request", *rival).returncode == 0  # the slug is free again


def test_retry_and_compensate_of_an_active_tenant_are_refused_with_exit_3(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    _, success, _ = local.provision(local.submit().request_id)
    assert success
    # The platform is "up" as far as these commands know: its API server answers /local (it
    # serves no Dagster UI, so it could launch nothing). Each refusal comes from the tenant's
    # state, before anything is launched.
    with platform_api_server(local):
        for command, state in (("retry", "active"), ("compensate", "active")):
            refused = tenantctl(local, command, "acme")
            assert refused.returncode == 3, refused.stderr
            assert refused.stderr.startswith(f"tenantctl: tenant acme is {state}; only a failed")
    assert local.registry.operations.all() == []  # a refused command leaves no claim
