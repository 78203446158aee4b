"""Opening a SQLite database the one way this project does: shared by many processes at once.

Run workers, sensors, the edge, the CLI and tenant workloads read and write the same files
concurrently. That works without "database is locked" errors when every connection waits for
locks (busy timeout), the file is in WAL mode (readers never wait for the writer), and writers
take the write lock when their transaction begins (`BEGIN IMMEDIATE`): a deferred transaction
that later upgrades to a writer can deadlock with another and fail at once, whatever the timeout.
"""

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

BUSY_TIMEOUT_S = 10.0
Mode = Literal["ro", "rw", "rwc"]


def connect(
    path: Path, mode: Mode = "rw", *, wal: bool = False, any_thread: bool = False
) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, so their lock mode is the caller's).

    `mode`: read-only, read-write, or read-write creating the file; a missing file is an error
    unless `rwc`, rather than a new empty database. `wal`: for files many processes write.
    """
    conn = sqlite3.connect(
        f"{path.absolute().as_uri()}?mode={mode}",
        uri=True,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=not any_thread,
    )
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    if wal:
        enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def connect_snapshot(path: Path) -> sqlite3.Connection:
    """The main database file as it stands, read without locks, -wal or -shm (SQLite's
    `immutable`): for a reader that must go on when the disk is full and a normal open cannot
    create the shared-memory file. Changes still in the write-ahead log are not seen."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)


@contextmanager
def transaction(
    path: Path, mode: Mode = "rw", *, wal: bool = False
) -> Iterator[sqlite3.Connection]:
    """A connection inside one transaction: a write lock up front unless read-only; committed
    on success, rolled back on error, always closed."""
    conn = connect(path, mode, wal=wal)
    try:
        conn.execute("BEGIN" if mode == "ro" else "BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (persistent), retrying while another connection is switching it.

    SQLite answers "database is locked" at once, without consulting the busy handler, when two
    connections convert a new file at the same moment: every process opening a fresh database
    together would otherwise fail.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
