"""The local backends on a temporary data directory: the fixtures the integration and security
tiers share (tests/integration/conftest.py, tests/security/conftest.py)."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.deployer import LocalProcessDeployer
from resources.identity import LocalSQLiteIdentityStore

DOMAIN = "localhost"


def workload_pids(data_dir: Path) -> set[int]:
    """Live workload processes of this data directory, found without the code under test."""
    pids = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resources.workload_server" in cmdline and str(data_dir).encode() in cmdline:
            pids.add(int(entry.name))
    return pids


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path.resolve()


@pytest.fixture
def deployer(data_dir: Path) -> Iterator[LocalProcessDeployer]:
    """The local deployer; afterwards no workload of the data directory may still run."""
    deployer = LocalProcessDeployer(data_dir=str(data_dir), domain=DOMAIN)
    yield deployer
    deployer.stop_all()
    leftovers = workload_pids(data_dir)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == set(), "stop_all left workloads running"
    assert deployer.list_existing() == set()


@pytest.fixture
def identity(data_dir: Path) -> LocalSQLiteIdentityStore:
    return LocalSQLiteIdentityStore(data_dir=str(data_dir))
