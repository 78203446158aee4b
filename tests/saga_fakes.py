"""In-memory implementations of the saga's ports, for driving the saga as plain Python.

They keep the promises the real adapters keep (compare-and-set claims, ledger order, idempotent
ensure and release) and record what was done to them, so a test can ask what happened in which
order. No Dagster, no SQLAlchemy, no I/O.
"""

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tenant_pipelines.domain.errors import NotFound, SlugTaken
from tenant_pipelines.domain.events import AuditEvent
from tenant_pipelines.domain.handles import Handle, ResourceKind, check_made_for, may_act_on
from tenant_pipelines.domain.mail import Invitation, OutgoingEmail, SendResult
from tenant_pipelines.domain.records import (
    CompensationRecord,
    LedgerEntry,
    RequestRecord,
    TenantRecord,
)
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import (
    LIVE_LEDGER_STATES,
    SETTLED_LEDGER_STATES,
    LedgerState,
    RequestState,
    TenantState,
    check_request_transition,
    check_tenant_transition,
)
from tenant_pipelines.domain.tenant import TenantSpec, tenant_key
from tenant_pipelines.saga.context import Backends, SagaContext


class Clock:
    """Time that passes only when the saga sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Ticks:
    """The fakes' clock: strictly increasing, so "newest" is never a tie."""

    def __init__(self) -> None:
        self._tick = itertools.count()

    def __call__(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=next(self._tick))


class InMemoryRequests:
    """`registry.requests` (see `registry/requests.py`): request id -> record."""

    def __init__(self, now: Ticks) -> None:
        self.records: dict[str, RequestRecord] = {}
        self._now = now

    def submit(self, request: TenantRequest) -> RequestRecord:
        moment = self._now()
        record = RequestRecord(
            request_id=str(request.request_id),
            slug=request.slug,
            org=request.org,
            plan=request.plan,
            admin_email=str(request.admin_email),
            subject=request.requested_by.subject,
            role=request.requested_by.role,
            state=RequestState.PENDING,
            reason=None,
            run_id=None,
            tenant_id=None,
            created_at=moment,
            updated_at=moment,
        )
        return self.records.setdefault(record.request_id, record)

    def get(self, request_id: str) -> RequestRecord:
        try:
            return self.records[request_id]
        except KeyError:
            raise NotFound(f"no request with id {request_id!r}") from None

    def claim(self, request_id: str, run_id: str, root_run_id: str | None = None) -> bool:
        request = self.get(request_id)
        if request.run_id is None:
            request = self.update(request, run_id=root_run_id or run_id)
        return request.run_id in {run_id, root_run_id} - {None}

    def reject(self, request_id: str, reason: str) -> RequestRecord:
        request = self.get(request_id)
        if request.state == RequestState.REJECTED:
            return request
        check_request_transition(request.state, RequestState.REJECTED)
        return self.update(request, state=RequestState.REJECTED, reason=reason)

    def update(self, request: RequestRecord, **changes: Any) -> RequestRecord:
        self.records[request.request_id] = replace(request, updated_at=self._now(), **changes)
        return self.records[request.request_id]


