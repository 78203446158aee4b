"""Errors named by whether they may be retried.

Everything not derived from `PermanentError` is treated as transient and retried under the op's
RetryPolicy; a `PermanentError` fails the op at once (Dagster `Failure(allow_retries=False)`).
"""


class TenantPipelinesError(Exception):
    """Base of every error this package raises on purpose."""


class PermanentError(TenantPipelinesError):
    """An error that another attempt cannot fix."""


class BusinessRefusal(PermanentError):
    """Validate refused the request (slug taken, plan unknown, role not allowed)."""


class SlugTaken(BusinessRefusal):
    def __init__(self, slug: str) -> None:
        super().__init__(f"slug {slug!r} is already taken by a tenant that is not decommissioned")
        self.slug = slug


class SlugInUse(SlugTaken):
    """Refused at submission: a live tenant or another request in flight holds the slug."""

    def __init__(self, slug: str, holder: str) -> None:
        BusinessRefusal.__init__(self, f"slug {slug} is taken by {holder}; choose another slug")
        self.slug = slug


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
    """The same request id was submitted again with different content."""


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


class ForeignResource(PermanentError):
    """A backend holds something under the tenant's key that was made for another tenant id:
    never adopted, changed or released on this tenant's behalf."""

    def __init__(self, what: str, tenant_key: str) -> None:
        super().__init__(
            f"the {what} under key {tenant_key!r} was made for another tenant;"
            " refusing to adopt, change or release it"
        )
        self.tenant_key = tenant_key
