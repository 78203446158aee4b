"""The control host's edge follows the registry's routes, on a platform with several hosts.

A worker host's runs make, open and remove their tenants' routes in the registry
(`registry.routes`), and each change is announced on PostgreSQL (`LISTEN`/`NOTIFY`) when it
commits. `tenantctl up` on the control host keeps this follower beside its edge: it listens, then
writes every route's markers once (so that nothing changed between the edge's start and the
listening is missed), then writes each announced tenant's markers as the table holds them then.
A lost connection is opened again after `RETRY_S`, and everything is written again; so is it every
`RESYNC_S` in any case, in case an announcement was lost with a connection nobody noticed.
"""

import select
import threading
import time
from collections.abc import Callable

import psycopg2

from resources import gateway
from tenant_pipelines.composition import route_source
from tenant_pipelines.registry.routes import ROUTES_CHANNEL
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.db_url import libpq_url

RETRY_S = 1.0
RESYNC_S = 60.0
POLL_S = 0.5  # how soon a stop is noticed
# A server that vanished is noticed within about 25 s even while nothing is announced.
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class RouteFollower:
    """A thread that keeps the edge's markers (in `settings.data_dir`) in step with the registry."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        self._settings = settings
        self._say = say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-follower", daemon=True)
        self._failing = ""  # said once per streak of failures

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as error:  # the database or the disk away: tried again
                # psycopg2's messages name the server, never its password; ours the same.
                first_line = (str(error).strip().splitlines() or [""])[0]
                reason = f"{type(error).__name__}: {first_line}"
                if reason != self._failing:
                    self._failing = reason
                    self._say(f"edge: the registry's routes cannot be followed now ({reason})")
            self._stop.wait(RETRY_S)

    def _follow(self) -> None:
        source = route_source(self._settings)
        data_dir = self._settings.data_dir
        conn = psycopg2.connect(libpq_url(self._settings.db_url), connect_timeout=10, **KEEPALIVE)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {ROUTES_CHANNEL}")
            gateway.publish(data_dir, None, source)
            if self._failing:
                self._say("edge: following the registry's routes again")
                self._failing = ""
            synced = time.monotonic()
            while not self._stop.is_set():
                if select.select([conn], [], [], POLL_S)[0]:
                    conn.poll()
                    keys = sorted({notice.payload for notice in conn.notifies})
                    conn.notifies.clear()
                    for key in keys:
                        gateway.publish(data_dir, key, source)
                if time.monotonic() - synced > RESYNC_S:
                    gateway.publish(data_dir, None, source)
                    synced = time.monotonic()
        finally:
            conn.close()
