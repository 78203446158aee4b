"""The domain and the saga load no Dagster and no database driver when they run.

import-linter's contract "The domain and the saga are plain Python" (pyproject.toml, `make lint`)
checks the imports written in our modules. What it cannot see is what happens at runtime: a
third-party package that pulls Dagster or SQLAlchemy in, or an import made by name. So every
module of both packages, found by walking them (no list to keep), is imported in a fresh
interpreter, whose result does not depend on what else this test session imported.
"""

import pkgutil
import subprocess
import sys

import pytest

import tenant_pipelines.domain
import tenant_pipelines.saga

pytestmark = pytest.mark.unit

PURE_PACKAGES = (tenant_pipelines.domain, tenant_pipelines.saga)
FORBIDDEN = ("dagster", "sqlalchemy", "psycopg2")


def pure_modules() -> list[str]:
    return sorted(
        module.name
        for package in PURE_PACKAGES
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    )


def test_the_walk_finds_the_modules() -> None:
    found = pure_modules()
    assert "tenant_pipelines.domain.states" in found
    assert "tenant_pipelines.saga.phases" in found


def test_the_domain_and_the_saga_import_no_dagster_and_no_database_driver() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {pure_modules()!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
