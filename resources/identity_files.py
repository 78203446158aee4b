"""Where a tenant's local identity store lives, who owns it, and how the platform touches it.

Each store is alone in a directory of its own, `<data dir>/identity/<key>/identity.db`. When the
platform runs as root, the deployer hands that directory to the tenant's workload uid, which
then writes the store (its admin's sign-in) and makes SQLite's journal beside it, shut in that
directory and seeing nothing else. From then on the platform never writes there: it reads the
store as an immutable snapshot (no lock, journal or shared-memory file of its own, nothing a
workload could have planted a link for), builds a new store only in a directory of its own, and
removes the directory with a removal that never follows a link.
"""

import contextlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from resources.storage import DB_SUFFIX, SIDECAR_SUFFIXES
from tenant_pipelines.domain.tenant import check_tenant_key, is_tenant_key
from tenant_pipelines.support import sqlite as sqlite_files
from tenant_pipelines.support.files import PRIVATE_DIR

IDENTITY_DIR = "identity"
STORE_FILE = "identity.db"


def identity_db_path(data_dir: str | Path, tenant_key: str) -> Path:
    """The local identity database of a tenant, alone in its directory (which its workload owns
    once deployed, and is shut in); the workload opens it too."""
    return Path(data_dir) / IDENTITY_DIR / check_tenant_key(tenant_key) / STORE_FILE


def hand_over(data_dir: str | Path, tenant_key: str, uid: int, gid: int) -> Path:
    """Give the tenant's store directory, and the files the platform made in it, to its workload
    uid (0700), so the workload can write the store; the store's path. A missing directory is
    left missing (the workload then says there is no store). Links are never followed."""
    path = identity_db_path(data_dir, tenant_key)
    directory = path.parent
    with contextlib.suppress(FileNotFoundError):
        os.chown(directory, uid, gid, follow_symlinks=False)
        os.chmod(directory, PRIVATE_DIR)  # its entry is in the platform's directory: no link
        for entry in os.scandir(directory):
            if entry.stat(follow_symlinks=False).st_uid != uid:
                os.chown(entry.path, uid, gid, follow_symlinks=False)
    return path


def move_legacy_stores(data_dir: str | Path) -> list[str]:
    """Move stores an older version kept side by side (`identity/<key>.db`) each into its own
    directory; their tenant keys. Sidecars go first, so a crash never parts a store from its
    journal; running it again finishes the job."""
    moved = []
    for legacy in sorted((Path(data_dir) / IDENTITY_DIR).glob(f"*{DB_SUFFIX}")):
        key = legacy.name.removesuffix(DB_SUFFIX)
        target = identity_db_path(data_dir, key) if is_tenant_key(key) else None
        if target is None or not legacy.is_file() or target.exists():
            continue
        target.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        for suffix in SIDECAR_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{legacy}{suffix}", f"{target}{suffix}")
        os.replace(legacy, target)
        moved.append(key)
    return moved


@contextlib.contextmanager
def snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """Read a store as its main file holds it: the platform makes no file beside a store its
    workload may write (see the module's docstring)."""
    conn = sqlite_files.connect_snapshot(path)
    try:
        yield conn
    finally:
        conn.close()


def recorded_tenant_id(path: Path) -> str | None:
    """The tenant id a store records; None if it has no store or records none (an older one)."""
    if not path.exists():
        return None
    with snapshot(path) as conn:
        try:
            row = conn.execute("SELECT tenant_id FROM tenant_meta").fetchone()
        except sqlite3.DatabaseError:  # made before stores recorded it, or no store at all
            return None
    return row[0] if row else None


def own_directory(directory: Path) -> None:
    """A directory of the platform's own to build a store in: one that was handed to a workload
    (whose store is gone) is replaced, never written into."""
    directory.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        return
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
        return
    remove_store_directory(directory)
    directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)


def remove_store_directory(path: Path) -> bool:
    """Remove a store's directory (or whatever stands in its place); True if there was one."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)  # fd-based on Linux: never follows a link planted inside
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True
