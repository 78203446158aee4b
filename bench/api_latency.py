"""Submit through the HTTP API -> tenant active, measured from outside as a client meets it.

    python -m bench.api_latency [--requests 20] [--rounds 3] [--plan team]
                                [--backend sqlite,postgres] [--vs-code ../old]

Each round starts a fresh platform with `tenantctl up` (product defaults), issues a token with
`tenantctl token create`, then submits tenants one after the other. A timing starts just before
the client sends `POST /v1/tenants` and stops when `GET /v1/tenants/{slug}` (polled every 50 ms)
first answers `active`; the same timing's "served" figure stops at the first `200` a client gets
from the tenant's address through the edge (HTTPS, the platform's local CA trusted; polled every
50 ms from `active` on). `--backend postgres` runs each round on the production configuration
(`deploy/postgres.env`, on databases of its own: bench/postgres.py); several backends, and
`--vs-code`, interleave their rounds in one run (bench/variants.py). The first request after
`up` is reported apart: it also pays for the run launcher's fork server. Server-side splits
(queue, launch, each op) explain the figures.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import requests

from bench.common import machine_info, percentile, print_table, write_json
from bench.stack_timeline import PHASES, timeline
from bench.variants import Variant, variant_env, variants
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.stack_helpers import Stack, local_stack
from tests.worker_hosts import worker_hosts

POLL_S = 0.05
TIMEOUT_S = 120


def submit_and_wait(
    session: requests.Session, base: str, token: str, slug: str, plan: str
) -> float:
    """Seconds from the client's POST to the first `active` it reads."""
    return submit_and_serve(session, base, token, slug, plan)[0]


def submit_and_serve(
    session: requests.Session,
    base: str,
    token: str,
    slug: str,
    plan: str,
    edge: tuple[Stack, str] | None = None,
) -> tuple[float, float]:
    """Seconds from the client's POST to the first `active` it reads, and (with `edge`: the
    stack and its domain) to the first answer the tenant gives through the edge (else the
    same)."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"slug": slug, "org": "bench", "plan": plan, "admin_email": f"admin@{slug}.example.com"}
    started = time.perf_counter()
    answer = session.post(f"{base}/v1/tenants", json=body, headers=headers, timeout=30)
    answer.raise_for_status()
    while time.perf_counter() - started < TIMEOUT_S:
        state = session.get(f"{base}/v1/tenants/{slug}", headers=headers, timeout=30).json()[
            "state"
        ]
        if state == "active":
            active = time.perf_counter() - started
            return active, active if edge is None else served(*edge, slug, started)
        if state == "failed":
            raise RuntimeError(f"{slug} failed")
        time.sleep(POLL_S)
    raise RuntimeError(f"{slug} not active after {TIMEOUT_S} s")


def served(stack: Stack, domain: str, slug: str, started: float) -> float:
    """Seconds from `started` to the first 200 from the tenant's address through the edge."""
    host = f"{slug}-bench.{domain}"
    while time.perf_counter() - started < TIMEOUT_S:
        try:
            if stack.edge_get(host, "/.well-known/openid-configuration").status == 200:
                return time.perf_counter() - started
        except OSError:  # no certificate yet, or the connection refused: asked again
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{slug} not served after {TIMEOUT_S} s")


def one_round(requests_n: int, plan: str, round_no: int, variant: Variant) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        variant_env(variant) as env,
        local_stack(Path(tmp), **env) as stack,
    ):
        stack.cwd = variant.code or stack.cwd
        stack.start()
        with worker_hosts(stack.env, Path(tmp)):
            token = stack.token("platform-admin", subject="bench")
            session = requests.Session()
            first = submit_and_wait(session, stack.api_base, token, f"r{round_no}first", plan)
            slugs = [f"r{round_no}t{i:03d}" for i in range(requests_n)]
            edge = (stack, Settings.from_env(stack.env).domain)  # read once, outside the timings
            timed = [submit_and_serve(session, stack.api_base, token, s, plan, edge) for s in slugs]
            # Read with this checkout's code: another checkout's instance may differ in its config.
            splits = server_splits(stack, slugs) if variant.code is None else {}
        stack.stop()
    return {
        "first_s": first,
        "seconds": [active for active, _ in timed],
        "served_seconds": [served for _, served in timed],
        "splits": splits,
    }


def server_splits(stack: Stack, slugs: list[str]) -> dict[str, list[float]]:
    settings = Settings.from_env(stack.env)
    dagster_env = {k: v for k, v in stack.env.items() if k.startswith("DAGSTER_")}
    with patch.dict(os.environ, dagster_env):  # dagster.yaml reads DAGSTER_PG_URL from there
        instance = open_instance(settings.dagster_home, settings)
    registry = TenantRegistry.shared(settings.db_url)
    timelines = [timeline(registry, instance, slug) for slug in slugs]
    instance.dispose()
    splits = {
        "queue (run created -> dequeued)": [t.queue_s for t in timelines],
        "launch (dequeued -> worker started)": [t.launch_s for t in timelines],
    }
    for phase in PHASES:
        splits[f"op {phase}"] = [t.phases_s.get(phase, 0.0) for t in timelines]
    return splits


def summary(name: str, values: list[float]) -> dict[str, Any]:
    return {
        "measure": name,
        "p50_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
        "max_s": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plan", default="team")
    parser.add_argument("--backend", default="sqlite", help="sqlite, postgres or both")
    parser.add_argument("--vs-code", help="another checkout, run alternately with this one")
    parser.add_argument("--json", default="bench/results/api_latency.json")
    args = parser.parse_args()
    chosen = variants(args.backend, args.vs_code)

    results: dict[str, list[dict[str, Any]]] = {v.label: [] for v in chosen}
    for n in range(args.rounds):
        for variant in chosen:
            results[variant.label].append(one_round(args.requests, args.plan, n, variant))
    for label, rounds in results.items():
        report(label, rounds, args)
    write_json(
        args.json,
        {"machine": machine_info(), "args": vars(args), "variants": results},
    )


def report(label: str, rounds: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = []
    for n, result in enumerate(rounds):
        rows.append(summary(f"round {n + 1}: submit -> active", result["seconds"]))
        rows.append(summary(f"round {n + 1}: submit -> served", result["served_seconds"]))
        rows.append({"measure": f"round {n + 1}: first after up", "p50_s": result["first_s"]})
    p50s = [percentile(r["seconds"], 50) for r in rounds]
    p95s = [percentile(r["seconds"], 95) for r in rounds]
    firsts = [r["first_s"] for r in rounds]
    served_p50s = [percentile(r["served_seconds"], 50) for r in rounds]
    for name in rounds[0]["splits"]:
        rows.append(summary(f"  {name}", [v for r in rounds for v in r["splits"][name]]))
    print(f"\n{label}")
    print_table(rows, ["measure", "p50_s", "p95_s", "max_s"])
    print(
        f"{label}: median over {len(rounds)} rounds of {args.requests} sequential "
        f"{args.plan} tenants: "
        f"p50 {statistics.median(p50s):.2f} s ({min(p50s):.2f}-{max(p50s):.2f}), "
        f"p95 {statistics.median(p95s):.2f} s ({min(p95s):.2f}-{max(p95s):.2f}), "
        f"first after up {statistics.median(firsts):.2f} s ({min(firsts):.2f}-{max(firsts):.2f}); "
        f"submit -> served through the edge p50 {statistics.median(served_p50s):.2f} s"
        f" ({min(served_p50s):.2f}-{max(served_p50s):.2f}); "
        "targets p50 <= 0.5 s, p95 <= 1.0 s"
    )


if __name__ == "__main__":
    main()
