"""A tenant's workload: the authentication service of one tenant, as a local process.

Standard library only (no Dagster import; psycopg2 only for a PostgreSQL identity store; the
project's stdlib-only helpers in `tenant_pipelines.support`), so each tenant costs a few megabytes.
It serves on the listening Unix socket the deployer bound and handed over (`--listen-fd`): the
platform, not the workload, decides where the gateway relays the tenant's traffic, and writes the
state file that says so. Started as root (`--run-as UID:GID`), it imports all it needs, then gives
up root for its tenant's own uid before it reads a tenant file or serves: shut in its identity
store's directory (a SQLite store) or not (a PostgreSQL one), with no groups, no capabilities and no
new privileges. It checks the tenant's identity store (reachable, first admin present) before it
serves, so a workload that cannot reach its users never reports itself healthy. Started by
`resources.deployer`; run as `python -m resources.workload_server --tenant-key K --tenant-id I
--domain D --identity-db P --state-file S --listen-fd N [--run-as U:G]` (SQLite store), or with
`--identity-schema NAME` instead of `--identity-db` (PostgreSQL store) and the DSN in the
environment variable TENANT_WORKLOAD_IDENTITY_DSN: never in argv, which every local user can read in
/proc.
"""

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import socketserver
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from resources.admin_accounts import Accounts, PostgresAccounts, SQLiteAccounts
from resources.admin_http import Request, Response
from resources.tenant_admin import TenantAdmin
from resources.workload_env import IDENTITY_DSN_ENV
from tenant_pipelines.support import sqlite
from tenant_pipelines.support.privileges import PrivilegeError, drop_to
from tenant_pipelines.support.procs import lower_priority
from tenant_pipelines.support.redact import loggable_target

REQUEST_TIMEOUT_S = 30.0
QUIET_PATHS = frozenset({"/healthz"})
ADMIN_ROLE = "admin"  # as resources.identity seeds it (not imported: this module stays light)
PG_CONNECT_TIMEOUT_S = 5
IDLE_CLOSE_S = 2.0  # a PostgreSQL identity store's session, kept between checks
THREAD_STACK_BYTES = 512 * 1024
# A Unix socket's peer has no address: it is the gateway (or the deployer's readiness check), and
# the client's address is what the gateway says in X-Forwarded-For.
PEER = "gateway"
MAX_CLIENT_CHARS = 64
MAX_LINE_BYTES = 8192
# What is read and dropped after a refused request: a few of the edge's largest requests.
DRAIN_BYTES = 1024 * 1024
DRAIN_S = 1.0
MAX_HEADERS = 100
MAX_BODY_BYTES = 1 << 20
REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


class IdentityUnavailable(Exception):
    """The identity store is missing, unreadable, or has no admin."""


class SQLiteIdentity:
    """The tenant's users in its SQLite identity database, opened read-only."""

    def __init__(self, path: str) -> None:
        self.path = path

    def count_users(self) -> int:
        try:
            conn = sqlite.connect(Path(self.path), "ro")
            try:
                total, admins = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE role = ?) FROM users", (ADMIN_ROLE,)
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as error:
            raise IdentityUnavailable(str(error)) from None
        return _checked(int(total), int(admins))


