"""Which uid and gid each tenant's workload runs as, when the platform runs as root.

Every tenant gets a number of its own from 1879048192 (0x70000000) up to 2147352575
(0x7FFDFFFF): above the ranges Linux distributions hand out to people (1000-60000), to systemd's
dynamic users (61184-65519) and to containers (524288-1879048191, systemd-nspawn's), below
systemd's "foreign" range (0x7FFE0000-0x7FFEFFFF) and 2^31, where some programs take uids for
negative numbers. The uid is its gid too; neither is in /etc/passwd, so it owns nothing on the
host but what the platform hands it (its identity store's directory).

The numbers are recorded host-wide, in `/var/lib/tenant-pipelines/workload-uids.db` (root only),
keyed by data directory and tenant id, because two platforms on one host must not hand one uid to
two tenants either. A tenant keeps its uid for good (restarts of `tenantctl up`, restores, retries,
a redeploy), and a uid is never handed out again, not even after its tenant is decommissioned:
whatever it might still own stays out of the next tenant's reach. The range holds 268 million.
"""

import os
from pathlib import Path

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support import sqlite
from tenant_pipelines.support.files import PRIVATE_DIR

FIRST_UID = 0x70000000
LAST_UID = 0x7FFDFFFF
HOST_RECORD = Path("/var/lib/tenant-pipelines/workload-uids.db")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS workload_uids (uid INTEGER PRIMARY KEY, data_dir TEXT NOT NULL,"
    " tenant_id TEXT NOT NULL, tenant_key TEXT NOT NULL, allocated_at TEXT NOT NULL"
    " DEFAULT CURRENT_TIMESTAMP, UNIQUE (data_dir, tenant_id))"
)


def workload_uid(
    data_dir: str | Path,
    tenant: TenantSpec,
    record: Path = HOST_RECORD,
    first: int = FIRST_UID,
    last: int = LAST_UID,
) -> int:
    """The tenant's uid (and gid): the one recorded for it, or the next never handed out."""
    where = str(Path(data_dir).resolve())
    record.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    with sqlite.transaction(record, "rwc", wal=True) as conn:
        conn.execute(_SCHEMA)
        found = conn.execute(
            "SELECT uid FROM workload_uids WHERE data_dir = ? AND tenant_id = ?",
            (where, tenant.tenant_id),
        ).fetchone()
        if found:
            return int(found[0])
        (highest,) = conn.execute(
            "SELECT max(uid) FROM workload_uids WHERE uid BETWEEN ? AND ?", (first, last)
        ).fetchone()
        uid = first if highest is None else int(highest) + 1
        if uid > last:
            raise ConfigError(
                f"no workload uid is left in {first}-{last} (all recorded in {record})"
            )
        conn.execute(
            "INSERT INTO workload_uids (uid, data_dir, tenant_id, tenant_key) VALUES (?, ?, ?, ?)",
            (uid, where, tenant.tenant_id, tenant.key),
        )
        return uid


def recorded_uids(data_dir: str | Path, record: Path = HOST_RECORD) -> dict[int, tuple[str, str]]:
    """uid -> (tenant key, tenant id) of every workload uid handed out for this data directory
    (none if nothing was ever handed out on this host, or for a process that is not root: only
    root hands them out, and only root may read the record). A process's uid, unlike its command
    line, is not the process's to choose: this says whose workload a process really is."""
    if os.geteuid() != 0 or not record.exists():
        return {}
    with sqlite.transaction(record, "ro") as conn:
        rows = conn.execute(
            "SELECT uid, tenant_key, tenant_id FROM workload_uids WHERE data_dir = ?",
            (str(Path(data_dir).resolve()),),
        ).fetchall()
    return {int(uid): (str(key), str(tenant_id)) for uid, key, tenant_id in rows}
