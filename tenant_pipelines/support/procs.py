"""What Linux's /proc says about processes: the one place that parses it.

PIDs are recycled, so code that signals a process it did not start checks the command line (or
the start time, for an identity that survives restarts of the reader) before trusting a PID.
Elsewhere than Linux every lookup finds nothing, and so nothing is ever signalled.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CAPABILITY_SETS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


def pids() -> list[int]:
    """Every process visible now."""
    if not PROC.is_dir():
        return []
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def argv(pid: int) -> list[str] | None:
    """The process's arguments, or None if it is gone (a zombie has none either)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None


def environ_value(pid: int, name: str) -> str | None:
    """One variable of the environment the process started with (None: unset, gone, or not
    ours to read). Inherited by everything it starts, unlike its parent or session."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = f"{name}=".encode()
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def command_line(pid: int) -> str | None:
    """The arguments joined by spaces, for matching and messages."""
    args = argv(pid)
    return None if args is None else " ".join(args)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of stat)."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def identity(pid: int) -> str:
    """`<pid>:<start ticks>`: names one process, never the next one to get the same PID."""
    return f"{pid}:{start_ticks(pid)}"


def live_pid(process: str) -> int | None:
    """The PID an `identity` names, if that very process still runs: a zombie does not (it
    stays one until its parent reaps it, forever under a parent that never does, such as a
    command that is PID 1 of a container)."""
    pid_text, _, ticks = process.partition(":")
    if not pid_text.isdigit():
        return None
    pid = int(pid_text)
    fields = _stat_fields(pid)
    running = fields is not None and len(fields) > 19 and fields[0] != "Z"
    return pid if running and fields is not None and fields[19] == ticks else None


def descendants(roots: list[int]) -> dict[int, str]:
    """PID -> command line of every process below `roots`."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        parent = parent_pid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found: dict[int, str] = {}
    frontier = list(roots)
    while frontier:
        for pid in children.get(frontier.pop(), []):
            line = command_line(pid)
            if line is not None and pid not in found:
                found[pid] = line
                frontier.append(pid)
    return found


def alive(pid: int) -> bool:
    """Whether a process with this PID exists (whoever it is now)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fd_inode(pid: int, fd: int) -> int | None:
    """The inode of what the process holds open as descriptor `fd` (a socket's, for one), or
    None if it holds nothing there (or is gone, or is not ours to look at)."""
    try:
        return os.stat(PROC / str(pid) / "fd" / str(fd)).st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class Credentials:
    """A process's identity as /proc/PID/status tells it."""

    uids: tuple[int, ...]  # real, effective, saved, filesystem
    gids: tuple[int, ...]
    groups: tuple[int, ...]
    capabilities: dict[str, int]  # CapInh, CapPrm, CapEff, CapAmb (not the bounding set)
    no_new_privs: bool

    @property
    def uid(self) -> int | None:
        """The uid, if all four agree (a process that could switch back has none)."""
        return self.uids[0] if len(set(self.uids)) == 1 else None

    def confined_to(self, uid: int, gid: int) -> bool:
        """Whether the process is `uid`/`gid` for good, holds nothing else and cannot gain it."""
        return (
            set(self.uids) == {uid}
            and set(self.gids) == {gid}
            and not self.groups
            and len(self.capabilities) == len(CAPABILITY_SETS)
            and not any(self.capabilities.values())
            and self.no_new_privs
        )


def parse_status(text: str) -> Credentials:
    """The credentials in the text of /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def numbers(name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in fields.get(name, "").split())

    return Credentials(
        uids=numbers("Uid"),
        gids=numbers("Gid"),
        groups=numbers("Groups"),
        capabilities={
            name: int(fields[name].strip(), 16) for name in CAPABILITY_SETS if name in fields
        },
        no_new_privs=fields.get("NoNewPrivs", "").strip() == "1",
    )


def credentials(pid: int) -> Credentials | None:
    """The credentials of a live process, or None if it is gone."""
    try:
        return parse_status((PROC / str(pid) / "status").read_text())
    except OSError:
        return None


def lower_priority(niceness: int) -> None:
    """Run this process at `niceness` if that is a lower CPU priority than it has: without
    privileges a process may lower its own priority, never raise it."""
    if niceness > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
