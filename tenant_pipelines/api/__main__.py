"""`python -m tenant_pipelines.api --port N`: the API server, as `tenantctl up` starts it."""

import argparse
import sys
from pathlib import Path

import uvicorn

from tenant_pipelines.api.app import create_app
from tenant_pipelines.api.context import Addresses
from tenant_pipelines.api.logs import log_config
from tenant_pipelines.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenant_pipelines.api", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--edge-port", type=int, help="the edge gateway, for admin console links")
    parser.add_argument(
        "--workspace",
        type=Path,
        help="launch runs of, and serve the Dagster UI for, this workspace",
    )
    args = parser.parse_args(argv)
    addresses = Addresses(args.edge_port, args.workspace)
    app = create_app(Settings.from_env(), addresses)
    # Access lines name method, path (no query string, secrets masked) and status only.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", log_config=log_config())
    return 0


if __name__ == "__main__":
    sys.exit(main())
