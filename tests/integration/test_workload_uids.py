"""Which uid each tenant's workload runs as: recorded host-wide, stable, never shared or reused."""

from pathlib import Path

import pytest

from resources.workload_uids import FIRST_UID, LAST_UID, recorded_uids, workload_uid
from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.domain.tenant import TenantSpec

pytestmark = pytest.mark.integration


def tenant(slug: str, tenant_id: str | None = None) -> TenantSpec:
    return TenantSpec(
        tenant_id=tenant_id or f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org="corp",
        plan="free",
        admin_email="admin@corp.example",
    )


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "host" / "workload-uids.db"


def test_the_range_lies_between_the_container_ranges_and_systemds_foreign_range() -> None:
    assert (FIRST_UID, LAST_UID) == (1879048192, 2147352575)


def test_a_tenant_keeps_its_uid_and_two_tenants_never_share_one(
    tmp_path: Path, record: Path
) -> None:
    one = workload_uid(tmp_path / "data", tenant("acme"), record)
    two = workload_uid(tmp_path / "data", tenant("beta"), record)
    assert (one, two) == (FIRST_UID, FIRST_UID + 1)
    assert workload_uid(tmp_path / "data", tenant("acme"), record) == one
    assert workload_uid(str(tmp_path / "data" / "."), tenant("acme"), record) == one
    assert (record.parent.stat().st_mode & 0o777) == 0o700


def test_platforms_on_one_host_never_share_a_uid(tmp_path: Path, record: Path) -> None:
    """Another data directory's tenants get other numbers, even for the same tenant id."""
    here = workload_uid(tmp_path / "one", tenant("acme"), record)
    there = workload_uid(tmp_path / "two", tenant("acme"), record)
    assert here != there


def test_a_new_tenant_under_a_freed_key_gets_a_new_uid(tmp_path: Path, record: Path) -> None:
    """Uids are never handed out again: what the old one might still own stays out of reach."""
    old = workload_uid(tmp_path, tenant("acme", "t-old"), record)
    new = workload_uid(tmp_path, tenant("acme", "t-new"), record)
    assert new == old + 1


def test_an_exhausted_range_is_a_clear_error_that_hands_out_nothing(
    tmp_path: Path, record: Path
) -> None:
    first = FIRST_UID
    workload_uid(tmp_path, tenant("acme"), record, first=first, last=first)
    with pytest.raises(ConfigError, match=rf"no workload uid is left in {first}-{first}"):
        workload_uid(tmp_path, tenant("beta"), record, first=first, last=first)
    assert workload_uid(tmp_path, tenant("acme"), record, first=first, last=first) == first


def test_the_record_says_whose_each_uid_is_for_one_data_directory(
    tmp_path: Path, record: Path
) -> None:
    one = workload_uid(tmp_path / "data", tenant("acme"), record)
    workload_uid(tmp_path / "elsewhere", tenant("beta"), record)
    assert recorded_uids(tmp_path / "data", record) == {one: ("acme-corp", "t-acme")}
    assert recorded_uids(tmp_path / "none", tmp_path / "missing.db") == {}
