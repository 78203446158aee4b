"""What a log line may keep of a request target (support.redact): the path, with the platform's
secrets masked; the real secrets' shapes come from the functions that make them."""

import secrets

import pytest

from tenant_pipelines.domain.tokens import TOKEN_PREFIX
from tenant_pipelines.support.redact import loggable_target, mask_secrets

pytestmark = pytest.mark.unit

TOKEN_ID = secrets.token_hex(6)
SECRET = "Ab9_" + secrets.token_urlsafe(32)  # mixed case for sure, as a token's secret is
TOKEN = f"{TOKEN_PREFIX}{TOKEN_ID}_{SECRET}"


def test_the_query_string_and_fragment_are_dropped() -> None:
    assert loggable_target(f"/v1/tenants?token={TOKEN}&x=1") == "/v1/tenants"
    assert loggable_target("/console/tenants#top") == "/console/tenants"


def test_a_token_keeps_its_id_and_loses_its_secret() -> None:
    assert loggable_target(f"/v1/{TOKEN}/x") == f"/v1/{TOKEN_PREFIX}{TOKEN_ID}_***/x"
    assert mask_secrets(f"Bearer {TOKEN}") == f"Bearer {TOKEN_PREFIX}{TOKEN_ID}_***"


@pytest.mark.parametrize("seed", range(20))
def test_random_keys_are_masked(seed: int) -> None:
    key = secrets.token_urlsafe(48)  # the operator and session keys' shape
    assert mask_secrets(f"/local/{key}/x key={key}") == "/local/***/x key=***"


@pytest.mark.parametrize(
    "kept",
    [
        "/v1/tenants/shop-prod-zeta/events",
        "/console/tenants/a-very-long-slug-of-thirty-chars",
        "/runs/0f8e2c1a-7b3d-4e5f-9a6b-1c2d3e4f5a6b",
        "/static/4f2a9c0e8b7d6a5f4e3d2c1b0a9f8e7d.js",
        "/console/static/console.css",
    ],
)
def test_what_is_not_shaped_like_a_secret_is_kept(kept: str) -> None:
    assert loggable_target(kept) == kept
