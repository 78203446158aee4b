"""Many tenants at once through the HTTP API, with the product's defaults (run limits included).

    python -m bench.burst --requests 50 --plans free                    # 50 free at once
    python -m bench.burst --requests 200 --plans free,team --enterprise  # 200 mixed, one
                                                                         # enterprise mid-burst
    python -m bench.burst ... --backend postgres     # deploy/postgres.env (bench/postgres.py)
    python -m bench.burst ... --backend sqlite,postgres --vs-code ../old   # interleaved rounds
Each round starts a fresh `tenantctl up`, issues a token, and submits every request from 16
client threads. The burst's clock starts just before the first POST; a tenant counts once
`GET /v1/tenants` lists it `active`. With --enterprise one enterprise request is sent once half
the others are, and its own time (its POST -> active, polled every 50 ms) is reported too.
On PostgreSQL the platform's connections are sampled from `pg_stat_activity` every 250 ms (the
peak, in all and per process kind). Memory is the platform's and the tenants' processes' PSS,
the peak during the burst and at rest.
"""

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.common import machine_info, print_table, write_json
from bench.memory import MemorySampler
from bench.postgres import ConnectionSampler
from bench.variants import Variant, variant_env, variants
from tests.stack_helpers import Stack, local_stack
from tests.worker_hosts import worker_hosts

CLIENTS = 16
POLL_S = 0.5
TIMEOUT_S = 900


def body(slug: str, plan: str) -> dict[str, str]:
    return {"slug": slug, "org": "burst", "plan": plan, "admin_email": f"admin@{slug}.example.com"}


def post(stack: Stack, token: str, slug: str, plan: str) -> None:
    answer = requests.post(
        f"{stack.api_base}/v1/tenants",
        json=body(slug, plan),
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    answer.raise_for_status()


def time_one(stack: Stack, token: str, slug: str, plan: str, result: dict[str, float]) -> None:
    """One request's own time: its POST -> the first `active` it reads."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    post(stack, token, slug, plan)
    while time.perf_counter() - started < TIMEOUT_S:
        state = requests.get(f"{stack.api_base}/v1/tenants/{slug}", headers=headers, timeout=60)
        if state.json()["state"] == "active":
            result[slug] = time.perf_counter() - started
            return
        time.sleep(0.05)


def wait_all(stack: Stack, token: str, count: int, started: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    while time.perf_counter() - started < TIMEOUT_S:
        rows = requests.get(f"{stack.api_base}/v1/tenants", headers=headers, timeout=60).json()
        states = [row["state"] for row in rows]
        active, failed = states.count("active"), states.count("failed")
        if active + failed >= count:
            return {
                "all_settled_s": time.perf_counter() - started,
                "active": active,
                "failed": failed,
            }
        time.sleep(POLL_S)
    raise RuntimeError(f"not all {count} tenants settled within {TIMEOUT_S} s")


def one_round(
    requests_n: int, plans: list[str], enterprise: bool, round_no: int, variant: Variant
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        variant_env(variant) as env,
        local_stack(Path(tmp), **env) as stack,
    ):
        stack.cwd = variant.code or stack.cwd
        stack.start()
        with worker_hosts(stack.env, Path(tmp)):
            token = stack.token("platform-admin", subject="burst")
            assert stack.process is not None
            slugs = [f"b{round_no}n{i:03d}" for i in range(requests_n)]
            timed: dict[str, float] = {}
            with (
                MemorySampler(str(stack.data_dir), stack.process.pid) as memory,
                ConnectionSampler(env) as connections,
            ):
                started = time.perf_counter()
                with ThreadPoolExecutor(CLIENTS) as pool:
                    futures = []
                    for i, slug in enumerate(slugs):
                        futures.append(pool.submit(post, stack, token, slug, plans[i % len(plans)]))
                        if enterprise and i == requests_n // 2:
                            threading.Thread(
                                target=time_one,
                                args=(stack, token, f"b{round_no}ent", "enterprise", timed),
                            ).start()
                    for future in futures:
                        future.result()
                submitted_s = time.perf_counter() - started
                settled = wait_all(stack, token, requests_n + enterprise, started)
                time.sleep(2)  # at rest
                memory.sample()
                at_rest_mb = memory.last_total_mb
        stack.stop()
    return {
        **settled,
        "submitted_s": submitted_s,
        "enterprise_s": timed.get(f"b{round_no}ent"),
        "peak_pss_mb": memory.peak_total_mb,
        "at_rest_pss_mb": at_rest_mb,
        "platform_pss_mb": memory.peak_platform_mb,
        "workload_pss_mb": statistics.mean(memory.workload_mb) if memory.workload_mb else None,
        "pg_connections_peak": connections.peak_total if variant.backend == "postgres" else None,
        "pg_connections_by_process": connections.peak_by_name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--plans", default="free")
    parser.add_argument("--enterprise", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="sqlite", help="sqlite, postgres or both")
    parser.add_argument("--vs-code", help="another checkout, run alternately with this one")
    parser.add_argument("--json", default="bench/results/burst.json")
    args = parser.parse_args()
    plans = args.plans.split(",")
    chosen = variants(args.backend, args.vs_code)

    results: dict[str, list[dict[str, Any]]] = {v.label: [] for v in chosen}
    for n in range(args.rounds):
        for variant in chosen:
            result = one_round(args.requests, plans, args.enterprise, n, variant)
            results[variant.label].append(result)
    for label, rounds in results.items():
        report(label, rounds, args)
    write_json(args.json, {"machine": machine_info(), "args": vars(args), "variants": results})


def report(label: str, rounds: list[dict[str, Any]], args: argparse.Namespace) -> None:
    columns = ["all_settled_s", "active", "failed", "submitted_s", "enterprise_s"]
    columns += ["peak_pss_mb", "at_rest_pss_mb", "platform_pss_mb", "workload_pss_mb"]
    postgres = rounds[0]["pg_connections_peak"] is not None
    columns += ["pg_connections_peak"] if postgres else []
    print(f"\n{label}")
    print_table(rounds, columns)
    settled = [r["all_settled_s"] for r in rounds]
    line = (
        f"{label}: {args.requests} x {args.plans}"
        f"{' + 1 enterprise' if args.enterprise else ''}, {len(rounds)} rounds: "
        f"all settled in {statistics.median(settled):.1f} s "
        f"({min(settled):.1f}-{max(settled):.1f}), failed {sum(r['failed'] for r in rounds)}"
    )
    if args.enterprise:
        ent = [r["enterprise_s"] for r in rounds if r["enterprise_s"] is not None]
        if ent:
            line += f", enterprise {statistics.median(ent):.2f} s ({min(ent):.2f}-{max(ent):.2f})"
    print(line)
    if postgres:
        for n, result in enumerate(rounds):
            print(
                f"round {n + 1}: PostgreSQL connections at peak {result['pg_connections_peak']}, "
                f"by process kind {result['pg_connections_by_process']}"
            )


if __name__ == "__main__":
    main()
