"""What a use case works with: the registry, the orchestrator's runs, a launcher, and where to
report. Each door builds one for its process (the API server, a run's hook, a sensor's tick,
`tenantctl` without a platform) and passes it to the use case it calls."""

from dataclasses import dataclass, field

from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.context import SystemClock
from tenant_pipelines.saga.ports import Clock, EventSink
from tenant_pipelines.service.ports import Relauncher, Runs


def _nowhere(_: object) -> None:
    return None


@dataclass(frozen=True)
class ServiceContext:
    registry: TenantRegistry
    runs: Runs
    # None: this process launches nothing (a recorded request waits for the intake sensor).
    launcher: Relauncher | None = None
    # Where the service reports an event no run writes (a compensation given up).
    report: EventSink = _nowhere
    clock: Clock = field(default_factory=SystemClock)
    # The hosts new tenants are placed on (`service.placement`): the door's own host until
    # worker hosts exist; none, and a request is recorded unplaced.
    hosts: tuple[str, ...] = ()
