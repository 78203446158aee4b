"""`python -m tenant_pipelines.api --port N`: the API server, as `tenantctl up` starts it."""

import argparse
import socket
import sys
from pathlib import Path

import uvicorn

from tenant_pipelines.api.app import create_app
from tenant_pipelines.api.context import Addresses
from tenant_pipelines.api.hub import FeedHub, StreamLimits
from tenant_pipelines.api.logs import log_config
from tenant_pipelines.settings import Settings

# Requests still running this long after a stop was asked for are cancelled.
SHUTDOWN_GRACE_S = 3


class StreamEndingServer(uvicorn.Server):
    """Uvicorn waits for open connections before it stops, and an event stream never ends by
    itself: end the streams first, each with its reason, so the server stops at once."""

    def __init__(self, config: uvicorn.Config, hub: FeedHub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.close_streams()
        await super().shutdown(sockets)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenant_pipelines.api", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--workspace",
        type=Path,
        help="launch runs of, and serve the Dagster UI for, this workspace",
    )
    parser.add_argument(
        "--streams-per-token",
        type=_positive,
        default=StreamLimits.per_token,
        help="open event streams one token may hold (more: 429)",
    )
    parser.add_argument(
        "--max-streams",
        type=_positive,
        default=StreamLimits.total,
        help="open event streams this server holds in all (more: 503)",
    )
    args = parser.parse_args(argv)
    addresses = Addresses(args.workspace)
    limits = StreamLimits(per_token=args.streams_per_token, total=args.max_streams)
    app = create_app(Settings.from_env(), addresses, stream_limits=limits)
    # Access lines name method, path (no query string, secrets masked) and status only.
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        log_config=log_config(),
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    StreamEndingServer(config, app.state.hub).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
