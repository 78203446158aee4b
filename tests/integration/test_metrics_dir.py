"""Where the stack's processes write their metric values: a directory of the stack's own, in
memory, off the data disk (a full data disk made a process writing a value fault with SIGBUS:
prometheus-client maps its files), private to the platform, and removed at the stop."""

import stat
from pathlib import Path

import pytest

from tenant_pipelines.localstack import up

pytestmark = pytest.mark.integration


def test_metric_files_live_in_memory_privately_and_go_with_the_stack(tmp_path: Path) -> None:
    assert up.METRICS_PARENT.is_dir(), "this machine has /dev/shm"
    with up.metrics_dir(tmp_path) as directory:
        assert directory.parent == up.METRICS_PARENT
        assert not directory.is_relative_to(tmp_path), "never on the data disk"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        (directory / "counter_1.db").write_bytes(b"\0" * 16)
    assert not directory.exists()


def test_without_dev_shm_the_data_directory_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up, "METRICS_PARENT", tmp_path / "no-shm")
    with up.metrics_dir(tmp_path) as directory:
        assert directory.parent == tmp_path
    assert not directory.exists()
