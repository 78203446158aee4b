"""What `tenantctl up` does first so that tenants' workloads cannot read the control plane.

The data directory (registry, operator and session keys, logs, Dagster's home, tenants' stores,
workload state, outbox) is the platform user's alone: 0600 files, 0700 directories. Processes
of the platform make theirs so (umask 077, set by `tenantctl`); a data directory an older version
made readable to others is tightened here, and its identity stores moved each into a directory of
its own, which a workload can be given without the rest. When the platform does not run as root
it cannot give workloads uids of their own, and says so once.
"""

import os
import pwd
from collections.abc import Callable

from tenant_pipelines.settings import Settings
from tenant_pipelines.support.files import tighten


def shared_user_notice(euid: int) -> str | None:
    """The line `up` says when workloads share its user (None when it runs as root)."""
    if euid == 0:
        return None
    try:
        user = pwd.getpwuid(euid).pw_name
    except KeyError:
        user = f"uid {euid}"
    return (
        f"tenant workloads run as {user}, the platform's own user: they are not isolated from"
        " each other or from the control plane (run tenantctl up as root to give each a uid of"
        " its own)"
    )


def prepare(settings: Settings, say: Callable[[str], None]) -> None:
    """Tighten the data directory and Dagster's home, move older identity stores, and say
    whether workloads share the platform's user. Called once `up` holds the platform's lock
    (what it imports loads Dagster)."""
    from resources.identity_files import move_legacy_stores

    changed = tighten(settings.data_dir) + tighten(settings.dagster_home)
    if changed:
        say(f"made {len(changed)} path(s) of the data directory private to its owner (0600/0700)")
    moved = move_legacy_stores(settings.data_dir)
    if moved:
        say(f"moved {len(moved)} identity store(s) into a directory each (identity/<key>/)")
    notice = shared_user_notice(os.geteuid())
    if notice:
        say(notice)
