"""Load through the edge gateway to one tenant's workload, beside the same load sent directly.

    python -m bench.edge_load [--clients 16] [--seconds 10] [--rounds 3] [--old-code DIR]
                              [--json bench/results/edge_load.json]

Each round starts one stack per setup below with `tenantctl up` (product defaults, SQLite),
provisions one `team` tenant through the HTTP API with a platform-admin token, waits for
`active` and for each target to answer 200, then sends `--clients` closed-loop clients
(bench/loadgen.py: threads on raw sockets; `GET /.well-known/openid-configuration`, Host
`load-bench.localhost`) at each of its targets in turn: 1 s of warm-up, then `--seconds`
measured. Rounds interleave the setups, one stack running at a time:

    old: --old-code DIR (on PYTHONPATH)   old edge HTTP, old direct
    new: this checkout                    new edge HTTPS, new direct
    new, TENANT_EDGE_PLAIN_HTTP=serve     new edge HTTP (by default plain HTTP redirects)

Targets: "edge HTTP" is 127.0.0.1:<stack.json edge_port>; "edge HTTPS" is 127.0.0.1:<stack.json
https_port>, SNI and Host the tenant's, verified against the stack's local CA
(<data dir>/edge/caddy/pki/authorities/local/root.crt), HTTP/1.1 by ALPN; "direct" is where
<data dir>/workloads/load-bench.json says the workload listens (`port` on 127.0.0.1, or `socket`).

Connections: a client keeps its connection while the server keeps it open (HTTP/1.1 keep-alive:
the new edge, Caddy) and opens one per request where the server closes it (the old edge answers
HTTP/1.0; the workload answers `Connection: close`, so both direct targets connect per request
too). Column `conn/req` shows which happened.

Timing: a request's latency starts just before its bytes are written or, for a request that opens
its connection, just before connect() (TCP connect and TLS handshake included); it stops when the
last byte of its body has been read. A request counts only if it completed within the measured
window; errors are non-2xx answers and exceptions; req/s = 2xx completed / `--seconds`. Figures
are the median of the rounds (min-max). Added p50 is, per round, an edge's p50 minus the direct
p50 of the same code in the same round (for new edge HTTP, the new direct measured on the
default stack just before). CPU columns: cores used during the window by this
generator, the edge's processes, the workload, and the rest of the machine (the kernel's work
not charged to a process, and every other process: the machine may be shared), from /proc.
Before the rounds, the generator's own ceiling is measured against a minimal server
(bench/loadgen.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.api_latency import submit_and_wait
from bench.common import machine_info, print_table, write_json
from bench.loadgen import (
    Failed,
    LoadResult,
    Target,
    ceiling,
    ceiling_summary,
    fetch_status,
    run_load,
)
from bench.variants import Variant, variant_env
from tenant_pipelines.support.procs import descendants
from tests.stack_helpers import REPO, Stack, local_stack

SLUG, PLAN = "load", "team"
TENANT = f"{SLUG}-bench"  # api_latency submits in org `bench`
HOST = f"{TENANT}.localhost"
PATH = "/.well-known/openid-configuration"
CA = Path("edge/caddy/pki/authorities/local/root.crt")
EDGE_PROCESSES = ("caddy", "localstack.edge", "localstack.gateway")  # in a command line
PLAIN_HTTP_NOTE = "TENANT_EDGE_PLAIN_HTTP=serve set by this bench (default: redirect to HTTPS)"
READY_TIMEOUT_S = 30
GOAL_ADDED_P50_MS, GOAL_TIMES_OLD = 1.0, 3.0
CPU_COLUMNS = ("gen", "edge", "workload", "rest")  # rest: the kernel's share and other processes
OTHERS = 0.3  # cores of "rest": more than the kernel's own share, other processes competed
SATURATED = 0.9  # cores: a Python server process holds the GIL, so about one core is its limit
Rounds = list[dict[str, dict[str, Any]]]  # per round: target -> its figures


@dataclass(frozen=True)
class Setup:
    """One stack per round: whose code, its extra environment, the targets measured on it."""

    code: str  # "old" or "new"
    checkout: Path | None  # None: this checkout
    targets: tuple[str, ...]  # of "edge HTTP", "edge HTTPS", "direct"
    env: dict[str, str] = field(default_factory=dict)


def setups(old_code: Path | None) -> list[Setup]:
    chosen = []
    if old_code is not None:
        chosen.append(Setup("old", old_code, ("edge HTTP", "direct")))
    chosen.append(Setup("new", None, ("edge HTTPS", "direct")))
    chosen.append(Setup("new", None, ("edge HTTP",), {"TENANT_EDGE_PLAIN_HTTP": "serve"}))
    return chosen


def workload_state(stack: Stack) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((stack.data_dir / f"workloads/{TENANT}.json").read_text())
    return state


def target(kind: str, stack: Stack) -> Target:
    if kind == "direct":
        state = workload_state(stack)
        if "socket" in state:
            return Target(HOST, PATH, unix_socket=str(state["socket"]))
        return Target(HOST, PATH, port=int(state["port"]))
    ports = json.loads((stack.data_dir / "stack.json").read_text())
    if kind == "edge HTTPS":
        return Target(HOST, PATH, port=int(ports["https_port"]), ca=stack.data_dir / CA)
    return Target(HOST, PATH, port=int(ports["edge_port"]))


def watched(stack: Stack) -> dict[str, list[int]]:
    """The edge's processes (below `up`) and the workload's, whose CPU is reported."""
    assert stack.process is not None
    below = descendants([stack.process.pid])
    state = workload_state(stack)
    return {
        "edge": [pid for pid, line in below.items() if any(n in line for n in EDGE_PROCESSES)],
        "workload": [int(state["pid"])] if "pid" in state else [],
    }


def wait_serving(where: Target) -> None:
    """Until the target answers 200: a route or a certificate may trail `active` a little."""
    deadline, last = time.monotonic() + READY_TIMEOUT_S, "nothing"
    while time.monotonic() < deadline:
        try:
            status = fetch_status(where)
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, ValueError, Failed) as error:
            last = repr(error)
        time.sleep(0.2)
    raise SystemExit(f"{where} did not answer 200 within {READY_TIMEOUT_S} s: {last}")


def figures(name: str, result: LoadResult) -> dict[str, Any]:
    if not result.latencies_s:
        raise SystemExit(f"{name}: no request succeeded ({result.errors} errors)")
    cpu = result.cpu
    ours = {"gen": cpu["generator"], "edge": cpu["edge"], "workload": cpu["workload"]}
    return {
        "req_s": result.rps,
        "p50_ms": result.latency_ms(50),
        "p99_ms": result.latency_ms(99),
        "errors": result.errors,
        "conn_per_req": result.connections / len(result.latencies_s),
        "cpu": {
            **ours,
            "rest": max(0.0, cpu["machine"] - sum(ours.values())),
            "machine": cpu["machine"],
        },
    }


def one_round(setup: Setup, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        variant_env(Variant("sqlite", setup.checkout)) as env,
        local_stack(Path(tmp), True, **env, **setup.env) as stack,
    ):
        stack.cwd = setup.checkout or stack.cwd
        stack.start()
        token = stack.token("platform-admin", subject="bench")
        submit_and_wait(requests.Session(), stack.api_base, token, SLUG, PLAN)
        measured = {}
        for kind in setup.targets:
            name, where = f"{setup.code} {kind}", target(kind, stack)
            wait_serving(where)
            result = run_load(where, args.clients, args.seconds, watch=watched(stack))
            measured[name] = figures(name, result)
        stack.stop()
    return measured


def spread(values: list[float], digits: int = 2) -> str:
    """The median, and the range when the rounds differ."""
    mid, low, high = statistics.median(values), min(values), max(values)
    text = f"{mid:.{digits}f}"
    return text if low == high else f"{text} ({low:.{digits}f}-{high:.{digits}f})"


def median(rounds: Rounds, name: str, key: str, sub: str | None = None) -> float:
    return statistics.median(r[name][key][sub] if sub else r[name][key] for r in rounds)


def compared(rounds: Rounds) -> dict[str, dict[str, list[float]]]:
    """Per target, per round: its added p50 and its req/s as a multiple of the direct target's
    (same code), and its req/s as a multiple of the old edge's."""
    names, old = list(rounds[0]), "old edge HTTP"
    out: dict[str, dict[str, list[float]]] = {}
    for name in names:
        direct = f"{name.split()[0]} direct"
        out[name] = {}
        if name != direct and direct in names:
            out[name]["added p50 ms"] = [r[name]["p50_ms"] - r[direct]["p50_ms"] for r in rounds]
            out[name]["x direct req/s"] = [r[name]["req_s"] / r[direct]["req_s"] for r in rounds]
        if old in names and name != old:
            out[name]["x old edge req/s"] = [r[name]["req_s"] / r[old]["req_s"] for r in rounds]
    return out


