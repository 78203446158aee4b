"""The data directory is the platform user's alone: what `tenantctl up` tightens at its start,
and the one line it says when it cannot give tenants' workloads uids of their own."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenant_pipelines.localstack.isolation import prepare
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.files import tighten

pytestmark = pytest.mark.integration

OTHER_UID = 0x7FFFFF01
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def older(tmp_path: Path) -> Path:
    """A data directory as an older version left it: 0755 directories, 0644 files."""
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    for path in (data / "registry.db", data / "operator.key", data / "logs" / "api.log"):
        path.write_text("x")
        path.chmod(0o644)
    for directory in (data, data / "logs"):
        directory.chmod(0o755)
    return data


def test_tighten_takes_others_bits_off_what_this_user_owns(older: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    (older / "link").symlink_to(outside)
    tenants = older / "identity" / "acme-corp"
    tenants.mkdir(parents=True, mode=0o755)
    (tenants / "identity.db").write_text("x")
    (tenants / "identity.db").chmod(0o644)
    os.chown(tenants, OTHER_UID, OTHER_UID)

    changed = tighten(older)
    assert set(changed) == {
        older,
        older / "logs",
        older / "identity",
        older / "registry.db",
        older / "operator.key",
        older / "logs" / "api.log",
    }
    assert [mode(p) for p in (older, older / "logs", older / "operator.key")] == [
        0o700,
        0o700,
        0o600,
    ]
    assert mode(outside) == 0o644, "a link is never followed"
    assert (mode(tenants), mode(tenants / "identity.db")) == (0o755, 0o644), "not ours: not entered"
    assert tighten(older) == []


def settings_for(data: Path) -> Settings:
    return Settings.from_env({"TENANT_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster")})


def test_up_as_root_tightens_moves_older_stores_and_says_nothing_of_sharing(older: Path) -> None:
    (older / "identity").mkdir()
    (older / "identity" / "acme-corp.db").write_text("x")
    said: list[str] = []
    prepare(settings_for(older), said.append)

    assert said == [
        "made 7 path(s) of the data directory private to its owner (0600/0700)",
        "moved 1 identity store(s) into a directory each (identity/<key>/)",
    ]
    assert (older / "identity" / "acme-corp" / "identity.db").read_text() == "x"
    said.clear()
    prepare(settings_for(older), said.append)
    assert said == []


@pytest.fixture
def nobodys_data_dir() -> Iterator[Path]:
    """A data directory a non-root user can reach (pytest's own temp is root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="tp-nonroot-", dir="/tmp"))
    data = top / "data"
    data.mkdir(mode=0o700)
    for path in (top, data):
        os.chown(path, NOBODY, NOBODY)
    yield data
    shutil.rmtree(top)


def test_up_as_another_user_says_once_that_workloads_share_it(nobodys_data_dir: Path) -> None:
    """The decision as a real non-root process makes it: a child imports as root (the
    interpreter lives where only root may look), then becomes `nobody` and prepares."""
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "import resources.identity\n"
        "from tenant_pipelines.localstack.isolation import prepare\n"
        "from tenant_pipelines.settings import Settings\n"
        f"data = Path({str(nobodys_data_dir)!r})\n"
        "settings = Settings.from_env("
        "{'TENANT_DATA_DIR': str(data), 'DAGSTER_HOME': str(data / 'dagster')})\n"
        f"os.setgroups([]); os.setresgid({NOBODY}, {NOBODY}, {NOBODY})\n"
        f"os.setresuid({NOBODY}, {NOBODY}, {NOBODY})\n"
        "prepare(settings, print)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "tenant workloads run as nobody, the platform's own user: they are not isolated from"
        " each other or from the control plane (run tenantctl up as root to give each a uid of"
        " its own)"
    ]