class InMemoryTenants:
    """`registry.tenants` (see `registry/tenants.py`): tenant id -> record; reserving links the
    request, as the real one does in the same transaction."""

    def __init__(self, requests: InMemoryRequests, now: Ticks) -> None:
        self.records: dict[str, TenantRecord] = {}
        self.live_slugs: dict[str, str] = {}  # slug -> tenant_id, until decommissioned
        self.live_keys: dict[str, str] = {}  # tenant key -> tenant_id, until decommissioned
        self._requests = requests
        self._now = now

    def reserve(self, request: RequestRecord) -> TenantRecord:
        for tenant in self.records.values():
            if tenant.request_id == request.request_id:
                return tenant
        if request.slug in self.live_slugs:
            raise SlugTaken(request.slug)
        key = tenant_key(request.slug, request.org)
        if key in self.live_keys:
            raise SlugTaken(request.slug, request.org, key)
        moment = self._now()
        tenant = TenantRecord(
            tenant_id=str(uuid.uuid4()),
            request_id=request.request_id,
            slug=request.slug,
            org=request.org,
            plan=request.plan,
            admin_email=request.admin_email,
            state=TenantState.PROVISIONING,
            last_run_id=None,
            failed_step=None,
            failure_reason=None,
            created_at=moment,
            updated_at=moment,
        )
        self.records[tenant.tenant_id] = tenant
        self.live_slugs[tenant.slug] = tenant.tenant_id
        self.live_keys[key] = tenant.tenant_id
        self._requests.update(self._requests.get(request.request_id), tenant_id=tenant.tenant_id)
        return tenant

    def get_by_id(self, tenant_id: str) -> TenantRecord:
        try:
            return self.records[tenant_id]
        except KeyError:
            raise NotFound(f"no tenant with id {tenant_id!r}") from None

    def record_run(self, tenant_id: str, run_id: str) -> None:
        self._update(self.get_by_id(tenant_id), last_run_id=run_id)

    def transition(
        self,
        tenant_id: str,
        target: str,
        *,
        failed_step: str | None = None,
        failure_reason: str | None = None,
    ) -> TenantRecord:
        tenant = self.get_by_id(tenant_id)
        if tenant.state == target:
            return tenant
        check_tenant_transition(tenant.state, target)
        changes: dict[str, Any] = {"state": TenantState(target)}
        if target == TenantState.FAILED:
            changes.update(failed_step=failed_step, failure_reason=failure_reason)
        elif tenant.state == TenantState.FAILED:
            changes.update(failed_step=None, failure_reason=None)
        if target == TenantState.DECOMMISSIONED:
            self.live_slugs.pop(tenant.slug, None)
            self.live_keys.pop(tenant.spec.key, None)
        return self._update(tenant, **changes)

    def _update(self, tenant: TenantRecord, **changes: Any) -> TenantRecord:
        self.records[tenant.tenant_id] = replace(tenant, updated_at=self._now(), **changes)
        return self.records[tenant.tenant_id]


