"""The name of the host a process runs on, among the platform's hosts.

A tenant is placed on one host when it is requested (`service.placement`), and its runs and
workload live there: a run on another host refuses to act on it (`SagaContext.check_host`), for
a release there would find nothing and count that as done. The name is TENANT_HOST_NAME, set on
each host of a platform that has several. Unset, it is `local`, the one host of a single-host
platform: not the machine's host name, which changes under it (a container gets a new one at
every start) and would leave every tenant placed on a host that no longer exists.
"""

import re
from collections.abc import Mapping

HOST_NAME_VAR = "TENANT_HOST_NAME"
WORKER_HOSTS_VAR = "TENANT_WORKER_HOSTS"
SINGLE_HOST = "local"
MAX_HOST_NAME_CHARS = 255
# A worker host's name is also the name of its run queue at the broker (`tenantctl worker`
# consumes it, and a comma separates queues there): letters, digits, `.`, `_` and `-` only.
WORKER_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
DEFAULT_INGRESS_PORT = 8480
INGRESS_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def host_name(env: Mapping[str, str]) -> str:
    """TENANT_HOST_NAME as set (checked), or `local`."""
    name = env.get(HOST_NAME_VAR) or SINGLE_HOST
    if len(name) > MAX_HOST_NAME_CHARS or not name.isprintable() or name.strip() != name:
        raise ValueError(
            f"{HOST_NAME_VAR} must be 1 to {MAX_HOST_NAME_CHARS} printable characters without "
            f"leading or trailing spaces, not {name!r}"
        )
    return name


def worker_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    """The names in TENANT_WORKER_HOSTS: the hosts that run the platform's runs and tenant
    workloads when there are several (`tenantctl worker` on each); () when unset: one host."""
    return tuple(worker_ingresses(env))


def worker_ingresses(env: Mapping[str, str]) -> dict[str, str]:
    """TENANT_WORKER_HOSTS, comma-separated `name` or `name=address:port`: each worker host's name
    and where its ingress listens, which the control host's edge relays its tenants' requests
    to (`name:DEFAULT_INGRESS_PORT` when only the name is given: the name resolves to the host)."""
    entries = [entry.strip() for entry in (env.get(WORKER_HOSTS_VAR) or "").split(",")]
    found: dict[str, str] = {}
    for entry in filter(None, entries):
        name, _, address = (part.strip() for part in entry.partition("="))
        if not WORKER_HOST_NAME.fullmatch(name):
            raise ValueError(
                f"{WORKER_HOSTS_VAR}: {name!r} is not a worker host's name: 1 to 63 letters,"
                " digits, '.', '_' or '-', starting with a letter or digit"
            )
        if name in found:
            raise ValueError(f"{WORKER_HOSTS_VAR} names the host {name!r} twice")
        found[name] = _ingress_address(name, address or f"{name}:{DEFAULT_INGRESS_PORT}")
    return found


def _ingress_address(name: str, address: str) -> str:
    host, _, port = address.rpartition(":")
    if (
        not host
        or not INGRESS_HOST.fullmatch(host)
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ValueError(
            f"{WORKER_HOSTS_VAR}: the ingress of {name!r} must be host:port (a name, an IPv4"
            f" address or [an IPv6 one], and a port 1-65535), not {address!r}"
        )
    return address


def ingress_listen(address: str) -> tuple[str, int]:
    """The host and port of an ingress address (`host:port`, `[v6]:port`), to listen on."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
