"""A small disk for tests: a tmpfs the test mounts (as root), fills on demand and unmounts."""

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 64 * 1024


@contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """`path` as a tmpfs of `size_mb` MB for the duration; unmounted even if the test fails
    (lazily, if a process of the test still holds a file there)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); the file, to delete to free the space."""
    filler = directory / "filler.bin"
    block = b"\0" * CHUNK
    with open(filler, "wb", buffering=0) as out:
        size = CHUNK
        while size >= 512:
            try:
                out.write(block[:size])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                size //= 2
    return filler