class InMemoryLedger:
    """`registry.ledger` (see `registry/ledger.py`): (tenant id, kind) -> entry."""

    def __init__(self, tenants: InMemoryTenants, now: Ticks) -> None:
        self.by_key: dict[tuple[str, str], LedgerEntry] = {}
        self._tenants = tenants
        self._now = now

    def set(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> LedgerEntry:
        state = LedgerState(state)
        self._tenants.get_by_id(tenant_id)
        entry = self.by_key.get((tenant_id, kind))
        new_allocation = entry is None or (
            entry.state in SETTLED_LEDGER_STATES
            and state in (LedgerState.ALLOCATING, LedgerState.ALLOCATED)
        )
        seq = 1 + max((e.seq for e in self.entries(tenant_id)), default=0)
        self.by_key[(tenant_id, kind)] = LedgerEntry(
            tenant_id=tenant_id,
            kind=kind,
            state=state,
            handle=handle if handle is not None else (entry.handle if entry else {}),
            run_id=run_id if run_id is not None else (entry.run_id if entry else None),
            seq=seq if new_allocation or entry is None else entry.seq,
            updated_at=self._now(),
        )
        return self.by_key[(tenant_id, kind)]

    def claim(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        allowed: Callable[[LedgerEntry | None], bool],
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> tuple[bool, LedgerEntry | None]:
        entry = self.by_key.get((tenant_id, kind))
        if not allowed(entry):
            return False, entry
        return True, self.set(tenant_id, kind, state, handle=handle, run_id=run_id)

    def get(self, tenant_id: str, kind: str) -> LedgerEntry | None:
        return self.by_key.get((tenant_id, kind))

    def entries(self, tenant_id: str) -> list[LedgerEntry]:
        mine = [e for (t, _), e in self.by_key.items() if t == tenant_id]
        return sorted(mine, key=lambda e: (e.seq, e.kind))

    def live(self) -> list[tuple[TenantRecord, LedgerEntry]]:
        return [
            (self._tenants.records[e.tenant_id], e)
            for e in self.by_key.values()
            if e.state in LIVE_LEDGER_STATES
        ]


class InMemoryCompensations:
    """`registry.compensations` (see `registry/compensations.py`): failed run id -> claim."""

    def __init__(self, now: Ticks) -> None:
        self.records: dict[str, CompensationRecord] = {}
        self._now = now

    def claim(self, failed_run_id: str, tenant_id: str) -> bool:
        if failed_run_id in self.records:
            return False
        self.records[failed_run_id] = CompensationRecord(
            failed_run_id, tenant_id, None, self._now(), None
        )
        return True

    def get(self, failed_run_id: str) -> CompensationRecord | None:
        return self.records.get(failed_run_id)

    def set_run(self, failed_run_id: str, compensation_run_id: str) -> None:
        claim = self.records[failed_run_id]
        self.records[failed_run_id] = replace(claim, compensation_run_id=compensation_run_id)

    def finish(self, failed_run_id: str) -> None:
        claim = self.records[failed_run_id]
        self.records[failed_run_id] = replace(claim, finished_at=self._now())

    def unfinished(self, tenant_id: str) -> list[CompensationRecord]:
        return [
            c
            for c in self.records.values()
            if c.tenant_id == tenant_id and c.finished_at is None and c.gave_up_at is None
        ]


class InMemoryOperations:
    """`registry.operations` (see `registry/operations.py`): tenant id -> (holder, run id)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, str | None]] = {}

    def hold(self, tenant_id: str, holder: str, run_id: str | None = None) -> None:
        """What a use case's claim leaves for the run it launches."""
        self.held[tenant_id] = (holder, run_id)

    def set_run(self, tenant_id: str, holder: str, run_id: str) -> bool:
        if self.held.get(tenant_id, (None, None))[0] != holder:
            return False
        self.held[tenant_id] = (holder, run_id)
        return True

    def release(
        self, tenant_id: str, *, holder: str | None = None, run_id: str | None = None
    ) -> bool:
        current = self.held.get(tenant_id)
        if current is None or holder not in (None, current[0]) or run_id not in (None, current[1]):
            return False
        del self.held[tenant_id]
        return True


class InMemoryRegistry:
    """The registry's stores, one per kind of record, kept in dictionaries."""

    def __init__(self) -> None:
        now = Ticks()
        self.requests = InMemoryRequests(now)
        self.tenants = InMemoryTenants(self.requests, now)
        self.ledger = InMemoryLedger(self.tenants, now)
        self.compensations = InMemoryCompensations(now)
        self.operations = InMemoryOperations()


@dataclass
class Journal:
    """Everything the backends were asked to do, in order: (kind, action, tenant key)."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def of(self, action: str) -> list[str]:
        return [kind for kind, done, _ in self.calls if done == action]


class InMemoryBackend:
    """A backend holding one thing per tenant key, recording the tenant id it was made for;
    `fail` makes calls raise the given errors."""

    def __init__(self, kind: str, journal: Journal) -> None:
        self._kind = kind
        self.journal = journal
        self.things: dict[str, int] = {}  # key -> how many times it was created (must stay 1)
        self.made_for: dict[str, str] = {}  # key -> the tenant id it was made for
        self.created = 0
        self.fail_ensure: list[Exception] = []  # raised by the next ensure calls, in order
        self.fail_release: list[Exception] = []
        self.opened: set[str] = set()
        self.released_for: list[str | None] = []  # the tenant id each release was asked for

    @property
    def kind(self) -> str:
        return self._kind

    def ensure(self, tenant: TenantSpec) -> Handle:
        self.journal.calls.append((self.kind, "ensure", tenant.key))
        if self.fail_ensure:
            raise self.fail_ensure.pop(0)
        check_made_for(
            self.made_for.get(tenant.key), tenant.tenant_id, self.kind, tenant.key, tenant.key
        )
        if tenant.key not in self.things:
            self.things[tenant.key] = 1
            self.made_for[tenant.key] = tenant.tenant_id
            self.created += 1
        return Handle(self.kind, tenant.key, f"{self.kind}/{tenant.key}", self.details(tenant.key))

    def details(self, tenant_key: str) -> dict[str, Any]:
        """What the backend reports of the thing as it is now."""
        return {}

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        self.journal.calls.append((self.kind, "release", tenant_key))
        self.released_for.append(tenant_id)
        if self.fail_release:
            raise self.fail_release.pop(0)
        if not may_act_on(self.made_for.get(tenant_key), tenant_id):
            return False
        self.opened.discard(tenant_key)
        self.made_for.pop(tenant_key, None)
        return self.things.pop(tenant_key, None) is not None

    def list_existing(self) -> set[str]:
        return set(self.things)


class InMemoryIdentity(InMemoryBackend):
    def __init__(self, journal: Journal, token: str = "invitation-token") -> None:
        super().__init__(ResourceKind.IDENTITY, journal)
        self.token = token

    def invitation(self, tenant_key: str) -> Invitation:
        if tenant_key not in self.things:
            raise NotFound(f"tenant {tenant_key!r} has no identity store")
        return Invitation(email="admin@example.com", token=self.token, status="pending")


class InMemoryTraffic(InMemoryBackend):
    def __init__(self, journal: Journal) -> None:
        super().__init__(ResourceKind.ROUTE, journal)
        self.fail_open: list[Exception] = []

    def details(self, tenant_key: str) -> dict[str, Any]:
        return {"state": "open" if tenant_key in self.opened else "closed"}

    def open(self, tenant: TenantSpec) -> Handle:
        self.journal.calls.append((self.kind, "open", tenant.key))
        if self.fail_open:
            raise self.fail_open.pop(0)
        self.ensure(tenant)  # refuses another tenant id's route before opening anything
        self.opened.add(tenant.key)
        return Handle(self.kind, tenant.key, f"{self.kind}/{tenant.key}", self.details(tenant.key))


class InMemoryMailer:
    """Delivers into a list; `answers` scripts what the next sends report (or raise)."""

    from_email = "Tenant Platform <platform@example.com>"

    def __init__(self) -> None:
        self.delivered: list[OutgoingEmail] = []
        self.answers: list[SendResult | Exception] = []
        self.released: list[tuple[str, str]] = []  # (tenant key, tenant id) at decommission

    def release(self, tenant_key: str, tenant_id: str) -> bool:
        self.released.append((tenant_key, tenant_id))
        return True

    def send(self, message: OutgoingEmail) -> SendResult:
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            if answer.ok or answer.maybe_delivered:
                self.delivered.append(message)
            return answer
        self.delivered.append(message)
        return SendResult(True, 202, f"msg-{len(self.delivered)}", None, 1)


@dataclass
class World:
    """A registry, backends, a mailer, a clock and the feed, wired as one saga sees them."""

    registry: InMemoryRegistry = field(default_factory=InMemoryRegistry)
    journal: Journal = field(default_factory=Journal)
    clock: Clock = field(default_factory=Clock)
    events: list[AuditEvent] = field(default_factory=list)
    mailer: InMemoryMailer = field(default_factory=InMemoryMailer)

    def __post_init__(self) -> None:
        self.storage = InMemoryBackend(ResourceKind.STORAGE, self.journal)
        self.identity = InMemoryIdentity(self.journal)
        self.traffic = InMemoryTraffic(self.journal)
        self.deployer = InMemoryBackend(ResourceKind.WORKLOAD, self.journal)

    @property
    def backends(self) -> Backends:
        return Backends(self.storage, self.identity, self.traffic, self.deployer, self.mailer)

    def context(self, run_id: str, root_run_id: str | None = None) -> SagaContext:
        return SagaContext(
            registry=self.registry,
            backends=self.backends,
            served_at="example.test",
            run_id=run_id,
            emit=self.events.append,
            root_run_id=root_run_id,
            clock=self.clock,
        )

    def request(
        self, slug: str = "acme", plan: str = "team", role: str = "org-admin", org: str = "widgets"
    ) -> str:
        request = TenantRequest.parse(
            {
                "slug": slug,
                "org": org,
                "plan": plan,
                "admin_email": f"admin@{slug}.example.com",
                "requested_by": {"subject": "alice", "role": role},
            }
        )
        return self.registry.requests.submit(request).request_id

    def types(self, prefix: str = "") -> list[tuple[str, str | None]]:
        """The feed as (type, step) pairs."""
        return [(e.type, e.step) for e in self.events if e.type.startswith(prefix)]
