"""The gateway at the edge (Caddy): its configuration, and the route markers it reads per request.

The route table (`resources.route_table`) is the record. Caddy's configuration does not list
routes: it names a tenant by its host's first label and asks the file system, on each request,
whether that tenant's route is open (`<data_dir>/edge/open/<key>`) or closed
(`edge/closed/<key>`), and relays to `edge/to/<key>`, a link to the workload's socket. Every
change to a route (`resources.traffic`) writes that tenant's markers from the table (`publish`),
under one lock, so they follow the latest record whichever writer came last. A route change is
therefore a few file operations, the same with ten tenants or ten thousand; loading a whole
configuration into Caddy for each change cost the platform and Caddy CPU in proportion to the
number of routes, on every change (docs/performance.md).

The configuration is made once per start of Caddy (`write_start_config`), from the table too:
hosts that already hold a certificate are listed as managed, so a restarted Caddy reads them back
without asking the platform. Its admin endpoint listens only on a Unix socket in
`<data_dir>/edge/`, mode 0600: no TCP admin port. The edge directory is the platform user's alone
(0700), so nobody else can change a route. Where the edge listens and how it issues certificates
(`GatewayPlan`) is written by `tenantctl up` beside the table; without that file there is no
gateway to keep in step (a job run outside `up`), and `publish` does nothing.

On a platform with several hosts the routes are in the registry (`RegistryRoutes`), and two kinds
of gateway read them, each from markers of its own. The control host's edge serves every tenant:
for a tenant whose workload is on a worker host it finds the marker `edge/at/<host>/<key>` and
relays the request to that host's ingress, adding the platform's ingress secret in a header
(`INGRESS_HEADER`). A worker host's ingress (`tenantctl worker`) listens on that host's address,
refuses any request without the secret (403: only the edge may use it, not a tenant's workload on
any host), removes the header, and relays to the workloads of its own host's open routes. Both
take the secret from their environment (`INGRESS_SECRET_VAR`, a Caddy placeholder): no
configuration file, log or argument holds it.
"""

import contextlib
import fcntl
import http.client
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resources.route_table import CLOSED, OPEN, LocalRouteTable, Route, edge_dir
from resources.workload_state import socket_path
from tenant_pipelines.domain.errors import RegistryUnavailable, TenantPipelinesError
from tenant_pipelines.domain.routes import RouteSource
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


# Under `edge_dir`: a marker per tenant key whose route is open, or closed; and a link per routed
# key to its workload's socket, which Caddy (started in `edge_dir`) dials by this relative path:
# an absolute one could pass the 107 bytes a socket address holds.
OPEN_DIR, CLOSED_DIR, UPSTREAM_DIR = "open", "closed", "to"
# At the control host's edge: `at/<worker host>/<key>` for a tenant whose workload is there.
AT_DIR = "at"
INGRESS_HEADER = "X-Tenant-Edge"
INGRESS_SECRET_VAR = "TENANT_INGRESS_SECRET"  # in the gateway's environment only
INGRESS_SECRET = f"{{env.{INGRESS_SECRET_VAR}}}"  # Caddy reads it when a request comes


class GatewayUnavailable(TenantPipelinesError):
    """The gateway's route markers could not be written, or it refused its configuration:
    retried like any backend error."""


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
    # The control host's edge: each worker host's ingress address (`host:port`), by name.
    worker_hosts: dict[str, str] = field(default_factory=dict)
    ingress_of: str = ""  # a worker host's ingress: that host's name (it listens on http_port)

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


def _tenant_key(plan: GatewayPlan) -> str:
    """The tenant key in a request's host: the label before the domain's (Caddy lowercases it)."""
    label = plan.domain.count(".") + 1
    return f"{{http.request.host.labels.{label}}}"


def _marked(plan: GatewayPlan, data_dir: str | Path, state: str) -> list[dict[str, Any]]:
    """Matches a host of the domain whose tenant has a marker in `state` (open or closed): one
    label before the domain (the host matcher's wildcard), so the key is a file name, never a
    path."""
    marker = {"root": str(edge_dir(data_dir) / state), "try_files": [_tenant_key(plan)]}
    return [{"host": [f"*.{plan.domain}"], "file": marker}]


def _proxy(dial: str, **extra: Any) -> dict[str, Any]:
    """A body is read whole before the workload sees any of it, so a client that stalls mid-body
    holds a connection of Caddy's, not a workload thread."""
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        "transport": {"protocol": "http", "response_header_timeout": UPSTREAM_TIMEOUT},
        "request_buffers": MAX_BODY_BYTES,
        **extra,
    }


