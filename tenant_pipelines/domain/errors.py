"""Errors named by whether they may be retried.

Everything not derived from `PermanentError` is treated as transient and retried under the op's
RetryPolicy; a `PermanentError` fails the op at once (Dagster `Failure(allow_retries=False)`).
"""

from collections.abc import Callable
from dataclasses import dataclass


class TenantPipelinesError(Exception):
    """Base of every error this package raises on purpose."""


class PermanentError(TenantPipelinesError):
    """An error that another attempt cannot fix."""


class WrongHost(PermanentError):
    """A run on one host was asked to act on a tenant placed on another: what it would find here
    (no workload, no route) says nothing of the tenant, so it does nothing."""

    def __init__(self, tenant_key: str, placed_on: str, this_host: str) -> None:
        super().__init__(
            f"tenant {tenant_key} is placed on host {placed_on!r}; this run is on host "
            f"{this_host!r} and acts on nothing of it here"
        )


class BusinessRefusal(PermanentError):
    """Validate refused the request (slug taken, plan unknown, role not allowed)."""


def slug_unavailable(slug: str, org: str | None = None, taken_key: str | None = None) -> str:
    """The refusal any caller may read: it names only the refused request's own slug, org and
    address, never what holds them (that may be another org's)."""
    if taken_key is None:
        return f"slug {slug} is not available"
    return f"slug {slug} is not available in org {org}: the address {taken_key} is taken"


class SlugTaken(BusinessRefusal):
    """The slug, or the tenant key `<slug>-<org>` it makes (`taken_key`), is held by another
    tenant. The message reaches the refused request's org (its status, its feed), and the holder
    may be another org's: it says nothing of the holder."""

    def __init__(self, slug: str, org: str | None = None, taken_key: str | None = None) -> None:
        super().__init__(slug_unavailable(slug, org, taken_key))
        self.slug = slug
        self.org = org
        self.taken_key = taken_key


@dataclass(frozen=True)
class Holder:
    """What holds a slug or a tenant key: a live tenant, or a request in flight."""

    kind: str  # "tenant" | "request"
    name: str  # the tenant's slug, or the request's id
    org: str
    state: str

    def describe(self, with_org: bool = False) -> str:
        org = f" of org {self.org}" if with_org else ""
        if self.kind == "tenant":
            return f"tenant {self.name}{org} ({self.state})"
        return f"request {self.name}{org}, in flight"


def sees_every_org(org: str) -> bool:
    """How the host's operator (and the platform-admin) sees: every org."""
    return True


class SlugInUse(SlugTaken):
    """Refused at submission: a live tenant or another request in flight holds the slug or the
    key. The message names neither the holder's org nor its state; `told_to` gives the account
    naming the holder to a caller who sees its org (its own org, the platform-admin, the host's
    operator)."""

    def __init__(
        self,
        slug: str,
        holder: Holder,
        *,
        org: str | None = None,
        taken_key: str | None = None,
        revealed: bool = False,
    ) -> None:
        super().__init__(slug, org, taken_key)
        self.holder = holder
        self.revealed = revealed
        if revealed:
            self.args = (self._account(),)

    def _account(self) -> str:
        if self.taken_key is None:
            return f"slug {self.slug} is taken by {self.holder.describe()}; choose another slug"
        return f"{slug_unavailable(self.slug, self.org, self.taken_key)} by " + (
            self.holder.describe(with_org=True)
        )

    def told_to(self, sees: Callable[[str], bool]) -> "SlugInUse":
        """The refusal as this caller may read it (`sees`: whether it may see an org)."""
        if self.revealed or not sees(self.holder.org):
            return self
        return SlugInUse(
            self.slug, self.holder, org=self.org, taken_key=self.taken_key, revealed=True
        )


class Refused(PermanentError):
    """The tenant is not in a state that admits the operation (CLI exit 3, API 409)."""


class OperationInFlight(TenantPipelinesError):
    """Another lifecycle operation (retry, decommission, compensation) holds the tenant: the
    caller is refused at once (CLI exit 3, API 409), never queued behind it."""

    def __init__(self, slug: str, kind: str, run_id: str | None) -> None:
        run = f" (run {run_id})" if run_id else " (its run is being launched)"
        super().__init__(f"tenant {slug} has a {kind} in flight{run}; try again when it has ended")
        self.slug = slug
        self.kind = kind
        self.run_id = run_id


class InvalidTransition(PermanentError):
    def __init__(self, machine: str, current: str, target: str) -> None:
        super().__init__(f"{machine} cannot go from {current!r} to {target!r}")
        self.current = current
        self.target = target


class NotFound(TenantPipelinesError):
    """A tenant or request that the caller named does not exist."""


class RequestConflict(PermanentError):
    """The same request id was submitted again, by the same caller, with different content."""


class RequestIdTaken(RequestConflict):
    """The request id (an API caller's Idempotency-Key) is another caller's request: nothing of
    that request is said, not its fields, not its state, not whose it is."""

    def __init__(self, what: str = "this request id") -> None:
        super().__init__(f"{what} cannot be used; send a new one")


class OwnedByAnotherTenant(PermanentError):
    """A backend holds something under this tenant's key that was made for another tenant id.
    It is neither adopted nor changed: no tenant acts on another's resources."""

    def __init__(self, kind: str, name: str, tenant_key: str) -> None:
        super().__init__(
            f"{kind} {name} under the key {tenant_key} was made for another tenant;"
            " refusing to adopt it"
        )
        self.kind = kind
        self.name = name
        self.tenant_key = tenant_key


class ReadinessTimeout(TenantPipelinesError):
    """A workload did not pass its readiness check in time: transient, so the op retries it."""

    def __init__(self, tenant_key: str, seconds: float, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"workload of tenant {tenant_key!r} was not ready within {seconds:g} s{detail}"
        )
        self.tenant_key = tenant_key
        self.seconds = seconds


class FaultPlanError(PermanentError):
    """The fault plan file (TENANT_FAULT_PLAN) is malformed: fix the file, retrying cannot."""


class InjectedFault(TenantPipelinesError):
    """A transient failure injected by the fault plan: retried like any transient error."""


class PermanentInjectedFault(PermanentError):
    """A permanent failure injected by the fault plan: never retried."""


class CompensationInProgress(TenantPipelinesError):
    """A retry found the tenant still being compensated (transient: retried)."""


class RegistryUnavailable(TenantPipelinesError):
    """The control-plane database cannot be read or written: a corrupt or unreadable file, a full
    disk, a server that does not answer. Transient (an op retries it: the disk may be freed, the
    server come back); commands and the API report it in one sentence naming the store."""

    def __init__(self, store: str, cause: str) -> None:
        super().__init__(f"the registry at {store} is unavailable: {cause}")
        self.store = store
        self.cause = cause


class ConfigError(PermanentError):
    """The environment asks for something impossible or contradictory: fix it, retrying cannot."""


class PlatformNotRunning(TenantPipelinesError):
    """What was asked needs the running platform to launch a run, and none runs here."""

    def __init__(self) -> None:
        super().__init__("the platform is not running: start it with `tenantctl up`")
