"""The documents the code cites are in the repository: every `docs/...` a file names exists, and
no file cites a document that a clone of the repository does not have."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CODE = ("tenant_pipelines", "resources", "sensors", "bench", "tests", "deploy")
OUTSIDE = re.compile(r"\.\./shared|DESIGN\.md|DESIGN section|DAGSTER_NOTES")
CITED = re.compile(r"docs/([a-z_]+\.md)")


def texts() -> dict[Path, str]:
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    for top in CODE:
        files += [p for p in (REPO / top).rglob("*") if p.suffix in (".py", ".html", ".yaml")]
    return {path: path.read_text() for path in files if path != Path(__file__).resolve()}


def test_nothing_cites_a_document_outside_the_repository() -> None:
    found = [
        f"{p.relative_to(REPO)}: {m[0]}" for p, t in texts().items() if (m := OUTSIDE.search(t))
    ]
    assert found == []


def test_every_cited_document_exists() -> None:
    cited = {name for text in texts().values() for name in CITED.findall(text)}
    assert {"architecture.md", "contracts.md", "dagster.md"} <= cited
    assert sorted(name for name in cited if not (REPO / "docs" / name).is_file()) == []
