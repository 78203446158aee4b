"""Issue 18, item 1 (defence in depth) for the local identity store and the workload deployer:
each records the tenant id it was made for, and never adopts, changes or releases for one tenant
what was made for another under the same key (`shop-prod` + `zeta` and `shop` + `prod-zeta` are
both `shop-prod-zeta`)."""

import json
from pathlib import Path

import pytest

from resources.deployer import LocalProcessDeployer
from resources.identity import LocalSQLiteIdentityStore
from tenant_pipelines.domain.errors import PermanentError
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support.unix_http import UnixHTTPConnection

pytestmark = pytest.mark.integration

FIRST = TenantSpec(
    tenant_id="t-first",
    request_id="r-first",
    slug="shop-prod",
    org="zeta",
    plan="free",
    admin_email="admin@first.example",
)
SECOND = TenantSpec(
    tenant_id="t-second",
    request_id="r-second",
    slug="shop",
    org="prod-zeta",
    plan="free",
    admin_email="admin@second.example",
)
KEY = "shop-prod-zeta"


def healthy(where: str) -> bool:
    conn = UnixHTTPConnection(where, 5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def test_an_identity_store_made_for_another_tenant_is_refused_and_left_as_it_is(
    identity: LocalSQLiteIdentityStore,
) -> None:
    identity.ensure(FIRST)
    store = identity.path_for(KEY)
    before = store.read_bytes()
    invitation = identity.invitation(KEY)
    assert SECOND.key == KEY

    with pytest.raises(PermanentError, match="made for another tenant"):
        identity.ensure(SECOND)
    assert store.read_bytes() == before
    assert identity.invitation(KEY) == invitation, "its invitation stays the first tenant's"

    assert identity.release(KEY, SECOND.tenant_id) is False
    assert store.read_bytes() == before
    assert identity.release(KEY, FIRST.tenant_id) is True
    assert not store.exists()


def test_a_workload_running_for_another_tenant_is_refused_and_keeps_running(
    identity: LocalSQLiteIdentityStore, deployer: LocalProcessDeployer, tmp_path: Path
) -> None:
    identity.ensure(FIRST)
    first = deployer.ensure(FIRST)
    pid, where = first.details["pid"], first.details["socket"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[argv.index("--tenant-id") + 1] == FIRST.tenant_id
    state_file = tmp_path / "workloads" / f"{KEY}.json"
    state = state_file.read_text()
    assert json.loads(state)["tenant_id"] == FIRST.tenant_id

    with pytest.raises(PermanentError, match="made for another tenant"):
        deployer.ensure(SECOND)
    assert healthy(where) and Path(f"/proc/{pid}").exists()
    assert state_file.read_text() == state, "nothing changed"

    assert deployer.release(KEY, SECOND.tenant_id) is False
    assert healthy(where) and state_file.read_text() == state
    assert deployer.ensure(FIRST) == first, "its own tenant still adopts it"
    assert deployer.release(KEY, FIRST.tenant_id) is True
    assert not state_file.exists()
