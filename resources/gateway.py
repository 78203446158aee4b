"""The gateway at the edge (Caddy): its whole configuration, derived from the route table, and the
one way it is changed, through its admin endpoint.

The route table (`resources.route_table`) is the record; Caddy holds a copy. Every change to a
route (`resources.traffic`) and every start of Caddy (`tenantctl up`) builds the complete
configuration from the table and loads it (`sync`), under one lock, so the copy always follows
the latest record whichever writer came last, and a killed or wiped Caddy loses nothing. Caddy
skips a load identical to what it runs; any other load replaces its configuration gracefully.

The admin endpoint listens only on a Unix socket in `<data_dir>/edge/`, mode 0600: no TCP admin
port, and nobody but the platform's user can change routes. Where the edge listens and how it
issues certificates (`GatewayPlan`) is written by `tenantctl up` beside the table; without that
file there is no gateway to keep in step (a job run outside `up`), and `sync` does nothing.
"""

import contextlib
import fcntl
import http.client
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from resources.route_table import Route, all_routes, edge_dir
from resources.workload_state import socket_path
from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.domain.tenant import served_at
from tenant_pipelines.support.files import PRIVATE_DIR, write_atomically
from tenant_pipelines.support.unix_http import UnixHTTPConnection

ADMIN_TIMEOUT_S = 10.0
HEALTH_PATH = "/_edge/healthz"
UPSTREAM_TIMEOUT = "30s"  # for a workload's response head
CLIENT_TIMEOUT_S = 60  # a client that sends no complete request head in this long is dropped
MAX_HEADER_BYTES = 64 * 1024
GRACE_PERIOD = "10s"
MAX_BODY_BYTES = 1 << 20  # what a workload reads at most (resources.workload_server)
JSON_HEADERS = {"Content-Type": ["application/json"]}


class GatewayUnavailable(TenantPipelinesError):
    """The gateway answered, but refused the configuration: retried like any backend error."""


@dataclass(frozen=True)
class GatewayPlan:
    """Where the edge listens and how it gets certificates: fixed for one `tenantctl up`."""

    domain: str
    listen_host: str  # "127.0.0.1" on the local default; "" (every interface) in production
    http_port: int
    https_port: int
    ask_url: str  # the platform's answer to "may this host have a certificate?"
    plain_http: str = "redirect"  # or "serve": relay plain HTTP too (TLS ended in front of us)
    acme_email: str = ""  # production (a domain other than localhost): ACME's contact
    client_timeout_s: int = CLIENT_TIMEOUT_S  # for a request's head; then idle between requests

    @property
    def local_ca(self) -> bool:
        """Certificates from Caddy's own CA for `localhost`; from ACME for a real domain."""
        return self.domain == "localhost"


def plan_path(data_dir: str | Path) -> Path:
    return edge_dir(data_dir) / "gateway.json"


def admin_socket(data_dir: str | Path) -> Path:
    return edge_dir(data_dir) / "admin.sock"


def storage_dir(data_dir: str | Path) -> Path:
    """Caddy's certificates, keys and its local CA (`pki/authorities/local/root.crt`)."""
    return edge_dir(data_dir) / "caddy"


def local_ca_root(data_dir: str | Path) -> Path:
    return storage_dir(data_dir) / "pki" / "authorities" / "local" / "root.crt"


def write_plan(data_dir: str | Path, plan: GatewayPlan) -> None:
    edge_dir(data_dir).mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    write_atomically(plan_path(data_dir), json.dumps(asdict(plan)))


def read_plan(data_dir: str | Path) -> GatewayPlan | None:
    try:
        return GatewayPlan(**json.loads(plan_path(data_dir).read_text()))
    except FileNotFoundError:
        return None


def _json_answer(status: int, body: dict[str, str]) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": JSON_HEADERS,
        "body": json.dumps(body),
    }


def _relay(data_dir: str | Path, route: Route) -> dict[str, Any]:
    """To the tenant's workload; a body is read whole before the workload sees any of it, so a
    client that stalls mid-body holds a connection of Caddy's, not a workload thread."""
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"unix/{socket_path(data_dir, route.tenant_key)}"}],
        "transport": {"protocol": "http", "response_header_timeout": UPSTREAM_TIMEOUT},
        "request_buffers": MAX_BODY_BYTES,
    }


