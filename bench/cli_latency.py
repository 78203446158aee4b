"""`tenantctl request` and `tenantctl status` wall time, as a person at the shell meets them.

    python -m bench.cli_latency [--requests 10] [--rounds 3]

Each round starts a fresh platform with `tenantctl up` (product defaults), then runs
`tenantctl request ...` for each tenant one after the other, waiting for it to become active
(polled through `tenantctl status --json`), and then `tenantctl status <slug>` once for each.
A timing starts just before the client process is started and stops when it has exited: it
includes Python's own start (measured apart, as `python -c pass`). The first request after `up`
is reported apart.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, percentile, print_table, write_json
from tests.stack_helpers import Stack, local_stack

TIMEOUT_S = 120


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds from starting `command` to its exit, and its stdout."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[1:3]} exited {result.returncode}: {result.stderr.strip()}")
    return seconds, result.stdout


def tenantctl(stack: Stack, *args: str) -> tuple[float, str]:
    return timed([str(Path(sys.executable).parent / "tenantctl"), *args], stack.env)


def request(stack: Stack, slug: str, plan: str) -> float:
    seconds, _ = tenantctl(
        stack,
        "request",
        *("--slug", slug, "--org", "bench", "--plan", plan),
        *("--admin-email", f"admin@{slug}.example.com"),
        *("--caller", "bench", "--role", "platform-admin"),
    )
    return seconds


def wait_active(stack: Stack, slug: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        _, out = tenantctl(stack, "status", slug, "--json")
        if json.loads(out)["state"] == "active":
            return
        time.sleep(0.05)
    raise RuntimeError(f"{slug} not active after {TIMEOUT_S} s")


def one_round(requests_n: int, plan: str, round_no: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        local_stack(Path(tmp)) as stack,
    ):
        stack.start()
        first = request(stack, f"c{round_no}first", plan)
        wait_active(stack, f"c{round_no}first")
        slugs = [f"c{round_no}t{i:03d}" for i in range(requests_n)]
        requests_s = []
        for slug in slugs:
            requests_s.append(request(stack, slug, plan))
            wait_active(stack, slug)
        status_s = [tenantctl(stack, "status", slug)[0] for slug in slugs]
        stack.stop()
    return {"first_request_s": first, "request_s": requests_s, "status_s": status_s}


def python_start(env: dict[str, str], times: int = 10) -> float:
    return statistics.median(timed([sys.executable, "-c", "pass"], env)[0] for _ in range(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plan", default="team")
    parser.add_argument("--json", default="bench/results/cli_latency.json")
    args = parser.parse_args()

    rounds = [one_round(args.requests, args.plan, n) for n in range(args.rounds)]
    rows = []
    for name in ("request_s", "status_s"):
        p50s = [percentile(r[name], 50) for r in rounds]
        rows.append(
            {
                "measure": f"tenantctl {name.removesuffix('_s')}",
                "p50_s": statistics.median(p50s),
                "p50_min_s": min(p50s),
                "p50_max_s": max(p50s),
                "p95_s": statistics.median(percentile(r[name], 95) for r in rounds),
            }
        )
    firsts = [r["first_request_s"] for r in rounds]
    rows.append(
        {
            "measure": "tenantctl request, first after up",
            "p50_s": statistics.median(firsts),
            "p50_min_s": min(firsts),
            "p50_max_s": max(firsts),
        }
    )
    rows.append({"measure": "python -c pass", "p50_s": python_start(dict(os.environ))})
    print_table(rows, ["measure", "p50_s", "p50_min_s", "p50_max_s", "p95_s"])
    print(f"median of {args.rounds} rounds' p50 (min-max of the rounds); target p50 <= 0.35 s")
    write_json(
        args.json, {"machine": machine_info(), "args": vars(args), "rounds": rounds, "rows": rows}
    )


if __name__ == "__main__":
    main()
