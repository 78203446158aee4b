"""Configuration from the environment, read when asked for, never at import time."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = ".tenant-data"
DEFAULT_DOMAIN = "localhost"
DEFAULT_SENSOR_INTERVAL_S = 1
DEFAULT_SENDGRID_API_HOST = "https://api.sendgrid.com"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db_url: str
    domain: str
    dagster_home: Path
    sensor_interval_s: int
    sendgrid_configured: bool
    sendgrid_api_host: str
    fault_plan: Path | None  # TENANT_FAULT_PLAN: drills and tests only

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("TENANT_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
        return cls(
            data_dir=data_dir,
            db_url=env.get("TENANT_DB_URL") or f"sqlite:///{data_dir / 'registry.db'}",
            domain=env.get("TENANT_DOMAIN") or DEFAULT_DOMAIN,
            dagster_home=Path(env.get("DAGSTER_HOME") or data_dir / "dagster").resolve(),
            sensor_interval_s=int(env.get("TENANT_SENSOR_INTERVAL_S") or DEFAULT_SENSOR_INTERVAL_S),
            sendgrid_configured=bool(env.get("SENDGRID_API_KEY")),
            sendgrid_api_host=env.get("SENDGRID_API_HOST") or DEFAULT_SENDGRID_API_HOST,
            fault_plan=Path(env["TENANT_FAULT_PLAN"]).resolve()
            if env.get("TENANT_FAULT_PLAN")
            else None,
        )

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for processes we start: every setting spelled out."""
        env = dict(os.environ if base is None else base)
        env.update(
            TENANT_DATA_DIR=str(self.data_dir),
            TENANT_DB_URL=self.db_url,
            TENANT_DOMAIN=self.domain,
            DAGSTER_HOME=str(self.dagster_home),
            TENANT_SENSOR_INTERVAL_S=str(self.sensor_interval_s),
        )
        return env
