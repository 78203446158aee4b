"""Steps' stdout and stderr are captured to the files the UI reads, without the mirroring
processes Dagster's local compute log manager starts for each run."""

import json
import os
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, OpExecutionContext, job, op

from tenant_pipelines.runtime.compute_logs import FileComputeLogManager
from tenant_pipelines.support.procs import descendants

pytestmark = pytest.mark.integration


@op
def speak(context: OpExecutionContext) -> None:
    """Prints on both streams and says which processes run below this one meanwhile."""
    helpers = sorted(descendants([os.getpid()]).values())
    print(f"children: {json.dumps(helpers)}")
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)


@job
def speaking_job() -> None:
    speak()


def instance_with(home: Path, manager: str) -> DagsterInstance:
    home.mkdir()
    modules = {
        "ours": ("tenant_pipelines.runtime.compute_logs", "FileComputeLogManager"),
        "dagster": ("dagster.core.storage.local_compute_log_manager", "LocalComputeLogManager"),
    }
    module, cls = modules[manager]
    (home / "dagster.yaml").write_text(
        f"compute_logs:\n  module: {module}\n  class: {cls}\n"
        f"  config:\n    base_dir: '{home / 'storage'}'\n"
        "telemetry:\n  enabled: false\n"
    )
    return DagsterInstance.from_config(str(home))


def captured(instance: DagsterInstance, run_id: str) -> tuple[str, str]:
    manager = instance.compute_log_manager
    (file_key,) = {
        entry.dagster_event.logs_captured_data.file_key
        for entry in instance.all_logs(run_id)
        if entry.dagster_event and entry.dagster_event.event_type_value == "LOGS_CAPTURED"
    }
    data = manager.get_log_data(manager.build_log_key_for_run(run_id, file_key))
    return (data.stdout or b"").decode(), (data.stderr or b"").decode()


def children_seen(stdout: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith("children: "))
    return json.loads(line.removeprefix("children: "))


@pytest.mark.parametrize("manager", ["ours", "dagster"])
def test_steps_output_is_captured_with_no_mirroring_process(tmp_path: Path, manager: str) -> None:
    with instance_with(tmp_path / "home", manager) as instance:
        if manager == "ours":
            assert isinstance(instance.compute_log_manager, FileComputeLogManager)
        result = speaking_job.execute_in_process(instance=instance)
        assert result.success
        stdout, stderr = captured(instance, result.run_id)
    assert "to stdout" in stdout and "to stderr" in stderr
    mirrors = [cmd for cmd in children_seen(stdout) if "tail" in cmd or "watch_orphans" in cmd]
    # Dagster's own manager is the yardstick: it runs a tail and a watcher per stream.
    assert (mirrors == []) if manager == "ours" else (len(mirrors) >= 2)
