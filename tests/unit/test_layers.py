"""The domain and the saga load no Dagster: checked in a fresh interpreter, so the result does
not depend on what else this test session imported."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PURE = [
    "tenant_pipelines.domain.errors",
    "tenant_pipelines.domain.events",
    "tenant_pipelines.domain.handles",
    "tenant_pipelines.domain.mail",
    "tenant_pipelines.domain.plans",
    "tenant_pipelines.domain.records",
    "tenant_pipelines.domain.request",
    "tenant_pipelines.domain.states",
    "tenant_pipelines.domain.tenant",
    "tenant_pipelines.saga.compensation",
    "tenant_pipelines.saga.emails",
    "tenant_pipelines.saga.failure",
    "tenant_pipelines.saga.inventory",
    "tenant_pipelines.saga.phases",
    "tenant_pipelines.saga.steps",
]


def test_the_domain_and_the_saga_import_no_dagster_and_no_database_driver() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('dagster', 'sqlalchemy', 'psycopg2') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
