"""What the use cases need from the orchestrator, as `Protocol`s: its runs, read back, and a way
to launch them. The registry and the saga's ports are what they are below this layer; these two
are implemented once per orchestrator and per way of launching (`orchestration.runs.DagsterRuns`;
the API server's launcher and a run's launcher of its compensation in `runtime.launchers`, the
sensors' in `orchestration.sensor_launch`), chosen where each process is assembled."""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class RunStatus(StrEnum):
    """A run's status, as the orchestrator says it (Dagster's names)."""

    QUEUED = "QUEUED"
    NOT_STARTED = "NOT_STARTED"
    MANAGED = "MANAGED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"


ENDED = frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED})


@dataclass(frozen=True)
class RunView:
    """One run, as the use cases read it."""

    run_id: str
    job_name: str
    status: RunStatus
    root_run_id: str | None = None  # the first run of a re-execution chain
    parent_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    run_config: Mapping[str, Any] = field(default_factory=dict)
    ended_at: float | None = None  # epoch seconds, once ended

    @property
    def finished(self) -> bool:
        return self.status in ENDED

    @property
    def chain(self) -> str:
        """The run chain it belongs to, named by its first run."""
        return self.root_run_id or self.run_id


class Runs(Protocol):
    """The orchestrator's runs, read."""

    def get(self, run_id: str) -> RunView | None: ...

    def for_request(self, request_id: str) -> list[RunView]:
        """The provisioning runs of one request, newest first."""
        ...

    def requests_with_runs(self, request_ids: Collection[str]) -> set[str]:
        """Which of `request_ids` have a provisioning run: one question for many requests."""
        ...

    def succeeded_steps(self, run_id: str) -> set[str]: ...


class Launcher(Protocol):
    """Starts runs of the code location's jobs. A launch whose run is created later by someone
    else (a sensor's run request) returns None: the run names itself when it starts."""

    def launch(
        self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str | None: ...


class Relauncher(Launcher, Protocol):
    """A launcher that also re-executes runs (the API server's: retries of failed runs)."""

    def reexecute(
        self, parent: RunView, tags: Mapping[str, str], steps: Sequence[str] | None = None
    ) -> str | None:
        """Re-execute `parent`: from its failure (`steps` None, the UI's "Re-execute from
        failure"), or just `steps` (a canceled run, which Dagster will not re-execute from
        failure); `tags` replace the parent's."""
        ...


class NoRuns:
    """The `Runs` of a process that reads none: `tenantctl request` with no platform running
    only records the request (the intake sensor launches it)."""

    def get(self, run_id: str) -> RunView | None:
        return None

    def for_request(self, request_id: str) -> list[RunView]:
        return []

    def requests_with_runs(self, request_ids: Collection[str]) -> set[str]:
        return set()

    def succeeded_steps(self, run_id: str) -> set[str]:
        return set()
