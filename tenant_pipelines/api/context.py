"""What the API server holds for its lifetime: the registry, the Dagster instance (for the feed),
the Dagster UI it serves behind its door (and launches lifecycle runs through), and the
addresses it links to."""

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.ports import Relauncher
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import operator_key_file, secret_in

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from tenant_pipelines.runtime.dagster_ui import DagsterUi

DAGSTER_UI_PATH = "/dagster"  # the Dagster UI, behind the door (api.dagster_door)


@dataclass(frozen=True)
class Addresses:
    """Where the rest of the platform is; None when it is not running (tests)."""

    # The platform's workspace.yaml: runs are launched from here, and the Dagster UI serves it.
    workspace: Path | None = None


class ApiContext:
    """Shared by every request; the registry and the instance are safe across threads."""

    def __init__(self, settings: Settings, addresses: Addresses) -> None:
        self.settings = settings
        self.addresses = addresses
        self._instance_lock = threading.Lock()
        self._instance: DagsterInstance | None = None
        self.dagster_ui: DagsterUi | None = None
        self._launcher: Relauncher | None = None

    @cached_property
    def registry(self) -> TenantRegistry:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return TenantRegistry.shared(self.settings.db_url)

    def instance(self) -> "DagsterInstance":
        """Opened at first use and held: the feed reads it on every poll."""
        with self._instance_lock:
            if self._instance is None:
                from tenant_pipelines.orchestration.feed import feed_instance
                from tenant_pipelines.orchestration.instance import open_instance

                instance = open_instance(self.settings.dagster_home, self.settings)
                self._instance = feed_instance(instance)
            return self._instance

    @property
    def service(self) -> ServiceContext:
        """What the use cases work with here: the registry, the instance's runs (where the events
        no run writes are reported: a batch's), and, under
        `tenantctl up` (once `open`ed with the workspace), this process's launcher: new runs
        built in-process, re-executions through the Dagster UI's schema (`runtime.launchers`).
        Without it nothing launches here (a submitted request waits for the intake sensor)."""
        from tenant_pipelines.orchestration.feed import to_observation
        from tenant_pipelines.orchestration.runs import DagsterRuns

        instance = self.instance()
        return ServiceContext(
            self.registry,
            DagsterRuns(instance),
            self._launcher,
            report=lambda event: instance.report_runless_asset_event(to_observation(event)),
            hosts=self.settings.placement_hosts,
        )

    def _open_launcher(self, ui: "DagsterUi", workspace: Path) -> None:
        from tenant_pipelines.orchestration.graphql import DagsterApi
        from tenant_pipelines.runtime.direct_launch import DirectLauncher
        from tenant_pipelines.runtime.launchers import ApiServerLauncher

        direct = DirectLauncher(self.instance(), workspace)
        self._launcher = ApiServerLauncher(direct, DagsterApi(ui.execute))

    def open(self) -> None:
        """Open the registry and the instance (importing Dagster), make the run launcher ready
        and load the Dagster UI's workspace, now rather than at the first request."""
        _ = self.registry
        _ = self.operator_key  # before /healthz answers: `tenantctl up` is then ready for it
        instance = self.instance()
        if self.addresses.workspace is not None:
            from tenant_pipelines.runtime.dagster_ui import DagsterUi

            _ = instance.run_launcher  # starts its fork server under `tenantctl up`
            self.dagster_ui = DagsterUi(instance, self.addresses.workspace, DAGSTER_UI_PATH)
            self._open_launcher(self.dagster_ui, self.addresses.workspace)

    def close(self) -> None:
        self._launcher = None
        if self.dagster_ui is not None:
            self.dagster_ui.close()
            self.dagster_ui = None
        with self._instance_lock:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None

    def run_url(self, run_id: str) -> str | None:
        """A run's page in the Dagster UI, on this server's origin (through the door)."""
        return f"{DAGSTER_UI_PATH}/runs/{run_id}" if self.dagster_ui else None

    def admin_console_url(self, slug: str, org: str) -> str:
        """The tenant's admin console, at the address the edge serves it."""
        return f"https://{slug}-{org}.{self.settings.served_at}/admin"

    @cached_property
    def operator_key(self) -> str:
        """What `/local` calls from the host's command line carry (`support.operator_key`)."""
        return secret_in(operator_key_file(Path(self.settings.data_dir)))