# A relayed request's body: at most what a workload reads (413 beyond).
BODY_LIMIT = {"handler": "request_body", "max_size": MAX_BODY_BYTES}


def _closed(route: Route) -> dict[str, Any]:
    return _json_answer(503, {"error": f"tenant {route.tenant_key!r} is not active"})


def _redirect(plan: GatewayPlan, route: Route) -> dict[str, Any]:
    location = f"https://{route.tenant_key}.{served_at(plan.domain, plan.https_port)}"
    location += "{http.request.uri}"
    return {"handler": "static_response", "status_code": 308, "headers": {"Location": [location]}}


def _by_host(host: str, *handlers: dict[str, Any]) -> dict[str, Any]:
    return {"match": [{"host": [host]}], "handle": list(handlers), "terminal": True}


UNKNOWN_HOST = {"handle": [_json_answer(404, {"error": "unknown host"})], "terminal": True}


def _tenant_routes(
    plan: GatewayPlan, data_dir: str | Path, routes: list[Route]
) -> list[dict[str, Any]]:
    served = [
        _by_host(r.host, BODY_LIMIT, _relay(data_dir, r))
        if r.is_open
        else _by_host(r.host, _closed(r))
        for r in routes
    ]
    return [*served, UNKNOWN_HOST]


def _http_routes(plan: GatewayPlan, data_dir: str | Path, routes: list[Route]) -> list[dict]:
    health = {
        "match": [{"path": [HEALTH_PATH]}],
        "handle": [_json_answer(200, {"status": "ok"})],
        "terminal": True,
    }
    if plan.plain_http == "serve":
        return [health, *_tenant_routes(plan, data_dir, routes)]
    served = [_by_host(r.host, _redirect(plan, r) if r.is_open else _closed(r)) for r in routes]
    return [health, *served, UNKNOWN_HOST]


def _error_routes(routes: list[Route]) -> list[dict[str, Any]]:
    """What a client hears when the relay fails: the workload is down or did not answer."""
    down = [
        _by_host(r.host, _json_answer(503, {"error": f"tenant {r.tenant_key!r} workload is down"}))
        for r in routes
        if r.is_open
    ]
    other = {  # Caddy's own refusals (a misdirected request, 421...) keep their status
        "handle": [
            {
                **_json_answer(0, {"error": "the gateway could not serve this request"}),
                "status_code": "{http.error.status_code}",
            }
        ]
    }
    return [*down, other]


def certified_hosts(data_dir: str | Path) -> set[str]:
    """The hosts Caddy's storage holds a certificate for, from any issuer: one directory scan
    (`certificates/<issuer>/<host>/<host>.crt`, Caddy's file storage layout)."""
    found = (storage_dir(data_dir) / "certificates").glob("*/*/*.crt")
    return {crt.parent.name for crt in found if crt.stem == crt.parent.name}


def _tls(plan: GatewayPlan, data_dir: str | Path, routes: list[Route]) -> dict[str, Any]:
    """Certificates. A name gets one on demand, during its first handshake, and only if the
    platform's `ask` says it is an active tenant's host. Once it has one, it is managed: kept,
    renewed, and read back from storage at a start without asking anyone, so a restarted
    gateway serves active tenants even while the API server is down."""
    issuer = (
        {"module": "internal"}
        if plan.local_ca
        else {"module": "acme", **({"email": plan.acme_email} if plan.acme_email else {})}
    )
    certified = certified_hosts(data_dir)
    issued = sorted(r.host for r in routes if r.is_open and r.host in certified)
    managed = [{"subjects": issued, "issuers": [issuer]}] if issued else []
    return {
        "automation": {
            "policies": [*managed, {"issuers": [issuer], "on_demand": True}],
            "on_demand": {"permission": {"module": "http", "endpoint": plan.ask_url}},
        }
    }


def _limits(plan: GatewayPlan) -> dict[str, Any]:
    """What one client may hold of the edge: one that sends no complete head in time, or stays
    idle between requests, is dropped; a huge head is refused (431). (A body being relayed is
    not held to `read_timeout` by Caddy 2.11.)"""
    timeout = f"{plan.client_timeout_s}s"
    return {
        "read_header_timeout": timeout,
        "read_timeout": timeout,
        "idle_timeout": timeout,
        "max_header_bytes": MAX_HEADER_BYTES,
    }


