"""The gateway's configuration checked by the gateway itself: the production host's
(deploy/caddy/production.json, generated from deploy/caddy/production.env by the code `tenantctl
up` starts Caddy with) is current and valid to Caddy, and so is the local default's; a broken
one is refused, so a broken production configuration fails `make test`."""

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from resources.gateway import GatewayPlan, caddy_config, storage_dir, write_plan
from resources.route_table import Route
from resources.traffic import LocalEdgeRoutes
from resources.workload_state import socket_path
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.localstack.gateway import caddy_binary
from tests.stack_helpers import REPO, TENANTCTL

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy" / "caddy"


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


def gateway_config(env: dict[str, str], *ports: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))}
    done = subprocess.run(
        [TENANTCTL, "gateway-config", *ports],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [caddy_binary(), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_production_configuration_is_current() -> None:
    made = gateway_config(env_file(DEPLOY / "production.env"), "--edge-port", "80")
    assert json.loads(made) == json.loads((DEPLOY / "production.json").read_text()), (
        "deploy/caddy/production.json is stale: run `make gateway-config`"
    )
    config = json.loads(made)
    assert config["admin"]["listen"] == "unix//var/lib/tenant-pipelines/edge/admin.sock|0600"
    [on_demand] = config["apps"]["tls"]["automation"]["policies"]
    assert on_demand["on_demand"] and on_demand["issuers"] == [
        {"module": "acme", "email": "ops@example.com"}
    ]
    ask = config["apps"]["tls"]["automation"]["on_demand"]["permission"]["endpoint"]
    assert ask == "http://127.0.0.1:8000/gateway/ask"


def test_caddy_takes_the_production_configuration() -> None:
    checked = validate(DEPLOY / "production.json")
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "Valid configuration" in checked.stderr + checked.stdout


def test_caddy_takes_the_local_default_configuration(tmp_path: Path) -> None:
    path = tmp_path / "local.json"
    path.write_text(gateway_config({"TENANT_DATA_DIR": str(tmp_path / "data")}))
    checked = validate(path)
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_a_broken_configuration_is_refused(tmp_path: Path) -> None:
    config = json.loads((DEPLOY / "production.json").read_text())
    config["apps"]["http"]["servers"]["tenants"]["routes"][0]["handle"][0]["handler"] = "nope"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(config))
    checked = validate(broken)
    assert checked.returncode != 0
    assert "nope" in checked.stderr


# What the configuration says, route by route ---------------------------------------------------
def route(host: str, state: str) -> Route:
    return Route(host, host.split(".", 1)[0], state, "2026-01-01T00:00:00+00:00")


OPEN, CLOSED = route("acme-corp.localhost", "open"), route("beta-corp.localhost", "closed")


def local_plan(plain_http: str = "redirect") -> GatewayPlan:
    return GatewayPlan(
        domain="localhost",
        listen_host="127.0.0.1",
        http_port=8080,
        https_port=8443,
        ask_url="http://127.0.0.1:8000/gateway/ask",
        plain_http=plain_http,
    )


def matched_by(route: dict[str, Any]) -> str:
    """The route's condition: the marker directory it asks (open/closed), a path, or '*'."""
    if "match" not in route:
        return "*"
    [match] = route["match"]
    if "file" in match:
        assert match["host"] == ["*.localhost"]  # one label before the domain: a file name
        return Path(match["file"]["root"]).name
    return str(match["path"][0])


def handlers(routes: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Condition -> the handlers its route runs, in order."""
    return {
        matched_by(r): [
            h.get("handler", "") + (f" {h['status_code']}" if "status_code" in h else "")
            for h in r["handle"]
        ]
        for r in routes
    }


KEY = "{http.request.host.labels.1}"  # the tenant key in `<key>.localhost`


def test_open_routes_relay_to_their_workloads_socket_closed_ones_answer_503(
    tmp_path: Path,
) -> None:
    """The configuration lists no route: each request asks the markers of its host's tenant."""
    config = caddy_config(local_plan(), tmp_path, [OPEN, CLOSED])
    servers = config["apps"]["http"]["servers"]
    assert handlers(servers["tenants"]["routes"]) == {
        "open": ["request_body", "reverse_proxy"],
        "closed": ["static_response 503"],
        "*": ["static_response 404"],
    }
    assert servers["tenants"]["routes"][0]["match"][0]["file"] == {
        "root": str(tmp_path.resolve() / "edge" / "open"),
        "try_files": [KEY],
    }
    relay = servers["tenants"]["routes"][0]["handle"][1]
    assert relay["upstreams"] == [{"dial": f"unix/to/{KEY}"}]
    assert handlers(servers["plain"]["routes"]) == {
        "/_edge/healthz": ["static_response 200"],
        "open": ["static_response 308"],
        "closed": ["static_response 503"],
        "*": ["static_response 404"],
    }
    redirect = servers["plain"]["routes"][1]["handle"][0]
    assert redirect["headers"]["Location"] == [f"https://{KEY}.localhost:8443{{http.request.uri}}"]
    serving = caddy_config(local_plan("serve"), tmp_path, [OPEN])["apps"]["http"]["servers"]
    assert handlers(serving["plain"]["routes"])["open"] == ["request_body", "reverse_proxy"]


def test_a_routes_markers_follow_the_table(tmp_path: Path) -> None:
    """What `publish` writes for Caddy: an open or a closed marker, a link to the workload's
    socket, and nothing once the route is gone."""
    write_plan(tmp_path, local_plan())
    routes = LocalEdgeRoutes(data_dir=str(tmp_path), domain="localhost")
    tenant = TenantSpec(
        tenant_id="t-1",
        request_id="r-1",
        slug="acme",
        org="corp",
        plan="team",
        admin_email="a@acme.example.com",
    )
    edge = tmp_path.resolve() / "edge"
    routes.ensure(tenant)
    assert (edge / "closed" / "acme-corp").is_file()
    assert not (edge / "open" / "acme-corp").exists()
    assert os.readlink(edge / "to" / "acme-corp") == str(socket_path(tmp_path, "acme-corp"))
    routes.open(tenant)
    assert (edge / "open" / "acme-corp").is_file()
    assert not (edge / "closed" / "acme-corp").exists()
    routes.release("acme-corp", "t-1")
    assert not any((edge / d / "acme-corp").is_symlink() for d in ("open", "closed", "to"))
    assert not any((edge / d / "acme-corp").exists() for d in ("open", "closed", "to"))


def test_a_host_is_managed_once_its_certificate_is_stored_and_asked_for_until_then(
    tmp_path: Path,
) -> None:
    def policies() -> list[dict[str, Any]]:
        tls = caddy_config(local_plan(), tmp_path, [OPEN, CLOSED])["apps"]["tls"]
        assert tls["automation"]["on_demand"]["permission"]["endpoint"].endswith("/gateway/ask")
        return list(tls["automation"]["policies"])

    assert policies() == [{"issuers": [{"module": "internal"}], "on_demand": True}]
    stored = storage_dir(tmp_path) / "certificates" / "local" / OPEN.host / f"{OPEN.host}.crt"
    stored.parent.mkdir(parents=True)
    stored.write_text("-----BEGIN CERTIFICATE-----")
    assert policies()[0] == {"subjects": [OPEN.host], "issuers": [{"module": "internal"}]}
    assert policies()[1]["on_demand"] is True
    tls = caddy_config(local_plan(), tmp_path, [OPEN, CLOSED])["apps"]["tls"]
    assert tls["certificates"] == {"automate": [OPEN.host]}  # read back at a start


def test_caddy_manages_no_certificate_of_its_own_for_the_routes_wildcard(tmp_path: Path) -> None:
    """Routes match `*.<domain>`; left to itself, Caddy would get a wildcard certificate for it
    (and, on ACME, fail at it without a DNS challenge)."""
    servers = caddy_config(local_plan(), tmp_path, [OPEN])["apps"]["http"]["servers"]
    assert servers["tenants"]["automatic_https"]["disable_certificates"] is True


def test_caddy_takes_the_configurations_of_a_platform_with_several_hosts(tmp_path: Path) -> None:
    """The control host's edge (relaying to each worker host's ingress) and a worker host's
    ingress, as `up` and `tenantctl worker` make them."""
    hosts = {"w-a": "10.0.0.2:8480", "w-b": "[fd00::3]:8480"}
    edge = replace(local_plan(), worker_hosts=hosts)
    ingress = replace(local_plan("serve"), ingress_of="w-a", listen_host="10.0.0.2", http_port=8480)
    for name, plan in (("edge", edge), ("ingress", ingress)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(caddy_config(plan, tmp_path, [OPEN, CLOSED])))
        checked = validate(path)
        assert checked.returncode == 0, f"{name}: {checked.stderr[-2000:]}"
    relay = caddy_config(edge, tmp_path, [])["apps"]["http"]["servers"]["tenants"]["routes"][0]
    dials = [r["handle"][0]["upstreams"][0]["dial"] for r in relay["handle"][1]["routes"]]
    assert dials == ["10.0.0.2:8480", "[fd00::3]:8480", f"unix/to/{KEY}"]
