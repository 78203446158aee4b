"""The operator key: how a command on the control-plane host proves to the platform's API server
that it is the operator's (docs/contracts.md: commands run on the host with access to its registry
are the operator's own).

The API server keeps a random key in the data directory, readable by its owner only, and answers
`/local` calls that carry it in `X-Operator-Key`. Whoever can read the file can open the registry
next to it anyway, so the key grants nothing the commands did not have. It travels in a header,
never in a URL, and is made once per data directory: delete the file and restart `tenantctl up`
to replace it.
"""

import os
import secrets
from pathlib import Path

from tenant_pipelines.support.files import write_atomically

OPERATOR_KEY_FILE = "operator.key"
OPERATOR_KEY_HEADER = "X-Operator-Key"


def operator_key_file(data_dir: Path) -> Path:
    return data_dir / OPERATOR_KEY_FILE


def read_operator_key(data_dir: Path) -> str | None:
    """The key, or None if no server has made one (or this user may not read it)."""
    try:
        return operator_key_file(data_dir).read_text().strip() or None
    except OSError:
        return None


def secret_in(path: Path) -> str:
    """The secret kept in `path`, made now (owner-only) if there is none yet. Of two processes
    making it at once, the first to link its file wins and both read that one."""
    if not path.exists():
        made = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
        write_atomically(made, secrets.token_urlsafe(48))  # owner-only
        try:
            os.link(made, path)
        except FileExistsError:
            pass
        finally:
            made.unlink()
    return path.read_text().strip()