class PostgresIdentity:
    """The tenant's users in its identity schema, read as the schema's own role.

    The DSN logs in as that role (the deployer grants it a login and a password derived from a
    platform secret), never as the server's admin; `SET ROLE` to itself changes nothing then,
    and keeps the check to exactly that role's privileges whatever login a DSN names.

    One session is kept between checks and closed once idle for `IDLE_CLOSE_S`. A deploy checks
    three times within a second or two (the start, readiness, the first traffic), and a new
    server session costs the server more than the query does; an idle tenant holds none, so
    hundreds of them stay within the server's `max_connections`.
    """

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self._lock = threading.Lock()  # one check at a time on the kept session
        self._conn: Any = None
        self._used_at = 0.0
        self._closer: threading.Thread | None = None

    def count_users(self) -> int:
        import psycopg2

        with self._lock:
            try:
                total, admins = self._count_on_kept_session()
            except psycopg2.Error as error:
                self._close()
                raise IdentityUnavailable(str(error).strip()) from None
            finally:
                self._used_at = time.monotonic()
                self._close_when_idle()
        return _checked(int(total), int(admins))

    def _count_on_kept_session(self) -> tuple[int, int]:
        import psycopg2

        if self._conn is not None:
            try:
                return self._count(self._conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._close()  # the server ended it while idle (a restart): once more, anew
        self._conn = self._connect()
        return self._count(self._conn)

    def _connect(self) -> Any:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.dsn, connect_timeout=PG_CONNECT_TIMEOUT_S)
        try:
            conn.autocommit = True  # no transaction left open between checks
            with conn.cursor() as cursor:
                cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.schema)))
        except psycopg2.Error:
            conn.close()
            raise
        return conn

    def _count(self, conn: Any) -> tuple[int, int]:
        from psycopg2 import sql

        with conn.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT count(*), count(*) FILTER (WHERE role = %s) FROM {}").format(
                    sql.Identifier(self.schema, "users")
                ),
                [ADMIN_ROLE],
            )
            total, admins = cursor.fetchone()
        return total, admins

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _close_when_idle(self) -> None:
        """Start the thread that closes the kept session once idle (under `_lock`)."""
        if self._conn is not None and self._closer is None:
            self._closer = threading.Thread(target=self._close_once_idle, daemon=True)
            self._closer.start()

    def _close_once_idle(self) -> None:
        while True:
            with self._lock:
                idle_s = time.monotonic() - self._used_at
                if self._conn is None or idle_s >= IDLE_CLOSE_S:
                    self._close()
                    self._closer = None
                    return
            time.sleep(IDLE_CLOSE_S - idle_s)


def _checked(total: int, admins: int) -> int:
    if not admins:
        raise IdentityUnavailable("the identity store has no admin")
    return total


IdentityReader = SQLiteIdentity | PostgresIdentity


def accounts_of(identity: IdentityReader) -> Accounts:
    """The same store, as the admin console's sign-in reads and redeems it."""
    if isinstance(identity, SQLiteIdentity):
        return SQLiteAccounts(identity.path)
    return PostgresAccounts(identity.dsn, identity.schema)


def users_line(identity: IdentityReader) -> str:
    """What the admin console says of the tenant's users."""
    try:
        return f"{identity.count_users()} user(s)"
    except IdentityUnavailable:
        return "identity store unavailable"


