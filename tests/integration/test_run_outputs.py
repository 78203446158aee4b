"""Ops' outputs are kept where and as Dagster's default IO manager keeps them (so a re-execution
across the change loads them), readable by the platform only, without an event per file."""

import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    FilesystemIOManager,
    InputContext,
    JobDefinition,
    build_init_resource_context,
    build_input_context,
    build_output_context,
    job,
    op,
)

from tenant_pipelines.runtime.run_outputs import RunOutputFiles

pytestmark = pytest.mark.integration

VALUE = {"tenant": "acme-widgets", "admin_email": "admin@acme.example"}


@op
def produce() -> dict[str, str]:
    return VALUE


@op
def consume(value: dict[str, str]) -> str:
    assert value == VALUE
    return value["tenant"]


def two_step_job(io_manager: Any) -> JobDefinition:
    @job(resource_defs={"io_manager": io_manager})
    def passing() -> None:
        consume(produce())

    return passing


def run_with(instance: DagsterInstance, io_manager: Any) -> str:
    result = two_step_job(io_manager).execute_in_process(instance=instance)
    assert result.success
    return str(result.run_id)


def file_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if "file" in entry.user_message.lower() and not entry.dagster_event
    ]


@pytest.fixture
def instance(tmp_path: Path) -> DagsterInstance:
    home = tmp_path / "home"
    home.mkdir()
    return DagsterInstance.local_temp(str(home))


def test_outputs_are_kept_as_fs_io_manager_keeps_them_without_events(
    instance: DagsterInstance,
) -> None:
    ours = run_with(instance, RunOutputFiles())
    theirs = run_with(instance, FilesystemIOManager())
    storage = Path(instance.storage_directory())
    for run_id in (ours, theirs):
        with (storage / run_id / "produce" / "result").open("rb") as file:
            assert pickle.load(file) == VALUE
    assert file_messages(instance, ours) == []
    assert len(file_messages(instance, theirs)) == 3  # written twice, loaded once


def test_an_output_file_is_the_platforms_alone(instance: DagsterInstance) -> None:
    run_id = run_with(instance, RunOutputFiles())
    path = Path(instance.storage_directory()) / run_id / "produce" / "result"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "result"]  # no temporary left


def test_an_output_fs_io_manager_wrote_loads_in_a_later_run(instance: DagsterInstance) -> None:
    """What a re-execution from failure does across the change: it loads the parent's output."""
    parent = run_with(instance, FilesystemIOManager())
    manager = RunOutputFiles().create_io_manager(build_init_resource_context(instance=instance))
    path = Path(instance.storage_directory()) / parent / "produce" / "result"
    assert path.exists()
    assert manager.load_input(input_from(parent, instance)) == VALUE


def input_from(run_id: str, instance: DagsterInstance) -> InputContext:
    upstream = build_output_context(step_key="produce", name="result", run_id=run_id)
    return build_input_context(upstream_output=upstream, instance=instance)
