"""The code location loads: every job, sensor and resource."""

import pytest

from tenant_pipelines.definitions import build_definitions
from tenant_pipelines.settings import Settings
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration


def test_definitions_load_every_job_sensor_and_resource(local_platform: LocalPlatform) -> None:
    definitions = build_definitions(Settings.from_env())
    for name in ("provision_tenant", "compensate_tenant", "decommission_tenant"):
        assert definitions.get_job_def(name).name == name
    assert definitions.get_sensor_def("tenant_request_intake").minimum_interval_seconds == 1
    job = definitions.get_job_def("provision_tenant")
    assert [node.name for node in job.graph.nodes_in_topological_order] == [
        "validate",
        "allocate",
        "deploy",
        "mark_active",
        "send_welcome_emails",
    ]
    for node in job.graph.nodes:
        assert node.definition.retry_policy is not None  # every phase has a RetryPolicy
    definitions.validate_loadable(definitions)
