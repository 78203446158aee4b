"""How the command line reads the API server's answers (`cli.platform_api`)."""

import pytest

from tenant_pipelines.cli.platform_api import PlatformRefused, _decoded

pytestmark = pytest.mark.unit


def test_an_answer_is_its_json() -> None:
    assert _decoded(202, b'{"request_id": "r"}') == {"request_id": "r"}
    assert _decoded(200, b"[]") == []


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        (409, b'{"error": "slug acme is taken"}', "slug acme is taken"),
        (422, b'{"error": "invalid request: slug: bad", "field": "slug"}', "invalid request"),
        (502, b"<html>Bad Gateway</html>", "the API server answered HTTP 502"),
        (200, b"not json", "the API server answered HTTP 200"),
        (500, b'["no sentence"]', "the API server answered HTTP 500"),
    ],
)
def test_an_error_is_its_sentence_and_status(status: int, raw: bytes, message: str) -> None:
    with pytest.raises(PlatformRefused, match=message) as refused:
        _decoded(status, raw)
    assert refused.value.status == status
