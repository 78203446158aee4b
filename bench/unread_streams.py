"""How the API answers while many event streams are open and never read, from outside.

    python -m bench.unread_streams [--streams 500] [--calls 50] [--rounds 3]

Each round starts a fresh platform with `tenantctl up` (product defaults), provisions one
tenant, opens `--streams` `GET /v1/tenants/{slug}/events` streams (`Accept: text/event-stream`,
16 per token, the per-token cap) on raw sockets that are never read past the answer's head, then
times `--calls` sequential `GET /healthz` and `GET /v1/tenants` calls. A call that has not been
answered after 10 s counts as a timeout; after 3 timeouts an endpoint is given up on (a version
whose streams hold a worker thread each answers nothing at all).
"""

import argparse
import select
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import machine_info, percentile, print_table, write_json
from tests.stack_helpers import Stack, local_stack

PER_TOKEN = 16
CALL_TIMEOUT_S = 10.0
GIVE_UP_AFTER = 3
HEADS_WITHIN_S = 30.0


def provision(stack: Stack, token: str, slug: str) -> None:
    """One free tenant, active: the streams follow its feed."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"slug": slug, "org": "bench", "plan": "free", "admin_email": f"a@{slug}.example.com"}
    requests.post(f"{stack.api_base}/v1/tenants", json=body, headers=headers, timeout=30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = requests.get(f"{stack.api_base}/v1/tenants/{slug}", headers=headers, timeout=30)
        if answer.json().get("state") == "active":
            return
        time.sleep(0.2)
    raise RuntimeError(f"{slug} did not become active")


def open_streams(stack: Stack, tokens: list[str], slug: str, count: int) -> list[socket.socket]:
    host, port = stack.api_base.removeprefix("http://").split(":")
    opened = []
    for number in range(count):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            f"GET /v1/tenants/{slug}/events HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tokens[number // PER_TOKEN]}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        opened.append(sock)
    return opened


def heads(streams: list[socket.socket]) -> int:
    """How many streams got their `200` head within HEADS_WITHIN_S (read no further)."""
    deadline = time.monotonic() + HEADS_WITHIN_S
    answered = 0
    for sock in streams:
        received = b""
        while b"\r\n\r\n" not in received and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            received += sock.recv(4096)
        answered += received.startswith(b"HTTP/1.1 200")
    return answered


def timed_calls(url: str, headers: dict[str, str], calls: int) -> dict[str, Any]:
    seconds: list[float] = []
    timeouts = 0
    with requests.Session() as client:
        for _ in range(calls):
            started = time.perf_counter()
            try:
                client.get(url, headers=headers, timeout=CALL_TIMEOUT_S).raise_for_status()
                seconds.append(time.perf_counter() - started)
            except requests.Timeout:
                timeouts += 1
                if timeouts >= GIVE_UP_AFTER:
                    break
    return {"seconds": seconds, "timeouts": timeouts}


def one_round(streams_n: int, calls: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        local_stack(Path(tmp)) as stack,
    ):
        stack.start()
        tokens = [
            stack.token("viewer", "bench", subject=f"reader-{n}")
            for n in range(max(1, -(-streams_n // PER_TOKEN)))
        ]
        provision(stack, stack.token("platform-admin", subject="bench"), "watched")
        streams = open_streams(stack, tokens, "watched", streams_n)
        try:
            answered = heads(streams)
            auth = {"Authorization": f"Bearer {tokens[0]}"}
            result = {
                "streams_answered": answered,
                "/healthz": timed_calls(f"{stack.api_base}/healthz", {}, calls),
                "/v1/tenants": timed_calls(f"{stack.api_base}/v1/tenants", auth, calls),
            }
        finally:
            for sock in streams:
                sock.close()
        stack.stop()
    return result


def row(round_no: int, path: str, measured: dict[str, Any]) -> dict[str, Any]:
    seconds = measured["seconds"]
    return {
        "round": round_no,
        "endpoint": path,
        "answered": len(seconds),
        "timeouts": measured["timeouts"],
        "p50_ms": 1000 * percentile(seconds, 50) if seconds else None,
        "p99_ms": 1000 * percentile(seconds, 99) if seconds else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="bench/results/unread_streams.json")
    args = parser.parse_args()

    rounds = [one_round(args.streams, args.calls) for _ in range(args.rounds)]
    rows = [
        row(n + 1, path, r[path])
        for n, r in enumerate(rounds)
        for path in ("/healthz", "/v1/tenants")
    ]
    print_table(rows, ["round", "endpoint", "answered", "timeouts", "p50_ms", "p99_ms"])
    for path in ("/healthz", "/v1/tenants"):
        p50s = [r["p50_ms"] for r in rows if r["endpoint"] == path and r["p50_ms"] is not None]
        p99s = [r["p99_ms"] for r in rows if r["endpoint"] == path and r["p99_ms"] is not None]
        if len(p50s) == len(rounds):
            print(
                f"{path} with {args.streams} unread streams, median of {len(rounds)} rounds: "
                f"p50 {statistics.median(p50s):.1f} ms ({min(p50s):.1f}-{max(p50s):.1f}), "
                f"p99 {statistics.median(p99s):.1f} ms ({min(p99s):.1f}-{max(p99s):.1f})"
            )
        else:
            print(f"{path} with {args.streams} unread streams: timed out (no answer in 10 s)")
    opened = [r["streams_answered"] for r in rounds]
    print(f"streams answered 200 within {HEADS_WITHIN_S:g} s: {opened} of {args.streams}")
    write_json(args.json, {"machine": machine_info(), "args": vars(args), "rounds": rounds})


if __name__ == "__main__":
    main()
