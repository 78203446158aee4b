"""Whether `tenantctl up` must say that tenants' workloads share its user."""

import pytest

from tenant_pipelines.localstack.isolation import shared_user_notice

pytestmark = pytest.mark.unit


def test_as_root_workloads_get_uids_of_their_own_and_nothing_is_said() -> None:
    assert shared_user_notice(0) is None


def test_as_any_other_user_up_says_they_share_it_naming_it() -> None:
    notice = shared_user_notice(65534)
    assert notice is not None and notice.startswith("tenant workloads run as nobody,")
    assert "not isolated from each other or from the control plane" in notice
    assert "\n" not in notice


def test_a_uid_without_a_name_is_named_by_its_number() -> None:
    assert (shared_user_notice(0x7FFFFF02) or "").startswith(
        "tenant workloads run as uid 2147483394,"
    )
