"""Many requests at once under `tenantctl up`: time until all are active, failures, memory.

python -m bench.throughput [--requests 50] [--max-concurrent 8] [--free-limit N] [--team-limit N]
                           [--plans free,team] [--json bench/results/throughput.json]

The per-plan limits must leave the global limit a slot for every other plan (`tenantctl up`
refuses a configuration that would starve one).
"""

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import machine_info, print_table, write_json
from bench.memory import MemorySampler
from tenant_pipelines.cli import commands as cli
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.stack_helpers import local_stack

TIMEOUT_S = 600
POLL_S = 0.2
SUBMITTERS = 8


def submit_all(settings: Settings, slugs: list[str], plans: list[str]) -> None:
    """Through the CLI's own code (in process, in parallel): record, then launch directly."""

    def one(item: tuple[int, str]) -> None:
        i, slug = item
        cli.submit(
            settings,
            {
                "slug": slug,
                "org": "bench",
                "plan": plans[i % len(plans)],
                "admin_email": f"admin@{slug}.example.com",
                "requested_by": {"subject": "bench", "role": "platform-admin"},
            },
        )

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        list(pool.map(one, enumerate(slugs)))


def wait_all(settings: Settings, count: int) -> tuple[int, int]:
    registry = TenantRegistry.shared(settings.db_url)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        states = [t.state for t in registry.tenants.all()]
        active, failed = states.count("active"), states.count("failed")
        if active + failed == count:
            return active, failed
        time.sleep(POLL_S)
    raise RuntimeError(f"not all {count} tenants settled after {TIMEOUT_S} s")


def run(
    requests: int,
    max_concurrent: int,
    free_limit: int | None,
    team_limit: int | None,
    plans: list[str],
) -> dict:
    extra = {"TENANT_MAX_CONCURRENT_RUNS": str(max_concurrent)}
    if free_limit:
        extra["TENANT_FREE_CONCURRENCY"] = str(free_limit)
    if team_limit:
        extra["TENANT_TEAM_CONCURRENCY"] = str(team_limit)
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        local_stack(Path(tmp), **extra) as stack,
    ):
        stack.start()
        settings = Settings.from_env(stack.env)
        slugs = [f"tp{i:03d}" for i in range(requests)]
        assert stack.process is not None
        with MemorySampler(str(stack.data_dir), stack.process.pid) as memory:
            started = time.monotonic()
            submit_all(settings, slugs, plans)
            submitted = time.monotonic() - started
            active, failed = wait_all(settings, requests)
            elapsed = time.monotonic() - started
            memory.sample()
        stack.stop()
    workloads = memory.workload_mb or [0.0]
    return {
        "requests": requests,
        "max_concurrent": max_concurrent,
        "free_limit": free_limit,
        "team_limit": team_limit,
        "plans": ",".join(plans),
        "submit_s": submitted,
        "all_settled_s": elapsed,
        "active": active,
        "failed": failed,
        "peak_total_mb": memory.peak_total_mb,
        "peak_platform_mb": memory.peak_platform_mb,
        "workload_mb_mean": sum(workloads) / len(workloads),
        "workload_mb_max": max(workloads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument("--free-limit", type=int, default=None)
    parser.add_argument("--team-limit", type=int, default=None)
    parser.add_argument("--plans", default="free,team")
    parser.add_argument("--json", default="bench/results/throughput.json")
    args = parser.parse_args()
    result = run(
        args.requests, args.max_concurrent, args.free_limit, args.team_limit, args.plans.split(",")
    )
    print_table([result], list(result))
    target = result["failed"] == 0 and result["all_settled_s"] <= 60
    print(
        f"target (all {args.requests} active within 60 s, none failed): "
        f"{'met' if target else 'missed'}"
    )
    write_json(args.json, {"machine": machine_info(), "result": result})


if __name__ == "__main__":
    main()
