"""`tenantctl inventory`: what exists in every backend, held against the ledger.

An orphan exists in a backend with no live ledger entry (leaked); a ghost is recorded as
allocated but missing from its backend. Entries still `allocating` or `releasing` are in flight
and count as neither.
"""

from dataclasses import asdict, dataclass
from typing import Any

from tenant_pipelines.domain.states import LedgerState
from tenant_pipelines.saga.ports import Registry, TenantBackend


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

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "existing": self.existing,
            "findings": [asdict(f) for f in self.findings],
            "skipped": self.skipped,
            "clean": self.clean,
        }


def take_inventory(
    registry: Registry, backends: list[TenantBackend], skip_ghosts: frozenset[str]
) -> Inventory:
    """`skip_ghosts`: kinds whose absence is expected now (workloads while the stack is down)."""
    live: dict[str, dict[str, str]] = {}
    for tenant, entry in registry.live_ledger():
        live.setdefault(entry.kind, {})[tenant.spec.key] = entry.state
    existing = {b.kind: sorted(b.list_existing()) for b in backends}
    findings = []
    for backend in backends:
        recorded = live.get(backend.kind, {})
        present = set(existing[backend.kind])
        findings += [
            Finding("orphan", backend.kind, key) for key in sorted(present - set(recorded))
        ]
        if backend.kind not in skip_ghosts:
            findings += [
                Finding("ghost", backend.kind, key)
                for key, state in sorted(recorded.items())
                if state == LedgerState.ALLOCATED and key not in present
            ]
    return Inventory(existing, findings, sorted(skip_ghosts))


def format_inventory(inventory: Inventory) -> str:
    lines = [f"{kind:<10} {len(keys):>4} present" for kind, keys in inventory.existing.items()]
    lines += [f"{f.problem.upper()}: {f.kind} of {f.tenant_key}" for f in inventory.findings]
    lines += [
        f"(ghosts not checked for {kind}: the platform is not running)"
        for kind in inventory.skipped
    ]
    lines.append("clean" if inventory.clean else f"{len(inventory.findings)} problem(s)")
    return "\n".join(lines)
