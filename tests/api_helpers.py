"""A real API server for tests: started as `tenantctl up` starts it, stopped by its PID."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.stack_helpers import free_port
from tests.waiting import wait_until

START_TIMEOUT_S = 60


@dataclass
class ApiServer:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return requests.request(
            method, self.base + path, json=body, headers=sent, timeout=30, allow_redirects=False
        )


def platform_env(data_dir: Path, dagster_home: Path, **extra: str) -> dict[str, str]:
    """The embedded default in `data_dir`, whatever the developer's shell selects."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))}
    env.update(TENANT_DATA_DIR=str(data_dir), DAGSTER_HOME=str(dagster_home), **extra)
    return env


@dataclass
class World:
    """An API server and the tokens a test seeded its registry with, by name."""

    server: ApiServer
    tokens: dict[str, str]


def seeded_platform(tmp: Path) -> tuple[dict[str, str], TenantRegistry]:
    """The embedded default's environment in `tmp`, its data directory made and its registry
    open, for a test to seed before it starts the API server on it."""
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    return env, TenantRegistry.open(settings.db_url)


@contextmanager
def api_server(env: dict[str, str], log: Path, *args: str) -> Iterator[ApiServer]:
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tenant_pipelines.api", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: ApiServer) -> None:
    def healthy() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"the API server exited: {server.log.read_text()[-2000:]}")
        try:
            return requests.get(server.base + "/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, START_TIMEOUT_S, "the API server did not answer /healthz in time")
