"""End-to-end fixtures: the whole stack as a user starts it and a browser, one each per module.

The browser trusts the stack's local CA (and nothing of ours more): its root certificate is put
in the NSS database of the browser's own home directory, where Chromium on Linux reads the roots
a user added, so tenants' HTTPS pages load as they would for an operator who trusted it.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from resources.gateway import local_ca_root
from tests.stack_fixtures import stack, stack_options
from tests.stack_helpers import Stack

__all__ = ["browser", "stack", "stack_options"]

CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright cannot download its own here
CERTUTIL = "/usr/bin/certutil"  # Debian's libnss3-tools (make browser)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def home_trusting(ca_root: Path, home: Path) -> Path:
    """A home directory whose NSS database trusts `ca_root` to identify web sites."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    database = f"sql:{nssdb}"
    subprocess.run([CERTUTIL, "-N", "-d", database, "--empty-password"], check=True)
    name = "tenant-pipelines local CA"
    add = [CERTUTIL, "-A", "-d", database, "-n", name, "-t", "C,,", "-i", str(ca_root)]
    subprocess.run(add, check=True)
    return home


@pytest.fixture(scope="module")
def browser(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: make browser"
    assert Path(CERTUTIL).exists(), f"{CERTUTIL} is missing: make browser"
    home = home_trusting(local_ca_root(stack.data_dir), tmp_path_factory.mktemp("browser-home"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={"HOME": str(home)}
        )
        yield launched
        launched.close()
