"""Dropping a process from root to an unprivileged uid for good: the one place that does it.

A tenant's workload starts as root (its interpreter lives where only root may look), imports all
it needs, and then gives up root before it reads a tenant file or serves a request: no
supplementary groups, its own gid and uid (real, effective and saved, so it can never switch
back), no capabilities (the kernel clears them when every uid leaves 0), and no new privileges
(`PR_SET_NO_NEW_PRIVS`: no setuid program or file capability can raise it again). Optionally it
is first shut in a directory (chroot), so it reaches its own files without any path above them
having to be open to it. Linux only, like the rest of the process handling here.
"""

import ctypes
import os
from pathlib import Path

from tenant_pipelines.support.procs import parse_status

PR_SET_NO_NEW_PRIVS = 38
_LIBC = ctypes.CDLL(None, use_errno=True)  # the running process's own C library: no I/O
# glibc loads it the first time a thread ends by pthread_exit (Python's daemon threads at exit):
# loaded before a chroot, it is found in memory; loaded after, the process aborts.
LIBGCC_S = "libgcc_s.so.1"


class PrivilegeError(Exception):
    """The process could not be confined as asked: it must not go on."""


def isolates_workloads() -> bool:
    """Whether this process can give each tenant's workload a uid of its own (it runs as root)."""
    return os.geteuid() == 0


def drop_to(uid: int, gid: int, root: Path | None = None) -> None:
    """Become `uid`/`gid` for good (see the module's docstring), shut in `root` if given.

    The caller imports everything it will need first: after this, files it could read as root
    (its own code under a directory closed to others, or outside `root`) are out of reach. It
    checks the result in /proc (opened before the drop, readable after a chroot) and raises
    PrivilegeError if anything was left.
    """
    if uid == 0 or gid == 0:
        raise PrivilegeError("refusing to 'drop' to root")
    ctypes.CDLL(LIBGCC_S)
    with open("/proc/self/status") as status:
        if root is not None:
            os.chroot(root)
        os.chdir("/")
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise PrivilegeError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
        got = parse_status(status.read())
    if not got.confined_to(uid, gid):
        raise PrivilegeError(f"still privileged after dropping to {uid}:{gid}: {got}")
