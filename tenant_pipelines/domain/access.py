"""Who may do what (docs/contracts.md): callers come from API tokens, never from a request body.

`platform-admin`: every org, every plan, every action. `org-admin`: its own org only; plans
`free` and `team`; submit, retry, decommission, read. `viewer`: read its own org only. `metrics`:
the platform's metrics (`/metrics`, which name no tenant) and no tenant at all. A tenant of
another org is not found (its existence is not revealed); an action the role does not allow is
forbidden, with the reason.
"""

from dataclasses import dataclass
from enum import StrEnum

from tenant_pipelines.domain.errors import NotFound, TenantPipelinesError
from tenant_pipelines.domain.plans import ROLE_PLANS, Role


class Action(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    RETRY = "retry"
    DECOMMISSION = "decommission"


ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.PLATFORM_ADMIN: frozenset(Action),
    Role.ORG_ADMIN: frozenset(Action),
    Role.VIEWER: frozenset({Action.READ}),
    Role.METRICS: frozenset(),
}
METRICS_READERS = frozenset({Role.PLATFORM_ADMIN, Role.METRICS})
ORG_SCOPED_ROLES = frozenset({Role.ORG_ADMIN, Role.VIEWER})


class NotAuthenticated(TenantPipelinesError):
    """No credential, or one that is unknown, expired or revoked."""


class Forbidden(TenantPipelinesError):
    """The caller is who they say, but their role does not allow this."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: what its token says, nothing from the request."""

    subject: str
    role: Role
    org: str | None  # None only for platform-admin: every org
    token_id: str

    def sees(self, org: str) -> bool:
        if self.role == Role.METRICS:
            return False  # org None, yet no org: it reads aggregates only
        return self.org is None or self.org == org


@dataclass(frozen=True)
class Operator:
    """The host's operator: `tenantctl` on the control-plane host, directly or through the API
    server's `/local`. Whoever can run it can read the data directory, so it acts on every org
    with every plan; what it launches is recorded as `subject`."""

    subject: str  # `operator:<login>`; for `tenantctl request`, the `--caller` it names

    def sees(self, org: str) -> bool:
        return True


# Whoever asks the service for something: a token's caller, or the host's operator.
Actor = Caller | Operator


def check_visible(caller: Actor, org: str, what: str) -> None:
    """Another org's tenant does not exist for this caller (NotFound, not Forbidden)."""
    if not caller.sees(org):
        raise NotFound(f"no tenant or request with slug {what!r}")


def authorize_operator_ui(caller: Caller) -> None:
    """The Dagster UI shows and acts on every org's runs: a platform-admin's only."""
    if caller.role != Role.PLATFORM_ADMIN:
        raise Forbidden(f"role {caller.role} may not open the Dagster UI (it shows every org)")


def authorize_metrics(caller: Caller) -> None:
    """`/metrics`: a platform-admin's, or a `metrics` token's (a Prometheus server holds one)."""
    if caller.role not in METRICS_READERS:
        raise Forbidden(f"role {caller.role} may not read the platform's metrics")


def authorize_batch(caller: Actor, action: Action) -> None:
    """A batch of `action` at all: each of its tenants is then authorized as one call would be."""
    if isinstance(caller, Caller) and action not in ROLE_ACTIONS[caller.role]:
        raise Forbidden(f"role {caller.role} may not {action} tenants")


def authorize(caller: Actor, action: Action, org: str, plan: str | None = None) -> None:
    """Raise unless `caller` may do `action` on `org` (and provision `plan`, for submit)."""
    if isinstance(caller, Operator):
        return
    if action not in ROLE_ACTIONS[caller.role]:
        raise Forbidden(f"role {caller.role} may not {action} tenants")
    if not caller.sees(org):
        raise Forbidden(f"a token for org {caller.org!r} cannot act on org {org!r}")
    if plan is not None and plan not in ROLE_PLANS[caller.role]:
        raise Forbidden(f"role {caller.role} may not provision plan {plan!r}")