def discovery_document(issuer: str) -> dict[str, object]:
    """The OpenID Provider metadata clients use to find this tenant's endpoints."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "end_session_endpoint": f"{issuer}/logout",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }


class WorkloadHandler(socketserver.StreamRequestHandler):
    """One request per connection, routed by path; the tenant's settings live on the server.

    HTTP is spoken by hand, minimally (a request line, headers, a Content-Length body; one
    response, then the connection closes): `http.server` pulls in `http.client`, `email` and
    `ssl`, which doubled each tenant's memory (12 MB PSS against 6). The edge and the deployer's
    readiness check are its only clients.
    """

    server: "WorkloadServer"
    timeout = REQUEST_TIMEOUT_S
    command = ""
    path = ""
    headers: dict[str, str]
    body = b""

    def handle(self) -> None:
        try:
            if not self._read_request():
                return
        except (OSError, ValueError):
            self._send_json(400, {"error": "bad request"})
            self._drain()
            return
        route = self.path.split("?", 1)[0]
        if route == "/admin" or route.startswith("/admin/"):
            self._admin(route)
        elif self.command not in ("GET", "HEAD"):
            self._not_found()
        elif route == "/healthz":
            self._healthz()
        elif route == "/.well-known/openid-configuration":
            self._send_json(200, discovery_document(self.server.issuer))
        else:
            self._not_found()

    def _drain(self) -> None:
        """After refusing a request it did not read to its end, read and drop the rest (up to
        `DRAIN_BYTES`, `DRAIN_S`) before the connection closes. Closed with unread input, the
        edge still writing the request would find the socket gone and report the workload down
        (503) instead of relaying this 400."""
        deadline = time.monotonic() + DRAIN_S  # in all: a writer trickling bytes gets no more
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            left = DRAIN_BYTES
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                if not (chunk := self.connection.recv(min(left, 65536))):
                    return
                left -= len(chunk)

    def _read_request(self) -> bool:
        """Read the request line, the headers and any body; False if the client sent nothing."""
        line = self.rfile.readline(MAX_LINE_BYTES)
        if not line:
            return False
        self.command, self.path, _version = line.decode("latin-1").rstrip("\r\n").split(" ")
        self.headers = {}
        for _ in range(MAX_HEADERS):
            header = self.rfile.readline(MAX_LINE_BYTES)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "cookie" and name in self.headers:  # several Cookie lines are one list
                value = f"{self.headers[name]}; {value}"
            self.headers[name] = value  # otherwise the last wins (the edge appends its own)
        length = int(self.headers.get("content-length", 0))
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError("request body too large")
        self.body = self.rfile.read(length)
        return True

    def _healthz(self) -> None:
        try:
            self.server.identity.count_users()
        except IdentityUnavailable as error:
            self._send_json(
                503,
                {"status": "unavailable", "tenant": self.server.tenant_key, "error": str(error)},
            )
            return
        self._send_json(200, {"status": "ok", "tenant": self.server.tenant_key})

    def _admin(self, route: str) -> None:
        """The admin console and its sign-in (`resources.tenant_admin`)."""
        request = Request(self.command, route, self.headers, self.body, PEER)
        answer: Response = self.server.admin.handle(request)
        self._send(answer.status, answer.content_type, answer.body, answer.headers)

    def _not_found(self) -> None:
        self._send_json(404, {"error": "not found", "method": self.command, "path": self.path})

    def _send_json(self, status: int, body: dict[str, object]) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(
        self, status: int, content_type: str, body: bytes, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + (b"" if self.command == "HEAD" else body))
        if self.path.split("?", 1)[0] not in QUIET_PATHS:
            client = self.headers.get("x-forwarded-for", "") if hasattr(self, "headers") else ""
            # The path without its query string, anything shaped like a secret masked.
            target = loggable_target(self.path)
            print(
                f'{client[:MAX_CLIENT_CHARS] or "-"} "{self.command} {target}" {status}',
                file=sys.stderr,
                flush=True,
            )


class WorkloadServer(socketserver.ThreadingTCPServer):
    """The HTTP server on the listening socket the deployer handed over, plus what the handler
    needs about its tenant."""

    daemon_threads = True

    def __init__(
        self, tenant_key: str, domain: str, identity: IdentityReader, listener: socket.socket
    ) -> None:
        super().__init__(("", 0), WorkloadHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener  # bound and listening already
        self.server_address = listener.getsockname()
        self.tenant_key = tenant_key
        self.issuer = f"https://{tenant_key}.{domain}"
        self.identity = identity
        self.admin = TenantAdmin(
            tenant_key, self.issuer, accounts_of(identity), lambda: users_line(identity)
        )

    def handle_error(self, request: object, client_address: object) -> None:
        """One line, not socketserver's traceback (which this light process cannot even
        import): a client gone mid-answer (the gateway gave up on a stalled request) is routine."""
        error = sys.exc_info()[1]
        print(
            f"workload {self.tenant_key}: a connection ended: {type(error).__name__}: {error}",
            file=sys.stderr,
            flush=True,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="workload_server", description=__doc__)
    parser.add_argument("--tenant-key", required=True)
    parser.add_argument("--tenant-id", required=True, help="the tenant it was started for")
    parser.add_argument("--domain", required=True)
    store = parser.add_mutually_exclusive_group(required=True)
    store.add_argument("--identity-db", help="the tenant's SQLite identity database")
    store.add_argument(
        "--identity-schema",
        help=f"the tenant's PostgreSQL identity schema (DSN: ${IDENTITY_DSN_ENV})",
    )
    parser.add_argument(
        "--state-file", required=True, type=Path, help="the deployer's (names the data directory)"
    )
    parser.add_argument(
        "--listen-fd", required=True, type=int, help="the listening socket, bound by the deployer"
    )
    parser.add_argument(
        "--run-as", type=_uid_gid, help="UID:GID to give up root for before serving"
    )
    parser.add_argument("--memory-mb", type=int, help="cap on the data segment (RLIMIT_DATA)")
    parser.add_argument("--nice", type=int, default=0, help="its plan's CPU priority (nice value)")
    return parser.parse_args(argv)


def _uid_gid(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    return int(uid), int(gid)


def identity_store(args: argparse.Namespace, environ: dict[str, str]) -> IdentityReader:
    if args.identity_db:
        return SQLiteIdentity(args.identity_db)
    dsn = environ.get(IDENTITY_DSN_ENV)
    if not dsn:
        raise IdentityUnavailable(f"--identity-schema needs the DSN in ${IDENTITY_DSN_ENV}")
    return PostgresIdentity(dsn, args.identity_schema)


def limit_memory(megabytes: int) -> None:
    """Hold the process to its plan's memory: heap and thread stacks (RLIMIT_DATA), each request
    thread with a small stack, and few malloc arenas so the cap counts real use."""
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    threading.stack_size(THREAD_STACK_BYTES)


def preload(args: argparse.Namespace) -> None:
    """Import now, as root, what requests will import later: once the workload has given up
    root, the interpreter's files are out of its reach."""
    if args.identity_schema:
        import psycopg2.sql  # noqa: F401


