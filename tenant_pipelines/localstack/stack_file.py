"""Where a running `tenantctl up` listens: `<data dir>/stack.json`, read by every command that
talks to the running platform. A SIGKILLed `up` leaves its file behind: it counts only while its
process lives and the platform's lock is held, and the next `up` removes it once the lock is its."""

import json
from pathlib import Path

from tenant_pipelines.localstack.platform_lock import is_held
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
    running = alive(int(stack["pid"])) and is_held(settings.data_dir)
    return stack if running else None
