"""Files of the platform: written so that readers see the old contents or the new, never half
of either, and readable by the platform's own user only (0600 files, 0700 directories)."""

import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077  # what `tenantctl` runs under, and every process of the platform after it
_OTHERS = 0o077  # group and others' bits


def write_atomically(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Replace `path` with `data` in one step (a new file beside it, renamed over it). The new
    file is readable by its owner only until a caller widens it.

    `durable` also flushes the data to disk before the rename: for files whose loss after a
    crash would matter (an email in the outbox), not for ones rewritten all the time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not `tempfile`: tenant workloads import this, and each module costs every tenant memory.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_private_log(path: Path) -> int:
    """A log file opened for appending (made 0600 if new); the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)


def tighten(root: Path) -> list[Path]:
    """Take group and others' bits off `root` and everything below it that this user owns: what
    an older version made 0644 / 0755 becomes 0600 / 0700. Symbolic links are not followed, and
    directories another user owns (a tenant's own) are neither changed nor entered. The paths
    changed."""
    me = os.geteuid()
    changed = []
    for top, dirs, files in os.walk(root, followlinks=False):
        here = Path(top)
        for path in [here, *(here / f for f in files)]:
            if _take_away_others(path, me):
                changed.append(path)
        dirs[:] = [d for d in dirs if _owner(here / d) == me]
    return changed


def _owner(path: Path) -> int | None:
    try:
        return os.lstat(path).st_uid
    except FileNotFoundError:  # gone meanwhile
        return None


def _take_away_others(path: Path, owner: int) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode) or info.st_uid != owner or not info.st_mode & _OTHERS:
        return False
    os.chmod(path, stat.S_IMODE(info.st_mode) & ~_OTHERS)
    return True
