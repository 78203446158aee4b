"""Where a running `tenantctl up` listens: `<data dir>/stack.json`, read by every command that
talks to the running platform."""

import json
from pathlib import Path

from tenant_pipelines.settings import Settings
from tenant_pipelines.support.procs import alive

STACK_FILE = "stack.json"


def stack_file(settings: Settings) -> Path:
    return settings.data_dir / STACK_FILE


def read_stack(settings: Settings) -> dict[str, int | str] | None:
    """Where the running stack listens, if one runs for this data directory."""
    try:
        stack = json.loads(stack_file(settings).read_text())
    except (OSError, ValueError):
        return None
    return stack if alive(int(stack["pid"])) else None