def confine(args: argparse.Namespace, identity: IdentityReader) -> IdentityReader:
    """Give up root for the tenant's uid (`--run-as`), as the identity store allows: shut in the
    SQLite store's directory (owned by that uid), which it then reaches as `/<file>`; a
    PostgreSQL store needs no file at all. Without `--run-as`, nothing changes."""
    if args.run_as is None:
        return identity
    uid, gid = args.run_as
    os.umask(0o077)
    if isinstance(identity, SQLiteIdentity):
        store = Path(identity.path)
        if not store.parent.is_dir():
            raise IdentityUnavailable(f"its directory {store.parent} does not exist")
        drop_to(uid, gid, root=store.parent)
        return SQLiteIdentity(f"/{store.name}")
    drop_to(uid, gid)
    return identity


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_mb:
        limit_memory(args.memory_mb)
    # Its plan's, whether started by a run (whose worker runs at it already) or restored by `up`.
    lower_priority(args.nice)
    try:
        listener = socket.socket(fileno=args.listen_fd)
    except OSError as error:
        print(f"workload {args.tenant_key}: no socket to serve on: {error}", file=sys.stderr)
        return 1
    try:
        preload(args)
        identity = confine(args, identity_store(args, dict(os.environ)))
        identity.count_users()
    except IdentityUnavailable as error:
        where = args.identity_db or f"schema {args.identity_schema}"  # never the DSN
        print(
            f"workload {args.tenant_key}: cannot open identity store {where}: {error}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except (OSError, PrivilegeError) as error:
        print(
            f"workload {args.tenant_key}: cannot give up root for {args.run_as}: {error}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    server = WorkloadServer(args.tenant_key, args.domain, identity, listener)

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever, which runs in this thread: ask from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        print(f"workload {args.tenant_key}: serving on {server.server_address}", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
