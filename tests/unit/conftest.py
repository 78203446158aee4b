"""The unit layer: no I/O, and no Dagster. Run on its own (as `make test` does), it fails if
anything it imported loaded Dagster."""

import sys

import pytest

UNIT_DIR = "tests/unit/"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    items = getattr(session, "items", [])
    only_unit = bool(items) and all(UNIT_DIR in item.nodeid for item in items)
    if only_unit and "dagster" in sys.modules:
        print("\nthe unit layer imported dagster: keep the domain and the saga free of it")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
