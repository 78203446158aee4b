"""Every private Dagster name (`dagster._*`) this project uses, and why; nothing else imports them.

Dagster's private modules change without notice between releases. Keeping them here means an
upgrade (against the version pinned in `pyproject.toml`) fails in one place, and
`tests/integration/test_dagster_private.py` lists every name that moved at once, with the private
members the runtime's subclasses rely on (`PRIVATE_MEMBERS`). Each import says what it is for,
which public API was considered, and why that does not do; what the runtime builds on them is
described in docs/dagster.md. A name Dagster exports publicly (`from dagster import ...`) is
imported from there instead, wherever it is used.
"""

from collections.abc import Callable, Sequence
from typing import Any

from dagster import DagsterInstance, DagsterRun, EventLogEntry

# run_worker.py: the body of `dagster api execute_run`, run in the forked worker. Public
# alternative: the `dagster api execute_run` command, a new interpreter that imports Dagster and
# the code location again (~1 s of CPU a run), the cost the fork server exists to avoid.
from dagster._cli.api import _execute_run_command_body

# direct_launch.py: the code origin a run launched from the UI carries. Public alternatives:
# GraphQL `launchRun` (0.2 s of code-server CPU a run, served one at a time), or
# `reconstructable(job)`, which needs a job defined at module level (ours come from `defs()`).
from dagster._core.definitions.reconstruct import ReconstructableRepository

# compute_logs.py: the file-descriptor-level redirection `LocalComputeLogManager.capture_logs`
# itself uses (it also catches what child processes print). No public equivalent;
# `contextlib.redirect_stdout` swaps the Python object only.
from dagster._core.execution.compute_logs import redirect_to_file

# run_worker.py: the type `DagsterInstance.get_ref()` returns, read back in the worker. Not
# exported; `DagsterInstance.get()` would read DAGSTER_HOME, not the launching instance's ref.
from dagster._core.instance.ref import InstanceRef

# run_launcher.py: the base class, its context and the health-check types. Public alternative:
# `DefaultRunLauncher`, which starts every run as a new process (the ~1 s import per run).
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)

# direct_launch.py: the code origin's job part. Not exported (see ReconstructableRepository).
from dagster._core.origin import JobPythonOrigin

# direct_launch.py: the code-location origins the webserver gives a run, so the UI, the daemon
# and run retries treat a direct launch as theirs. Not exported; GraphQL is the public way.
from dagster._core.remote_origin import (
    CodeLocationOrigin,
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

# compute_logs.py: the capture's context and stream kinds, as `capture_logs` must return and
# name them. Not exported.
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType

# run_coordinator.py: the statuses that hold a slot, exactly as the queued run daemon counts
# them. `DagsterRunStatus` is public, but a copied list would disagree with the daemon's once
# Dagster adds a status.
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES

# sqlite_storage.py: subclassed to keep an engine per database. Public alternative: `storage:
# sqlite:` as it is, a new engine per event (over a third of a run worker's time).
# bench/feed.py: writes its tenants' events straight into the event log's table, in batches,
# with the rows and index entries the storage's own `store_event` makes. Public alternative:
# `store_event_batch`, one event at a time on SQLite: 50 tenants' 400 events took 56 s that way
# against 2.3 s in batches (medians of 3), so hours for the 10,000 tenants of `make bench`.
# pg_storage.py: the SQL storages' `store_event`, which dagster-postgres overrides only to add a
# NOTIFY that nothing listens to. Not exported; a copy of its body would drift from Dagster's.
from dagster._core.storage.event_log import (
    SqlEventLogStorage,
    SqlEventLogStorageTable,
    SqliteEventLogStorage,
)

# pg_storage.py: the secondary index every asset event asks about (the audit feed's events are
# asset observations). Not exported; a copy of the name would drift.
from dagster._core.storage.event_log.migration import ASSET_KEY_INDEX_COLS

# sqlite_storage.py: the index shard's name and the busy timeout, so the kept engines open the
# same files as Dagster's, with the same timeout. Not exported; copies would drift.
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
)

# compute_logs.py: subclassed to drop the mirror. Public alternative: `LocalComputeLogManager`
# from dagster.yaml as it is, with four mirroring processes per run.
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)

# sqlite_storage.py: subclassed to keep one engine for `runs.db` (as SqliteEventLogStorage).
from dagster._core.storage.runs import SqliteRunStorage

# alembic_scripts.py: where Dagster's migration scripts live, read once per fork server. Not
# exported.
from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION

# sqlite_storage.py: `storage: sqlite:` and where it keeps its files under base_dir; the pooled
# storage uses the same directories, so an instance can switch to or from it with its history.
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
)

# dagster_ui.py: the workspace dagster-webserver's app is built on, as its command line builds
# it. Public alternative: the `dagster-webserver` process, listening on a port of its own that any
# local process can reach without passing the platform's door.
from dagster._core.workspace.context import WorkspaceProcessContext

# direct_launch.py: the code locations of workspace.yaml, read as the webserver reads them. Not
# exported; reading the YAML ourselves would still need the private origin types.
from dagster._core.workspace.load import location_origins_from_yaml_paths

