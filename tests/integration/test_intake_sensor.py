"""The intake sensor on a real instance: one run per request, whoever launches it."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from dagster import build_sensor_context
from sqlalchemy import update

from sensors.intake import UNCLAIMED_AFTER, build_intake_sensor, evaluate_intake
from tenant_pipelines.orchestration.jobs import provision_tenant
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.registry.schema import requests as requests_table
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration


def create_run_for(local: LocalPlatform, run_request) -> None:
    """What the daemon does with a RunRequest: create the run (it need not execute here)."""
    local.instance.create_run_for_job(
        provision_tenant, run_config=run_request.run_config, tags=run_request.tags
    )


def test_each_pending_request_is_launched_once(local_platform: LocalPlatform) -> None:
    local = local_platform
    request_id = str(uuid.uuid4())
    first = local.submit(slug="acme", request_id=request_id)
    again = local.submit(slug="acme", request_id=request_id)  # submitted twice: one request
    other = local.submit(slug="bolt")
    assert first.request_id == again.request_id

    tick = evaluate_intake(local.registry, local.instance, None)
    assert sorted(r.run_key for r in tick.run_requests) == sorted([request_id, other.request_id])
    assert json.loads(tick.cursor) == sorted([request_id, other.request_id])
    assert local.registry.requests.get(request_id).state == "launched"
    by_key = {r.run_key: r for r in tick.run_requests}
    assert by_key[request_id].tags["request_id"] == request_id
    assert by_key[request_id].run_config["ops"]["validate"]["config"]["slug"] == "acme"

    # The daemon created only one of the two runs (say it died midway): the next tick asks
    # again for the other one, under the same run key, and for nothing else.
    create_run_for(local, by_key[request_id])
    tick2 = evaluate_intake(local.registry, local.instance, tick.cursor)
    assert [r.run_key for r in tick2.run_requests] == [other.request_id]

    create_run_for(local, tick2.run_requests[0])
    tick3 = evaluate_intake(local.registry, local.instance, tick2.cursor)
    assert tick3.run_requests == [] and json.loads(tick3.cursor) == []


def test_a_request_launched_elsewhere_is_left_alone_until_it_looks_lost(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    request = local.submit()
    # `tenantctl request` won the CAS
    assert local.registry.requests.mark_launched(request.request_id)

    assert evaluate_intake(local.registry, local.instance, None).run_requests == []

    # The launcher died before creating the run; once the launch is old enough, catch up.
    long_ago = datetime.now(UTC) - UNCLAIMED_AFTER - timedelta(seconds=1)
    with local.registry.db.engine.begin() as conn:
        conn.execute(update(requests_table).values(updated_at=long_ago))
    tick = evaluate_intake(local.registry, local.instance, None)
    assert [r.run_key for r in tick.run_requests] == [request.request_id]

    create_run_for(local, tick.run_requests[0])  # and once a run exists, never again
    assert evaluate_intake(local.registry, local.instance, None).run_requests == []


def test_sensor_definition_with_build_sensor_context(local_platform: LocalPlatform) -> None:
    local = local_platform
    sensor = build_intake_sensor(1)
    resources = {"platform": TenantPlatform.for_settings(local.settings)}
    with build_sensor_context(instance=local.instance, resources=resources) as context:
        idle = sensor(context)
    assert idle.run_requests == []  # type: ignore[union-attr]
    assert idle.skip_reason.skip_message == "no pending tenant requests"  # type: ignore

    request = local.submit()
    with build_sensor_context(instance=local.instance, resources=resources) as context:
        result = sensor(context)
    assert [r.run_key for r in result.run_requests] == [request.request_id]  # type: ignore
    assert json.loads(result.cursor) == [request.request_id]  # type: ignore[union-attr]


def test_one_tick_tells_the_lost_launches_among_many_waiting_in_the_queue(
    local_platform: LocalPlatform,
) -> None:
    """A burst leaves many launched requests unclaimed for a while, their runs queued: a tick
    asks once which of them have runs, and launches again only those that have none."""
    local = local_platform
    submitted = [local.submit(slug=slug) for slug in ("acme", "bolt", "crux")]
    tick = evaluate_intake(local.registry, local.instance, None)
    by_key = {r.run_key: r for r in tick.run_requests}
    for request in submitted[:2]:
        create_run_for(local, by_key[request.request_id])
    long_ago = datetime.now(UTC) - UNCLAIMED_AFTER - timedelta(seconds=1)
    with local.registry.db.engine.begin() as conn:
        conn.execute(update(requests_table).values(updated_at=long_ago))

    again = evaluate_intake(local.registry, local.instance, None)
    assert [r.run_key for r in again.run_requests] == [submitted[2].request_id]
    assert local.instance.get_runs_count() == 2  # the sensor itself creates no run