def goals(name: str, ratios: dict[str, list[float]]) -> str:
    if not name.startswith("new edge"):
        return ""
    said = []
    if "added p50 ms" in ratios:
        met = statistics.median(ratios["added p50 ms"]) <= GOAL_ADDED_P50_MS
        said.append(f"added p50 <= {GOAL_ADDED_P50_MS:g} ms {'met' if met else 'NOT met'}")
    if "x old edge req/s" in ratios:
        met = statistics.median(ratios["x old edge req/s"]) >= GOAL_TIMES_OLD
        said.append(f">= {GOAL_TIMES_OLD:g}x old edge {'met' if met else 'NOT met'}")
    return "; ".join(said)


def bottleneck(rounds: Rounds, name: str, ratios: dict[str, list[float]]) -> str:
    """What held a target back: the workload or the old edge (Python: about one core each),
    the generator, or the machine's cores altogether; and whether other work disturbed it."""
    cpu = {who: median(rounds, name, "cpu", who) for who in (*CPU_COLUMNS, "machine")}
    cores = os.cpu_count() or 1
    used = ", ".join(f"{who} {cpu[who]:.2f}" for who in CPU_COLUMNS)
    used = f"({median(rounds, name, 'req_s'):.0f} req/s; cores used: {used}; machine busy"
    used += f" {cpu['machine']:.2f} of {cores})"
    if cpu["rest"] >= OTHERS:
        used += f"; DISTURBED: other processes (or the kernel) took {cpu['rest']:.2f} cores"
    if cpu["workload"] >= SATURATED:
        if "x direct req/s" in ratios:
            share = statistics.median(ratios["x direct req/s"])
            return f"{name}: bound by the workload, at {share:.0%} of its direct req/s {used}"
        return f"{name}: the workload's own ceiling, one core busy {used}"
    if name.startswith("old edge") and cpu["edge"] >= SATURATED:
        return f"{name}: bound by the edge, one core busy {used}"
    if cpu["gen"] >= SATURATED:
        return f"{name}: bound by the load generator {used}"
    if cpu["machine"] >= SATURATED * cores:
        return f"{name}: bound by the machine's {cores} cores, all busy {used}"
    return f"{name}: no core saturated {used}"


