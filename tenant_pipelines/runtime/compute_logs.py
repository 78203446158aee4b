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
from pathlib import Path
from typing import Any, Self

from tenant_pipelines.runtime.dagster_private import (
    IO_TYPE_EXTENSION,
    CapturedLogContext,
    ComputeIOType,
    ConfigurableClassData,
    LocalComputeLogManager,
    redirect_to_file,
)


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
            _ensure_file(path)
        with redirect_to_file(sys.stdout, paths[0]), redirect_to_file(sys.stderr, paths[1]):
            yield CapturedLogContext(log_key)
        _touch(self.complete_artifact_path(log_key))  # how readers know the capture ended


def _ensure_file(path: str) -> None:
    """The file, created empty if missing; an existing one is left as it is."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a"):
        pass


def _touch(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).touch()
