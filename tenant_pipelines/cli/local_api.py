"""The command line's one call to the running API server: launch a request just recorded.

Plain `urllib`: an HTTP client library would cost the command more to import than the call.
"""

import json
import urllib.request
from collections.abc import Callable

from tenant_pipelines.support.loopback import LOOPBACK

TIMEOUT_S = 30


def launch_recorded(port: int, request_id: str, warn: Callable[[str], None]) -> None:
    """Ask the API server on `port` to launch the request's run (it answers once the request is
    marked launched, and starts the run after answering). If it cannot be asked, the request
    stays pending and the intake sensor launches it."""
    url = f"http://{LOOPBACK}:{port}/local/requests/{request_id}/launch"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method="POST"), timeout=TIMEOUT_S
        ) as answer:
            json.load(answer)
    except (OSError, ValueError) as error:
        warn(f"the API server was not reached, the intake sensor will launch the run: {error}")