def _relay(plan: GatewayPlan, data_dir: str | Path) -> dict[str, Any]:
    """To the tenant's workload: on this host (its socket's link), or, at the control host's edge,
    through the ingress of the worker host it is on, with the secret that ingress asks for."""
    local = _proxy(f"unix/{UPSTREAM_DIR}/{_tenant_key(plan)}")
    if not plan.worker_hosts:
        return local
    secret = {"request": {"set": {INGRESS_HEADER: [INGRESS_SECRET]}}}
    remote = [
        _when(_at(plan, data_dir, name), _proxy(address, headers=secret))
        for name, address in sorted(plan.worker_hosts.items())
    ]
    return {"handler": "subroute", "routes": [*remote, {"handle": [local]}]}


def _at(plan: GatewayPlan, data_dir: str | Path, worker_host: str) -> list[dict[str, Any]]:
    root = str(edge_dir(data_dir) / AT_DIR / worker_host)
    return [{"file": {"root": root, "try_files": [_tenant_key(plan)]}}]


# A relayed request's body: at most what a workload reads (413 beyond).
BODY_LIMIT = {"handler": "request_body", "max_size": MAX_BODY_BYTES}


def _when(match: list[dict[str, Any]], *handlers: dict[str, Any]) -> dict[str, Any]:
    return {"match": match, "handle": list(handlers), "terminal": True}


def _closed(plan: GatewayPlan, data_dir: str | Path) -> dict[str, Any]:
    closed = _json_answer(503, {"error": f"tenant '{_tenant_key(plan)}' is not active"})
    return _when(_marked(plan, data_dir, CLOSED_DIR), closed)


def _redirect(plan: GatewayPlan) -> dict[str, Any]:
    location = f"https://{_tenant_key(plan)}.{served_at(plan.domain, plan.https_port)}"
    location += "{http.request.uri}"
    return {"handler": "static_response", "status_code": 308, "headers": {"Location": [location]}}


UNKNOWN_HOST = {"handle": [_json_answer(404, {"error": "unknown host"})], "terminal": True}


def _tenant_routes(plan: GatewayPlan, data_dir: str | Path) -> list[dict[str, Any]]:
    relayed = _when(_marked(plan, data_dir, OPEN_DIR), BODY_LIMIT, _relay(plan, data_dir))
    return [relayed, _closed(plan, data_dir), UNKNOWN_HOST]


HEALTH = {
    "match": [{"path": [HEALTH_PATH]}],
    "handle": [_json_answer(200, {"status": "ok"})],
    "terminal": True,
}


def _http_routes(plan: GatewayPlan, data_dir: str | Path) -> list[dict[str, Any]]:
    if plan.plain_http == "serve":
        return [HEALTH, *_tenant_routes(plan, data_dir)]
    redirected = _when(_marked(plan, data_dir, OPEN_DIR), _redirect(plan))
    return [HEALTH, redirected, _closed(plan, data_dir), UNKNOWN_HOST]


def _error_routes(plan: GatewayPlan, data_dir: str | Path) -> list[dict[str, Any]]:
    """What a client hears when the relay fails: the workload is down or did not answer."""
    down = _json_answer(503, {"error": f"tenant '{_tenant_key(plan)}' workload is down"})
    other = {  # Caddy's own refusals (a misdirected request, 421...) keep their status
        "handle": [
            {
                **_json_answer(0, {"error": "the gateway could not serve this request"}),
                "status_code": "{http.error.status_code}",
            }
        ]
    }
    return [_when(_marked(plan, data_dir, OPEN_DIR), down), other]


def certified_hosts(data_dir: str | Path) -> set[str]:
    """The hosts Caddy's storage holds a certificate for, from any issuer: one directory scan
    (`certificates/<issuer>/<host>/<host>.crt`, Caddy's file storage layout)."""
    found = (storage_dir(data_dir) / "certificates").glob("*/*/*.crt")
    return {crt.parent.name for crt in found if crt.stem == crt.parent.name}


def _tls(plan: GatewayPlan, data_dir: str | Path, routes: list[Route]) -> dict[str, Any]:
    """Certificates. A name gets one on demand, during its first handshake, and only if the
    platform's `ask` says it is an active tenant's host. Once it has one, the next start of the
    gateway manages it (`automate`): kept, renewed, and read back from storage without asking
    anyone, so a restarted gateway serves active tenants even while the API server is down."""
    issuer = (
        {"module": "internal"}
        if plan.local_ca
        else {"module": "acme", **({"email": plan.acme_email} if plan.acme_email else {})}
    )
    certified = certified_hosts(data_dir)
    issued = sorted(r.host for r in routes if r.is_open and r.host in certified)
    managed = [{"subjects": issued, "issuers": [issuer]}] if issued else []
    return {
        **({"certificates": {"automate": issued}} if issued else {}),
        "automation": {
            "policies": [*managed, {"issuers": [issuer], "on_demand": True}],
            "on_demand": {"permission": {"module": "http", "endpoint": plan.ask_url}},
        },
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


def _common(data_dir: str | Path) -> dict[str, Any]:
    return {
        "admin": {"listen": f"unix/{admin_socket(data_dir)}|0600", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage_dir(data_dir))},
        # Caddy's error log lines carry the request's URI: tenants' links may hold secrets.
        "logging": {"logs": {"default": {"exclude": ["http.log.error"]}}},
    }


