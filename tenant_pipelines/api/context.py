"""What the API server holds for its lifetime: the registry, the Dagster instance (for the feed),
the webserver's API (to launch runs), and the addresses it links to."""

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from tenant_pipelines.orchestration.graphql import DagsterApi
from tenant_pipelines.orchestration.intake import Launcher
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import operator_key_file, secret_in

if TYPE_CHECKING:
    from dagster import DagsterInstance

LOCAL_DOMAIN = "localhost"


@dataclass(frozen=True)
class Addresses:
    """Where the rest of the platform listens; None when it is not running (tests)."""

    dagster_port: int | None = None
    edge_port: int | None = None
    workspace: Path | None = None  # the platform's workspace.yaml: runs are launched from here
    host: str = "127.0.0.1"

    @property
    def dagster_ui(self) -> str | None:
        return f"http://{self.host}:{self.dagster_port}" if self.dagster_port else None


class ApiContext:
    """Shared by every request; the registry and the instance are safe across threads."""

    def __init__(self, settings: Settings, addresses: Addresses) -> None:
        self.settings = settings
        self.addresses = addresses
        self._instance_lock = threading.Lock()
        self._instance: DagsterInstance | None = None

    @cached_property
    def registry(self) -> TenantRegistry:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return TenantRegistry.shared(self.settings.db_url)

    @cached_property
    def dagster(self) -> DagsterApi | None:
        port = self.addresses.dagster_port
        return DagsterApi(port, self.addresses.host) if port else None

    def instance(self) -> "DagsterInstance":
        """Opened at first use and held: the feed reads it on every poll."""
        with self._instance_lock:
            if self._instance is None:
                from tenant_pipelines.orchestration.feed import feed_instance
                from tenant_pipelines.orchestration.instance import open_instance

                instance = open_instance(self.settings.dagster_home, self.settings)
                self._instance = feed_instance(instance)
            return self._instance

    @cached_property
    def launcher(self) -> Launcher | None:
        """Submissions launch their runs from this process when it knows the workspace (under
        `tenantctl up`), else through the webserver's API, else not at all (the sensor will)."""
        if self.addresses.workspace is not None:
            from tenant_pipelines.runtime.direct_launch import DirectLauncher

            return DirectLauncher(self.instance(), self.addresses.workspace)
        return self.dagster

    def open(self) -> None:
        """Open the registry and the instance (importing Dagster), and make the run launcher
        ready, now rather than at the first request."""
        _ = self.registry
        _ = self.operator_key  # before /healthz answers: `tenantctl up` is then ready for it
        self.instance()
        if self.addresses.workspace is not None:
            _ = self.instance().run_launcher  # starts its fork server under `tenantctl up`

    def close(self) -> None:
        with self._instance_lock:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None

    def run_url(self, run_id: str) -> str | None:
        ui = self.addresses.dagster_ui
        return f"{ui}/runs/{run_id}" if ui else None

    def admin_console_url(self, slug: str, org: str) -> str:
        """The tenant's admin console: on the local default, through the edge on this host."""
        host = f"{slug}-{org}.{self.settings.domain}"
        if self.settings.domain == LOCAL_DOMAIN and self.addresses.edge_port:
            return f"http://{host}:{self.addresses.edge_port}/admin"
        return f"https://{host}/admin"

    @cached_property
    def operator_key(self) -> str:
        """What `/local` calls from the host's command line carry (`support.operator_key`)."""
        return secret_in(operator_key_file(Path(self.settings.data_dir)))
