"""The broker of a platform with several hosts (TENANT_CELERY_BROKER): Redis, through Celery.

`tenantctl up` and `tenantctl worker` refuse to start when it does not answer, and a worker
host is up once its Celery worker answers a ping through it. The URL, a secret (it may hold a
password), is never said.
"""

import socket
import threading
import time
from typing import TYPE_CHECKING

from tenant_pipelines.localstack.supervisor import StackError
from tenant_pipelines.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

BROKER_TIMEOUT_S = 5.0


def node_name(settings: Settings) -> str:
    """A worker host's Celery worker's name: the host's, then the machine's."""
    return f"{settings.host_name}@{socket.gethostname()}"


def _app(settings: Settings) -> "Celery":
    from celery import Celery

    return Celery("tenant-pipelines-worker", broker=settings.celery_broker)


def check_broker(settings: Settings) -> None:
    """Refuse to start when the broker does not answer (its URL, a secret, is not said)."""
    try:
        with _app(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as error:  # kombu raises the transport's own errors
        raise StackError(
            f"the broker (TENANT_CELERY_BROKER) does not answer: {type(error).__name__}"
        ) from None


def wait_consuming(settings: Settings, deadline: float, stop: threading.Event) -> None:
    """Until the Celery worker answers a ping through the broker: it consumes its queue."""
    control = _app(settings).control
    name = node_name(settings)
    while time.monotonic() < deadline and not stop.is_set():
        if control.ping(destination=[name], timeout=1.0):
            return
    if stop.is_set():
        return
    raise StackError(f"the Celery worker {name} did not answer through the broker in time")
