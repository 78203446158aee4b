"""Writing a file so that readers see the old contents or the new, never half of either."""

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Replace `path` with `data` in one step (a new file beside it, renamed over it). The new
    file is readable by its owner only until a caller widens it.

    `durable` also flushes the data to disk before the rename: for files whose loss after a
    crash would matter (an email in the outbox), not for ones rewritten all the time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not `tempfile`: tenant workloads import this, and each module costs every tenant memory.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