def caddy_config(plan: GatewayPlan, data_dir: str | Path, routes: list[Route]) -> dict[str, Any]:
    """Caddy's whole configuration (its JSON form) for `routes`."""
    listen = plan.listen_host
    errors = {"routes": _error_routes(routes)}
    return {
        "admin": {"listen": f"unix/{admin_socket(data_dir)}|0600", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage_dir(data_dir))},
        # Caddy's error log lines carry the request's URI: tenants' links may hold secrets.
        "logging": {"logs": {"default": {"exclude": ["http.log.error"]}}},
        "apps": {
            "http": {
                # A reload (every route change) lets the old servers finish their requests for
                # this long, not forever: a stalled client must not keep them.
                "grace_period": GRACE_PERIOD,
                "servers": {
                    "tenants": {
                        "listen": [f"{listen}:{plan.https_port}"],
                        "routes": _tenant_routes(plan, data_dir, routes),
                        "errors": errors,
                        "tls_connection_policies": [{}],
                        "strict_sni_host": True,
                        "protocols": ["h1", "h2"],  # no HTTP/3: no UDP port to guard
                        **_limits(plan),
                        "automatic_https": {"disable_redirects": True},
                    },
                    "plain": {
                        "listen": [f"{listen}:{plan.http_port}"],
                        "routes": _http_routes(plan, data_dir, routes),
                        "errors": errors,
                        "automatic_https": {"disable": True},
                        "protocols": ["h1"],
                        **_limits(plan),
                    },
                },
            },
            "tls": _tls(plan, data_dir, routes),
            # Never into the host's trust stores (Caddy would, running as root): README says
            # where the root is, for a client to trust on purpose.
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }


def config_for(data_dir: str | Path, plan: GatewayPlan) -> dict[str, Any]:
    return caddy_config(plan, data_dir, all_routes(data_dir))


@contextlib.contextmanager
def _config_lock(data_dir: str | Path) -> Iterator[None]:
    path = edge_dir(data_dir) / "gateway.lock"
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def config_path(data_dir: str | Path) -> Path:
    """The configuration last made from the table: what Caddy starts with."""
    return edge_dir(data_dir) / "caddy.json"


def _save(data_dir: str | Path, body: bytes) -> None:
    """Keep `body` as what a (re)started Caddy starts with; on a full disk the older one stays
    (the table is loaded into Caddy again once it answers)."""
    with contextlib.suppress(OSError):
        write_atomically(config_path(data_dir), body)


def write_start_config(data_dir: str | Path, plan: GatewayPlan) -> Path:
    """Before Caddy starts: the configuration the table makes now. When the table cannot be
    read or the disk is full, the last one made serves to start with (raises only if there is
    none), so active tenants are served as they were."""
    storage_dir(data_dir).mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    with _config_lock(data_dir):
        try:
            write_atomically(config_path(data_dir), json.dumps(config_for(data_dir, plan)))
        except (OSError, sqlite3.Error):
            if not config_path(data_dir).is_file():
                raise
        admin_socket(data_dir).unlink(missing_ok=True)  # a killed Caddy's; it binds anew
    return config_path(data_dir)


def sync(data_dir: str | Path) -> bool:
    """Load the configuration the route table makes now into the running gateway (and keep it
    for its next start); False if no gateway runs (it loads the table when it starts). Raises
    GatewayUnavailable if it refused."""
    plan = read_plan(data_dir)
    if plan is None:
        return False
    with _config_lock(data_dir):
        body = json.dumps(config_for(data_dir, plan)).encode()
        _save(data_dir, body)
        conn = UnixHTTPConnection(str(admin_socket(data_dir)), ADMIN_TIMEOUT_S)
        try:
            conn.request("POST", "/load", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            detail = answer.read()
        except (FileNotFoundError, ConnectionRefusedError):
            return False  # not running: it loads the table when it starts
        except (OSError, http.client.HTTPException) as error:
            raise GatewayUnavailable(f"the gateway did not take the routes: {error}") from None
        finally:
            conn.close()
    if answer.status != 200:
        reason = detail.decode(errors="replace").strip()[:300]
        raise GatewayUnavailable(f"the gateway refused the routes ({answer.status}): {reason}")
    return True
