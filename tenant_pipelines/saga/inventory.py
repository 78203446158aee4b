"""`tenantctl inventory`: what exists in every backend, held against the ledger.

An orphan exists in a backend with no live ledger entry (leaked); a ghost is recorded as
allocated but missing from its backend. Entries still `allocating` or `releasing` are in flight
and count as neither, and so do the missing things of a tenant placed on another host (its
workload and route are there: that host's inventory judges them). A store that cannot be read
(the registry, a backend) is named in `unreadable`; the others are still listed, and nothing is
judged against a ledger not read.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.domain.states import LedgerState
from tenant_pipelines.saga.ports import Ledger, TenantBackend


@dataclass(frozen=True)
class Finding:
    problem: str  # "orphan" | "ghost"
    kind: str
    tenant_key: str


@dataclass(frozen=True)
class Inventory:
    existing: dict[str, list[str]]
    findings: list[Finding]
    skipped: list[str]
    unreadable: dict[str, str] = field(default_factory=dict)  # store -> why it could not be read

    @property
    def clean(self) -> bool:
        return not self.findings and not self.unreadable

    def to_json(self) -> dict[str, Any]:
        return {
            "existing": self.existing,
            "findings": [asdict(f) for f in self.findings],
            "skipped": self.skipped,
            "unreadable": self.unreadable,
            "clean": self.clean,
        }


def take_inventory(
    ledger: Ledger | None,
    backends: list[TenantBackend],
    skip_ghosts: frozenset[str],
    unreadable: dict[str, str] | None = None,
    host_name: str | None = None,
) -> Inventory:
    """`skip_ghosts`: kinds whose absence is expected now (workloads while the stack is down).
    `ledger` is None when the registry could not be opened (the reason in `unreadable`).
    `host_name`: this host's; None judges every tenant's missing things here."""
    unreadable = dict(unreadable or {})
    live = _live(ledger, unreadable, host_name)
    existing = {}
    for backend in backends:
        try:
            existing[backend.kind] = sorted(backend.list_existing())
        except Exception as error:  # a backend's own error type: name it, list the others
            unreadable[backend.kind] = _first_line(error)
    findings = []
    for backend in backends:
        if live is None or backend.kind not in existing:
            continue  # nothing to hold it against
        recorded = live.get(backend.kind, {})
        present = set(existing[backend.kind])
        findings += [
            Finding("orphan", backend.kind, key) for key in sorted(present - set(recorded))
        ]
        if backend.kind not in skip_ghosts:
            findings += [
                Finding("ghost", backend.kind, key)
                for key, (state, here) in sorted(recorded.items())
                if here and state == LedgerState.ALLOCATED and key not in present
            ]
    return Inventory(existing, findings, sorted(skip_ghosts), unreadable)


def _live(
    ledger: Ledger | None, unreadable: dict[str, str], host_name: str | None
) -> dict[str, dict[str, tuple[str, bool]]] | None:
    """kind -> tenant key -> (ledger state, whether the tenant is placed on this host or on
    none), or None if the ledger could not be read."""
    if ledger is None:
        return None
    live: dict[str, dict[str, tuple[str, bool]]] = {}
    try:
        for tenant, entry in ledger.live():
            here = host_name is None or tenant.worker_host in (None, host_name)
            live.setdefault(entry.kind, {})[tenant.spec.key] = (entry.state, here)
    except TenantPipelinesError as error:  # RegistryUnavailable: the registry's store is gone
        unreadable["registry"] = str(error)
        return None
    return live


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def format_inventory(inventory: Inventory) -> str:
    lines = [f"{kind:<10} {len(keys):>4} present" for kind, keys in inventory.existing.items()]
    lines += [f"{f.problem.upper()}: {f.kind} of {f.tenant_key}" for f in inventory.findings]
    lines += [
        f"(ghosts not checked for {kind}: the platform is not running)"
        for kind in inventory.skipped
    ]
    lines += [f"UNREADABLE: {store}: {why}" for store, why in inventory.unreadable.items()]
    if inventory.unreadable and "registry" in inventory.unreadable:
        lines.append("(orphans and ghosts not judged: the ledger could not be read)")
    problems = len(inventory.findings) + len(inventory.unreadable)
    lines.append("clean" if inventory.clean else f"{problems} problem(s)")
    return "\n".join(lines)