# dagster_ui.py: what the workspace is loaded from (as WorkspaceProcessContext).
from dagster._core.workspace.load_target import WorkspaceFileTarget

# run_launcher.py, the storages, compute_logs.py: what a class that dagster.yaml names
# (`module:`, `class:`) implements and receives. Not exported, although dagster.yaml's custom
# classes are documented; no public base class exists.
from dagster._serdes import ConfigurableClass, ConfigurableClassData

# run_worker.py: SIGTERM and SIGINT as Dagster's execution interrupts, as in Dagster's own run
# workers. No public equivalent; without it a terminated run's ops would not see the interrupt.
from dagster._utils.interrupts import capture_interrupts

# The connection type of the bench's writer functions below.
from sqlalchemy.engine import Connection

event_logs_directory: Callable[[str], str] = _event_logs_directory
runs_directory: Callable[[str], str] = _runs_directory


def execute_run_in_process(run_id: str, instance: DagsterInstance) -> int:
    """`dagster api execute_run`'s body; the worker's exit code is the launcher's business."""
    return _execute_run_command_body(
        run_id, instance, lambda _event: None, set_exit_code_on_failure=False
    )


def submit_without_workspace(instance: DagsterInstance, run_id: str) -> DagsterRun:
    """Submit a run through the instance's run coordinator from a process with no workspace.

    `submit_run` is typed to need the webserver's request context; the queued coordinators only
    pass it on to `launch_run`, and the slot coordinator reads it only to find a UI request
    (`run_coordinator.door_caller`), so None is what a launch outside the UI carries."""
    return instance.submit_run(run_id, workspace=None)  # type: ignore[arg-type]


def launch_without_workspace(instance: DagsterInstance, run_id: str) -> DagsterRun:
    """Launch a queued run from a process with no workspace, as the queued run daemon does when
    its launcher needs none: the fork-server launcher reads no workspace."""
    return instance.launch_run(run_id, workspace=None)  # type: ignore[arg-type]


def event_row(storage: SqliteEventLogStorage, entry: EventLogEntry) -> dict[str, Any]:
    """The row `store_event` inserts for `entry` (in its run's shard; asset events in the index
    shard too)."""
    return storage._event_to_row(entry)


def index_asset_event_tags(
    storage: SqliteEventLogStorage,
    conn: Connection,
    entries: Sequence[EventLogEntry],
    ids: list[int],
) -> None:
    """The asset event tags `store_event` adds to the index shard beside asset events' rows."""
    storage._store_asset_event_tags(conn, entries, ids)


def index_asset_event(
    storage: SqliteEventLogStorage, conn: Connection, entry: EventLogEntry, event_id: int
) -> None:
    """The asset's latest event, as `store_event` records it in the index shard."""
    storage._store_asset_event(conn, entry, event_id)


# Private members (underscore names) of Dagster's and dagster-postgres's classes that the
# runtime's subclasses read, set or override and the functions above call, by class: the test
# checks them with the imports above, so a renamed member is listed there too.
PRIVATE_MEMBERS: dict[str, tuple[str, ...]] = {
    "SqliteEventLogStorage": (
        "_connect",
        "_initdb",
        "_db_lock",
        "_initialized_dbs",
        "_base_dir",
        "_event_to_row",
        "_store_asset_event_tags",
        "_store_asset_event",
    ),
    "SqliteRunStorage": ("_conn_string",),
    "DagsterSqliteStorage": ("_event_log_storage", "_run_storage"),
    "QueuedRunCoordinator": ("_instance",),
    "RunLauncher": ("_instance",),
    "DagsterPostgresStorage": (
        "_inst_data",
        "_run_storage",
        "_event_log_storage",
        "_schedule_storage",
    ),
    "PostgresRunStorage": ("_engine",),
    "PostgresEventLogStorage": ("_engine",),
    "PostgresScheduleStorage": ("_engine",),
}

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "ALEMBIC_SCRIPTS_LOCATION",
    "ASSET_KEY_INDEX_COLS",
    "INDEX_SHARD_NAME",
    "IO_TYPE_EXTENSION",
    "PRIVATE_MEMBERS",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "CapturedLogContext",
    "CheckRunHealthResult",
    "CodeLocationOrigin",
    "ComputeIOType",
    "ConfigurableClass",
    "ConfigurableClassData",
    "DagsterSqliteStorage",
    "GrpcServerCodeLocationOrigin",
    "InstanceRef",
    "JobPythonOrigin",
    "LaunchRunContext",
    "LocalComputeLogManager",
    "ReconstructableRepository",
    "RemoteJobOrigin",
    "RemoteRepositoryOrigin",
    "RunLauncher",
    "SqlEventLogStorage",
    "SqlEventLogStorageTable",
    "SqliteEventLogStorage",
    "SqliteRunStorage",
    "WorkerStatus",
    "WorkspaceFileTarget",
    "WorkspaceProcessContext",
    "capture_interrupts",
    "event_logs_directory",
    "event_row",
    "execute_run_in_process",
    "index_asset_event",
    "index_asset_event_tags",
    "launch_without_workspace",
    "location_origins_from_yaml_paths",
    "redirect_to_file",
    "runs_directory",
    "submit_without_workspace",
]
