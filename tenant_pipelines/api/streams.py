"""Server-Sent Events: the audit feed followed live, as `text/event-stream`."""

import json
import time
from collections.abc import Callable, Iterator

from tenant_pipelines.domain.events import AuditEvent

EVENT_STREAM = "text/event-stream"
POLL_S = 0.5
KEEPALIVE_S = 15.0

# Reads the events after a cursor (None: from the start); returns them and the next cursor.
ReadAfter = Callable[[str | None], tuple[list[AuditEvent], str | None]]


def follow(read: ReadAfter, sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """Every event so far, then each new one as it is written; a comment keeps idle
    connections open through proxies. Ends when the client goes away (the server stops
    iterating)."""
    cursor: str | None = None
    quiet_since = time.monotonic()
    while True:
        events, cursor = read(cursor)
        for event in events:
            yield f"event: audit\ndata: {json.dumps(event.to_json(), sort_keys=True)}\n\n"
            quiet_since = time.monotonic()
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            yield ": keepalive\n\n"
            quiet_since = time.monotonic()
        sleep(POLL_S)
