"""The command line's calls to the API server of the platform running on this host (`api.local`).

While `tenantctl up` runs for the data directory, `request`, `status` and `list` ask its API
server over the loopback instead of opening the registry themselves: the command then imports
neither SQLAlchemy nor pydantic (together ~0.3 s of its start on this machine), and the server,
which holds the registry and the instance open, answers in milliseconds. With no platform
running, or no server answering, these commands open the registry themselves, as they always
could. `retry`, `decommission` and `compensate` have the server launch their runs: it is the one
process that launches lifecycle runs. The calls carry the operator key (`support.operator_key`).

Plain `http.client`: an HTTP client library would cost the command more to import than the call.
"""

import http.client
import json
from typing import Any

from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.localstack.stack_file import read_stack
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.loopback import LOOPBACK
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER, read_operator_key

TIMEOUT_S = 30


class PlatformRefused(TenantPipelinesError):
    """The API server answered with an error: its sentence, and the HTTP status that classes it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PlatformUnreachable(OSError):
    """No answer from the API server (it is restarting, or stopped since the stack file was
    read): the command does the work itself."""


class PlatformApi:
    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key

    def call(self, method: str, path: str, body: Any = None, timeout_s: float = TIMEOUT_S) -> Any:
        """The JSON answer; PlatformRefused for an error status, PlatformUnreachable for none."""
        headers = {OPERATOR_KEY_HEADER: self.key, "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout_s)
        try:
            try:
                connection.request(method, path, payload, headers)
                answer = connection.getresponse()
                status, raw = answer.status, answer.read()
            except (OSError, http.client.HTTPException) as error:
                raise PlatformUnreachable(f"the API server did not answer: {error}") from error
        finally:
            connection.close()
        return _decoded(status, raw)


def _decoded(status: int, raw: bytes) -> Any:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if status < 300 and data is not None:
        return data
    message = data.get("error") if isinstance(data, dict) else None
    raise PlatformRefused(status, message or f"the API server answered HTTP {status}")


def running_platform_api(settings: Settings) -> PlatformApi | None:
    """The API server of the platform running for this data directory, if it has made its key."""
    stack = read_stack(settings)
    key = read_operator_key(settings.data_dir) if stack else None
    if stack is None or key is None:
        return None
    return PlatformApi(int(stack["api_port"]), key)
