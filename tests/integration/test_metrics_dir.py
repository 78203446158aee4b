"""Where the stack's processes write their metric values: a directory of the stack's own, in
memory, off the data disk (a full data disk made a process writing a value fault with SIGBUS:
prometheus-client maps its files), private to the platform, and removed at the stop; or, when
its `up` was killed before it could remove it, by the next `up`."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tenant_pipelines.localstack import up
from tenant_pipelines.support.procs import identity

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


def named_after(process: str, parent: Path) -> Path:
    path = parent / f"{up.METRICS_PREFIX}{process.replace(':', '-')}-k3x9"
    path.mkdir()
    (path / "counter_1.db").write_bytes(b"\0" * 64)
    return path


def test_the_directory_of_an_up_that_is_gone_is_removed_and_no_other(tmp_path: Path) -> None:
    """A killed `up` (SIGKILL, the OOM killer) never removes its directory, and each one left
    would hold its files in memory until the next reboot."""
    killed = subprocess.Popen(["sleep", "30"])
    dead = identity(killed.pid)
    killed.kill()
    killed.wait()
    gone = named_after(dead, tmp_path)
    live = named_after(identity(os.getpid()), tmp_path)
    unnamed = tmp_path / f"{up.METRICS_PREFIX}older"  # made before directories named their `up`
    unnamed.mkdir()
    someone_elses = named_after(dead.replace(":", ":1"), tmp_path)  # gone too, not ours
    os.chown(someone_elses, 65534, 65534)  # CI runs as root, as `make test` needs

    assert up.remove_dead_stacks_metrics(tmp_path) == [gone]
    assert not gone.exists()
    assert live.is_dir() and unnamed.is_dir() and someone_elses.is_dir()


def test_an_ups_directory_names_it_so_the_next_can_tell_it_is_alive(tmp_path: Path) -> None:
    with up.metrics_dir(tmp_path) as directory:
        owner = identity(os.getpid()).replace(":", "-")
        assert directory.name.startswith(f"{up.METRICS_PREFIX}{owner}-")
        assert up.remove_dead_stacks_metrics(directory.parent) == []  # kept: its `up` runs
    assert not directory.exists()