def ingress_config(plan: GatewayPlan, data_dir: str | Path) -> dict[str, Any]:
    """A worker host's ingress: plain HTTP on the host's address, for the control host's edge
    alone (the secret header), relaying to this host's workloads; the edge has ended TLS."""
    refused = _json_answer(403, {"error": "only the platform's edge may use this ingress"})
    no_secret = {"not": [{"header": {INGRESS_HEADER: [INGRESS_SECRET]}}]}
    unmarked = {"handle": [{"handler": "headers", "request": {"delete": [INGRESS_HEADER]}}]}
    routes = [
        HEALTH,
        _when([no_secret], refused),
        unmarked,  # the workload never sees the secret
        *_tenant_routes(plan, data_dir),
    ]
    server = {
        "listen": [f"{plan.listen_host}:{plan.http_port}"],
        "routes": routes,
        "errors": {"routes": _error_routes(plan, data_dir)},
        "automatic_https": {"disable": True},
        "protocols": ["h1"],
        **_limits(plan),
    }
    http = {"grace_period": GRACE_PERIOD, "servers": {"ingress": server}}
    return {**_common(data_dir), "apps": {"http": http}}


def caddy_config(plan: GatewayPlan, data_dir: str | Path, routes: list[Route]) -> dict[str, Any]:
    """Caddy's whole configuration (its JSON form); `routes` only for the certificates it keeps
    (the routes themselves are read from the markers, per request)."""
    if plan.ingress_of:
        return ingress_config(plan, data_dir)
    listen = plan.listen_host
    errors = {"routes": _error_routes(plan, data_dir)}
    return {
        **_common(data_dir),
        "apps": {
            "http": {
                # A stop lets the servers finish their requests for this long, not forever: a
                # stalled client must not keep them.
                "grace_period": GRACE_PERIOD,
                "servers": {
                    "tenants": {
                        "listen": [f"{listen}:{plan.https_port}"],
                        "routes": _tenant_routes(plan, data_dir),
                        "errors": errors,
                        "tls_connection_policies": [{}],
                        "strict_sni_host": True,
                        "protocols": ["h1", "h2"],  # no HTTP/3: no UDP port to guard
                        **_limits(plan),
                        # Certificates come from `_tls` alone: Caddy would otherwise manage one
                        # for the wildcard its routes match (`*.<domain>`).
                        "automatic_https": {
                            "disable_redirects": True,
                            "disable_certificates": True,
                        },
                    },
                    "plain": {
                        "listen": [f"{listen}:{plan.http_port}"],
                        "routes": _http_routes(plan, data_dir),
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
    """The configuration for the routes the markers hold: they need no table to be read."""
    return caddy_config(plan, data_dir, marked_routes(data_dir, plan))


def marked_routes(data_dir: str | Path, plan: GatewayPlan) -> list[Route]:
    """The routes as the gateway sees them, from their markers (no time of change)."""
    edge = edge_dir(data_dir)
    return [
        Route(f"{marker.name}.{plan.domain}", marker.name, state, "")
        for state, directory in ((OPEN, OPEN_DIR), (CLOSED, CLOSED_DIR))
        for marker in _entries(edge / directory)
    ]


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


def write_start_config(
    data_dir: str | Path, plan: GatewayPlan, source: RouteSource | None = None
) -> Path:
    """Before Caddy starts: every route's markers from the table, and the configuration they
    make. When the table cannot be read or the disk is full, the markers as they are, and the
    last configuration made, serve to start with (raises only if there is no configuration), so
    active tenants are served as they were."""
    storage_dir(data_dir).mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    with _config_lock(data_dir):
        # Said once Caddy runs (`publish`); the registry's table may be out of reach as well.
        with contextlib.suppress(OSError, sqlite3.Error, RegistryUnavailable):
            _mark_all(data_dir, plan, (source or LocalRouteTable(data_dir)).all_routes())
        try:
            write_atomically(config_path(data_dir), json.dumps(config_for(data_dir, plan)))
        except OSError:
            if not config_path(data_dir).is_file():
                raise
        admin_socket(data_dir).unlink(missing_ok=True)  # a killed Caddy's; it binds anew
    return config_path(data_dir)


def publish(
    data_dir: str | Path, tenant_key: str | None = None, source: RouteSource | None = None
) -> bool:
    """Write the markers of `tenant_key`'s route (every route's, when None) as the table holds it
    now (`source`: the registry's on a platform with several hosts, else this host's table);
    False if no gateway is planned (it publishes every route when it starts). Raises
    GatewayUnavailable if they could not be written: the table and the edge would disagree.

    A route that is gone also reloads the running gateway's configuration, so that Caddy stops
    managing (renewing) the certificate of a host it no longer serves. Releases are rare;
    opening and closing routes never reloads."""
    plan = read_plan(data_dir)
    if plan is None:
        return False
    table = source or LocalRouteTable(data_dir)
    with _config_lock(data_dir):
        try:
            if tenant_key is None:
                _mark_all(data_dir, plan, table.all_routes())
                return True
            removed = _mark(data_dir, plan, tenant_key, table.route_of(tenant_key))
        except OSError as error:
            message = f"the gateway's routes could not be written: {error}"
            raise GatewayUnavailable(message) from None
        if removed:
            _reload(data_dir, plan)
    return True


def _reload(data_dir: str | Path, plan: GatewayPlan) -> None:
    """Load the configuration the markers make now into the running gateway, even if it is the
    same as the one it runs (`must-revalidate`), and keep it for its next start."""
    body = json.dumps(config_for(data_dir, plan)).encode()
    with contextlib.suppress(OSError):  # on a full disk, the older one stays for a start
        write_atomically(config_path(data_dir), body)
    headers = {"Content-Type": "application/json", "Cache-Control": "must-revalidate"}
    conn = UnixHTTPConnection(str(admin_socket(data_dir)), ADMIN_TIMEOUT_S)
    try:
        conn.request("POST", "/load", body, headers)
        answer = conn.getresponse()
        detail = answer.read()
    except (FileNotFoundError, ConnectionRefusedError):
        return  # not running: its next start makes the configuration anew
    except (OSError, http.client.HTTPException) as error:
        raise GatewayUnavailable(f"the gateway did not take its configuration: {error}") from None
    finally:
        conn.close()
    if answer.status != 200:
        reason = detail.decode(errors="replace").strip()[:300]
        message = f"the gateway refused its configuration ({answer.status}): {reason}"
        raise GatewayUnavailable(message)


def _mark_all(data_dir: str | Path, plan: GatewayPlan, routes: list[Route]) -> None:
    """Every route's markers, and none for a key the table no longer has."""
    by_key = {route.tenant_key: route for route in routes}
    edge = edge_dir(data_dir)
    directories = [edge / d for d in (OPEN_DIR, CLOSED_DIR, UPSTREAM_DIR)]
    directories += _entries(edge / AT_DIR)
    marked = {p.name for d in directories for p in _entries(d)}
    for key in marked | set(by_key):
        _mark(data_dir, plan, key, by_key.get(key))


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir()) if directory.is_dir() else []


def _mark(data_dir: str | Path, plan: GatewayPlan, key: str, route: Route | None) -> bool:
    """One tenant's markers as `route` says; True if a route's markers were removed. The new
    state's marker is made before the old one goes (an open marker wins), so a request never
    finds the tenant unknown in between. A worker host's ingress marks its own host's routes
    only; the control host's edge marks where each workload is (`at/<host>/<key>`)."""
    edge = edge_dir(data_dir)
    opened, closed, upstream = (edge / d / key for d in (OPEN_DIR, CLOSED_DIR, UPSTREAM_DIR))
    placed = {host: edge / AT_DIR / host / key for host in plan.worker_hosts}
    if route is not None and plan.ingress_of and route.worker_host != plan.ingress_of:
        route = None  # another host's tenant: its own ingress serves it
    if route is None:
        marked = opened.exists() or closed.exists()
        for path in (opened, closed, upstream, *placed.values()):
            path.unlink(missing_ok=True)
        return marked
    at = placed.get(route.worker_host or "")
    if at is None:
        _link(upstream, socket_path(data_dir, key))
    else:
        _touch(at)
        upstream.unlink(missing_ok=True)
    for path in placed.values():
        if path != at:
            path.unlink(missing_ok=True)
    new, old = (opened, closed) if route.is_open else (closed, opened)
    _touch(new)
    old.unlink(missing_ok=True)
    return False


def _touch(path: Path) -> None:
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    path.touch(mode=0o600)


def _link(path: Path, target: Path) -> None:
    """`path` -> `target`, replaced atomically when it pointed elsewhere."""
    with contextlib.suppress(OSError):
        if os.readlink(path) == str(target):
            return
    path.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    staged.replace(path)
