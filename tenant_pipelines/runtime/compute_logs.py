"""Dagster's local compute logs, captured to files without mirroring them back.

`LocalComputeLogManager` redirects a run's stdout and stderr into files (which the UI shows per
step), and mirrors the files back to the run worker's own output: for that it starts, per stream
and per run, a `tail -F` and a Python watcher process (four processes, one of them a whole
interpreter start). Profiled with py-spy during a burst of provisioning runs, those watchers were
a fifth of all the CPU the runs used. This manager keeps the capture, the files, their layout and
the UI's view of them, and drops only the mirror: the worker's own output (the API server's or
the daemon's log) no longer repeats what the steps printed.
"""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file


class FileComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager's files and configuration (`base_dir`), without the mirror."""

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        paths = [
            self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[io_type])
            for io_type in (ComputeIOType.STDOUT, ComputeIOType.STDERR)
        ]
        for path in paths:
            ensure_file(path)
        with redirect_to_file(sys.stdout, paths[0]), redirect_to_file(sys.stderr, paths[1]):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # how readers know the capture ended
