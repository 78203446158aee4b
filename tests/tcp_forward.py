"""Relay TCP connections from one address to another, in both directions, until killed.

    python -m tests.tcp_forward LISTEN_HOST:PORT=TARGET_HOST:PORT [...]

The namespace tier (`tests/namespace_hosts.py`) makes the machine's PostgreSQL and Redis, which
listen on 127.0.0.1 only, reachable from its network namespaces at the bridge's address. Prints
`ready` once every listener is bound.
"""

import asyncio
import contextlib
import sys

CHUNK = 65536


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _relay_to(host: str, port: int):  # type: ignore[no-untyped-def]
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, target_writer), _pump(target_reader, writer))

    return relay


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main(pairs: list[str]) -> None:
    servers = []
    for pair in pairs:
        listen, _, target = pair.partition("=")
        host, port = _address(listen)
        servers.append(await asyncio.start_server(_relay_to(*_address(target)), host, port))
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
