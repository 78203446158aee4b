"""The name of the host a process runs on, among the platform's hosts.

A tenant is placed on one host when it is requested (`service.placement`), and its runs and
workload live there: a run on another host refuses to act on it (`SagaContext.check_host`), for
a release there would find nothing and count that as done. The name is TENANT_HOST_NAME, set on
each host of a platform that has several. Unset, it is `local`, the one host of a single-host
platform: not the machine's host name, which changes under it (a container gets a new one at
every start) and would leave every tenant placed on a host that no longer exists.
"""

from collections.abc import Mapping

HOST_NAME_VAR = "TENANT_HOST_NAME"
SINGLE_HOST = "local"
MAX_HOST_NAME_CHARS = 255


def host_name(env: Mapping[str, str]) -> str:
    """TENANT_HOST_NAME as set (checked), or `local`."""
    name = env.get(HOST_NAME_VAR) or SINGLE_HOST
    if len(name) > MAX_HOST_NAME_CHARS or not name.isprintable() or name.strip() != name:
        raise ValueError(
            f"{HOST_NAME_VAR} must be 1 to {MAX_HOST_NAME_CHARS} printable characters without "
            f"leading or trailing spaces, not {name!r}"
        )
    return name