def headroom(rounds: Rounds, ratios: dict[str, dict[str, list[float]]]) -> list[str]:
    """How far the workload alone lets any edge go, against the throughput goal (only where
    the direct load kept the workload busy: then its req/s is its ceiling)."""
    said = []
    for name in (n for n in rounds[0] if n.endswith(" direct")):
        times_old = ratios[name].get("x old edge req/s")
        if times_old and median(rounds, name, "cpu", "workload") >= SATURATED:
            x = statistics.median(times_old)
            said.append(
                f"{name}: the workload alone serves {median(rounds, name, 'req_s'):.0f} req/s,"
                f" {x:.2f}x the old edge's: no edge in front of it exceeds that; the"
                f" {GOAL_TIMES_OLD:g}x goal needs an edge to keep {GOAL_TIMES_OLD / x:.0%} of it"
            )
    return said


def report(rounds: Rounds) -> dict[str, dict[str, list[float]]]:
    """Print the figures, the comparisons with the goals, and what bounds each target."""
    rows = [
        {
            "target": name,
            "req/s": spread([r[name]["req_s"] for r in rounds], 0),
            "p50 ms": spread([r[name]["p50_ms"] for r in rounds]),
            "p99 ms": spread([r[name]["p99_ms"] for r in rounds]),
            "errors": spread([r[name]["errors"] for r in rounds], 0),
            "conn/req": f"{median(rounds, name, 'conn_per_req'):.2f}",
            **{f"{w} CPU": f"{median(rounds, name, 'cpu', w):.2f}" for w in CPU_COLUMNS},
            "note": PLAIN_HTTP_NOTE if name == "new edge HTTP" else "",
        }
        for name in rounds[0]
    ]
    print_table(rows, list(rows[0]))
    ratios = compared(rounds)
    columns = ("added p50 ms", "x direct req/s", "x old edge req/s")
    print()
    print_table(
        [
            {
                "target": name,
                **{c: spread(r[c]) if c in r else "-" for c in columns},
                "goals": goals(name, r),
            }
            for name, r in ratios.items()
        ],
        ["target", *columns, "goals"],
    )
    print()
    for name in rounds[0]:
        print(bottleneck(rounds, name, ratios[name]))
    for line in headroom(rounds, ratios):
        print(line)
    return ratios


def commit(checkout: Path) -> str:
    def git(*argv: str) -> str:
        run = ["git", "-C", str(checkout), *argv]
        return subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()

    dirty = " with uncommitted changes" if git("status", "--porcelain") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-code", type=Path, help="a checkout of the old edge's code")
    parser.add_argument("--json", default="bench/results/edge_load.json")
    args = parser.parse_args()
    old = args.old_code.resolve() if args.old_code else None
    if old is not None and not (old / "tenant_pipelines").is_dir():
        raise SystemExit(f"--old-code {old}: no tenant_pipelines package there")
    chosen = setups(old)
    commits = {setup.code: commit(setup.checkout or REPO) for setup in chosen}
    print("code: " + ", ".join(f"{code} at {at}" for code, at in commits.items()))

    gen = ceiling(args.clients, min(args.seconds, 3.0))
    print(f"\nload generator's ceiling: {args.clients} clients against a minimal server")
    print_table(gen, list(gen[0]))
    print(ceiling_summary(gen))

    rounds: Rounds = []
    for n in range(args.rounds):
        measured = {k: v for setup in chosen for k, v in one_round(setup, args).items()}
        said = ", ".join(f"{name} {m['req_s']:.0f} req/s" for name, m in measured.items())
        print(f"round {n + 1}: {said}")
        rounds.append(measured)
    print(f"\n{args.clients} clients, {args.seconds:g} s per target, median of {args.rounds}")
    ratios = report(rounds)
    write_json(
        args.json,
        {
            "machine": machine_info(),
            "args": {**vars(args), "old_code": str(old) if old else None},
            "commits": commits,
            "generator_ceiling": gen,
            "rounds": rounds,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
