"""The name of the host a process runs on, among the platform's hosts.

A tenant is placed on one host when it is requested (`service.placement`), and its runs and
workload live there: a run on another host refuses to act on it (`SagaContext.check_host`), for
a release there would find nothing and count that as done. The name is TENANT_HOST_NAME, or
the machine's own host name; two hosts that share a host name (network namespaces on one
machine) are told apart by setting it.
"""

import socket
from collections.abc import Mapping

HOST_NAME_VAR = "TENANT_HOST_NAME"
MAX_HOST_NAME_CHARS = 255


def host_name(env: Mapping[str, str]) -> str:
    """TENANT_HOST_NAME as set (checked), or this machine's host name."""
    name = env.get(HOST_NAME_VAR) or socket.gethostname()
    if len(name) > MAX_HOST_NAME_CHARS or not name.isprintable() or name.strip() != name:
        raise ValueError(
            f"{HOST_NAME_VAR} must be 1 to {MAX_HOST_NAME_CHARS} printable characters without "
            f"leading or trailing spaces, not {name!r}"
        )
    return name
