"""Writing a file so that readers see the old contents or the new, never half of either."""

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Replace `path` with `data` in one step (a temporary file in the same directory, renamed).

    `durable` also flushes the data to disk before the rename: for files whose loss after a
    crash would matter (an email in the outbox), not for ones rewritten all the time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
