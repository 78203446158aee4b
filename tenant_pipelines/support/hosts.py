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
    """TENANT_WORKER_HOSTS, comma-separated: the hosts that run the platform's runs and tenant
    workloads when there are several (`tenantctl worker` on each); () when unset: one host."""
    names = tuple(name.strip() for name in (env.get(WORKER_HOSTS_VAR) or "").split(",") if name)
    for name in names:
        if not WORKER_HOST_NAME.fullmatch(name):
            raise ValueError(
                f"{WORKER_HOSTS_VAR}: {name!r} is not a worker host's name: 1 to 63 letters,"
                " digits, '.', '_' or '-', starting with a letter or digit"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{WORKER_HOSTS_VAR} names a host twice: {', '.join(names)}")
    return names
