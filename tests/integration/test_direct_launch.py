"""The API server's direct launch, for a workspace whose code location is a code server
(`grpc_server`, as on a worker host) as well as one it loads from Python: the run is created with
the location the UI knows and an origin a run worker can load, and is submitted at once."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, instance_for_test
from dagster._utils.hosted_user_process import recon_job_from_origin

from tenant_pipelines.orchestration.graphql import LOCATION
from tenant_pipelines.runtime.direct_launch import DirectLauncher
from tenant_pipelines.service.jobs import PROVISION_JOB

pytestmark = pytest.mark.integration

WORKSPACES = {
    "python_module": (
        "load_from:\n  - python_module:\n      module_name: tenant_pipelines.definitions\n"
        f"      attribute: defs\n      location_name: {LOCATION}\n"
    ),
    "grpc_server": (
        "load_from:\n  - grpc_server:\n      host: localhost\n      port: 4266\n"
        f"      location_name: {LOCATION}\n"
    ),
}
CONFIG = {
    "ops": {
        "validate": {"config": {"request_id": "r1", "slug": "acme", "org": "o", "plan": "team"}}
    }
}


@pytest.fixture
def queued_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    monkeypatch.setenv("TENANT_DATA_DIR", str(tmp_path / "data"))
    overrides = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
        }
    }
    home = tmp_path / "dagster"
    home.mkdir()
    with instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
        yield instance


@pytest.mark.parametrize("kind", sorted(WORKSPACES))
def test_a_run_is_created_and_queued_whatever_kind_of_code_location(
    queued_instance: DagsterInstance, tmp_path: Path, kind: str
) -> None:
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(WORKSPACES[kind])

    run_id = DirectLauncher(queued_instance, workspace).launch(PROVISION_JOB, CONFIG, {"t": "1"})

    run = queued_instance.get_run_by_id(run_id)
    assert run is not None and run.status == DagsterRunStatus.QUEUED
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == LOCATION
    assert run.job_code_origin is not None
    loaded = recon_job_from_origin(run.job_code_origin).get_definition()
    assert loaded.name == PROVISION_JOB
