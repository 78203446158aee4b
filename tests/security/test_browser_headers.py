"""Issue 18, finding 9: the console had no browser hardening headers. Now every console page
carries a Content-Security-Policy without inline script, refuses to be framed, forbids MIME
sniffing, sends no Referer to other origins, and is not stored by any cache; the API's answers
carry the same. Checked through real HTTP against a running API server, page by page, and on the
templates themselves (no inline script, handler or style for the policy to forbid)."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.integration.test_api import grant, tenant

pytestmark = pytest.mark.integration

ORG = "widgets"
TEMPLATES = Path(__file__).parents[2] / "tenant_pipelines" / "api" / "templates"
EVERYWHERE = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
DIRECTIVES = {
    "default-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "object-src": "'none'",
}


@dataclass
class Console:
    server: ApiServer
    session: requests.Session  # logged in as an org admin of ORG


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("headers")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    token = grant(registry, "org-admin", ORG)
    tenant(registry, "shop", ORG, TenantState.ACTIVE)
    with api_server(env, tmp / "api.log") as server:
        session = requests.Session()
        login = session.get(f"{server.base}/console/login", timeout=30)
        answer = session.post(
            f"{server.base}/console/login",
            data={"token": token, "csrf_token": csrf_of(login.text)},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 303, answer.text
        yield Console(server, session)
    registry.close()


def policy(answer: requests.Response) -> dict[str, str]:
    header = answer.headers.get("Content-Security-Policy")
    assert header, f"{answer.url} has no Content-Security-Policy"
    parts = [part.strip().split(None, 1) for part in header.split(";") if part.strip()]
    return {part[0]: part[1] if len(part) > 1 else "" for part in parts}


def assert_hardened(answer: requests.Response) -> None:
    for name, value in EVERYWHERE.items():
        assert answer.headers.get(name) == value, (answer.url, name, answer.headers)
    directives = policy(answer)
    for name, value in DIRECTIVES.items():
        assert directives.get(name) == value, (answer.url, name, directives)
    assert not any("unsafe" in value for value in directives.values()), directives


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/console/tenants", 200),
        ("/console/tenants?state=active", 200),
        ("/console/tenants/shop", 200),
        ("/console/tenants/shop/live", 200),
        ("/console/tenants/new", 200),
        ("/console/events", 200),
        ("/console/tenants/no-such-tenant", 404),
    ],
)
def test_every_console_page_is_hardened_and_not_stored(
    console: Console, path: str, status: int
) -> None:
    answer = console.session.get(console.server.base + path, allow_redirects=False, timeout=30)
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("text/html")
    assert_hardened(answer)
    assert answer.headers.get("Cache-Control") == "no-store"


def test_the_login_page_and_its_refusal_are_hardened(console: Console) -> None:
    fresh = requests.Session()
    page = fresh.get(f"{console.server.base}/console/login", timeout=30)
    assert_hardened(page)
    refused = fresh.post(
        f"{console.server.base}/console/login",
        data={"token": "tp_0000_nope", "csrf_token": csrf_of(page.text)},
        timeout=30,
    )
    assert refused.status_code == 401
    assert_hardened(refused)
    assert refused.headers.get("Cache-Control") == "no-store"


@pytest.mark.parametrize("path", ["/v1/tenants", "/healthz", "/v1/no-such-path"])
def test_api_answers_are_hardened_too(console: Console, path: str) -> None:
    answer = requests.get(console.server.base + path, timeout=30)
    assert_hardened(answer)
    assert answer.headers.get("Cache-Control") == "no-store"


def test_the_console_script_and_stylesheet_are_served_under_the_policy(console: Console) -> None:
    for name in ("console.js", "console.css"):
        answer = requests.get(f"{console.server.base}/console/static/{name}", timeout=30)
        assert answer.status_code == 200
        assert_hardened(answer)  # a cache may keep them: they are the same for everyone


INLINE = {
    "an inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE),
    "an event handler attribute": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "a style attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "a <style> block": re.compile(r"<style[\s>]", re.IGNORECASE),
    "a javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
}


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_no_template_needs_unsafe_inline(template: str) -> None:
    text = (TEMPLATES / template).read_text()
    found = [what for what, pattern in INLINE.items() if pattern.search(text)]
    assert not found, f"{template} has {', '.join(found)}: move it to api/static/"
