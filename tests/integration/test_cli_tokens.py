"""`tenantctl token create|list|revoke` as an operator runs them: a real process and registry."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tenant_pipelines.domain.access import NotAuthenticated
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.stack_helpers import REPO, TENANTCTL

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))}
    return {**clean, "TENANT_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "d")}


def tenantctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TENANTCTL, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def registry(env: dict[str, str]) -> TenantRegistry:
    return TenantRegistry.shared(Settings.from_env(env).db_url)


def test_a_token_is_printed_once_works_and_is_listed_without_its_secret(
    env: dict[str, str],
) -> None:
    created = tenantctl(
        env, "token", "create", "--subject", "bob", "--role", "org-admin", "--org", "widgets",
        "--expires-in-days", "7", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    assert set(issued) == {"token_id", "token", "subject", "role", "org", "expires_at"}
    assert (issued["subject"], issued["role"], issued["org"]) == ("bob", "org-admin", "widgets")

    caller = registry(env).tokens.authenticate(issued["token"])
    assert (caller.subject, caller.role, caller.org) == ("bob", "org-admin", "widgets")

    for listing in (tenantctl(env, "token", "list"), tenantctl(env, "token", "list", "--json")):
        assert listing.returncode == 0 and issued["token_id"] in listing.stdout
        assert issued["token"] not in listing.stdout
        assert issued["token"].split("_", 2)[2] not in listing.stdout
    [row] = json.loads(tenantctl(env, "token", "list", "--json").stdout)
    assert row["revoked_at"] is None and "token" not in row


def test_a_revoked_token_stops_working_at_once(env: dict[str, str]) -> None:
    issued = json.loads(
        tenantctl(
            env, "token", "create", "--subject", "ada", "--role", "platform-admin", "--json"
        ).stdout
    )

    revoked = tenantctl(env, "token", "revoke", issued["token_id"])

    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    with pytest.raises(NotAuthenticated):
        registry(env).tokens.authenticate(issued["token"])
    again = tenantctl(env, "token", "revoke", issued["token_id"], "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["revoked_at"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subject", "x", "--role", "viewer"], "needs --org"),
        (["--subject", "x", "--role", "platform-admin", "--org", "widgets"], "drop --org"),
        (["--subject", "x", "--role", "root"], "invalid choice: 'root'"),
        (["--subject", "x", "--role", "viewer", "--org", "Bad Org"], "org"),
        (["--subject", "x", "--role", "platform-admin", "--expires-in-days", "0"], "expires"),
    ],
)
def test_a_malformed_token_request_exits_2_and_stores_nothing(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = tenantctl(env, "token", "create", *args)

    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert tenantctl(env, "token", "list", "--json").stdout.strip() == "[]"


def test_revoking_an_unknown_token_says_so(env: dict[str, str]) -> None:
    result = tenantctl(env, "token", "revoke", "000000000000")

    assert result.returncode == 1 and "no token with id '000000000000'" in result.stderr
