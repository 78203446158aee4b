"""Where an op's output waits for the next op, and for a re-execution from failure.

Dagster's default IO manager (`fs_io_manager`) pickles each output to
`<instance storage>/<run id>/<step>/<output>`, which is what a re-execution from failure reads
its parent run's outputs from. It also writes a debug line into the run's event log for every
output it stores and every input it loads: 8 of a provisioning run's 59 events, each a row to
serialize and insert (on PostgreSQL a server round trip and the server's CPU), read by nobody.
This IO manager keeps the files, their layout and their format, so outputs written by either
load in the other, and writes no event.
"""

import pickle
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    InitResourceContext,
    InputContext,
    IOManager,
    OutputContext,
)

from tenant_pipelines.support.files import write_atomically

PICKLE_PROTOCOL = 4  # what fs_io_manager writes


class RunOutputFiles(ConfigurableIOManagerFactory):
    """`fs_io_manager`'s files (under the instance's storage directory), without its events."""

    def create_io_manager(self, context: InitResourceContext) -> "PickledRunOutputs":
        assert context.instance is not None, "runs always have an instance"
        return PickledRunOutputs(Path(context.instance.storage_directory()))


class PickledRunOutputs(IOManager):
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Written beside and renamed: a reader never sees half an output (0600: the files hold
        tenants' details, and only the platform reads them)."""
        write_atomically(self._path(context), pickle.dumps(obj, PICKLE_PROTOCOL))

    def load_input(self, context: InputContext) -> Any:
        """From the run that produced it: this run, or the parent a re-execution came from."""
        upstream = context.upstream_output
        if upstream is None:  # an input from run config, not from an op: nothing was stored
            raise ValueError(f"input {context.name!r} comes from no op's output")
        with self._path(upstream).open("rb") as file:
            return pickle.load(file)

    def _path(self, context: OutputContext) -> Path:
        return self.base_dir.joinpath(*context.get_identifier())
