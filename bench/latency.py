"""Request-to-active latency under `tenantctl up`, phase by phase, against the floor of the same
phases called as plain Python in one process.

    python -m bench.latency [--requests 10] [--plan team] [--json bench/results/latency.json]
"""

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import machine_info, percentile, print_table, write_json
from bench.stack_timeline import PHASES, Timeline, timeline
from tenant_pipelines.composition import build_platform
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga import emails, phases
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.settings import Settings
from tests.stack_helpers import local_stack

POLL_S = 0.02
TIMEOUT_S = 120


def request_args(slug: str, plan: str) -> list[str]:
    return [
        "request",
        "--slug",
        slug,
        "--org",
        "bench",
        "--plan",
        plan,
        "--admin-email",
        f"admin@{slug}.example.com",
        "--caller",
        "bench",
        "--role",
        "platform-admin",
    ]


def wait_active(settings: Settings, slug: str) -> None:
    registry = TenantRegistry.shared(settings.db_url)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            state = registry.tenants.get(slug).state
        except Exception:
            state = "requested"
        if state == "active":
            return
        if state == "failed":
            raise RuntimeError(f"{slug} failed")
        time.sleep(POLL_S)
    raise RuntimeError(f"{slug} not active after {TIMEOUT_S} s")


def orchestrated(requests: int, plan: str) -> tuple[list[Timeline], list[float]]:
    """Sequential requests through the real CLI and stack; timelines and CLI wall times."""
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        local_stack(Path(tmp)) as stack,
    ):
        settings = Settings.from_env(stack.env)
        stack.start()
        cli_s = []
        for i in range(requests):
            slug = f"lat{i:03d}"
            started = time.perf_counter()
            stack.cli(*request_args(slug, plan))
            cli_s.append(time.perf_counter() - started)
            wait_active(settings, slug)
        instance = open_instance(settings.dagster_home, settings)
        registry = TenantRegistry.shared(settings.db_url)
        timelines = [timeline(registry, instance, f"lat{i:03d}") for i in range(requests)]
        stack.stop()
        return timelines, cli_s


def floor(requests: int, plan: str) -> list[dict[str, float]]:
    """The same phases, no orchestration: plain calls in this process."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        settings = Settings.from_env({"TENANT_DATA_DIR": tmp})
        platform = build_platform(settings)
        registry = platform.registry
        backends = platform.backends()
        samples = []
        try:
            for i in range(requests):
                samples.append(_floor_once(registry, backends, settings, f"flr{i:03d}", plan))
        finally:
            platform.deployer.stop_all()
        return samples


def _floor_once(registry, backends, settings, slug: str, plan: str) -> dict[str, float]:
    request = TenantRequest.parse(
        {
            "slug": slug,
            "org": "bench",
            "plan": plan,
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "bench", "role": "platform-admin"},
        }
    )
    registry.requests.submit(request)
    ctx = SagaContext(
        registry, backends, settings.domain, str(uuid.uuid4()), emit=lambda event: None
    )
    timings: dict[str, float] = {}
    started = time.perf_counter()
    tenant = phases.validate(ctx, str(request.request_id))
    timings["validate"] = time.perf_counter() - started
    for name, call in (
        ("allocate", phases.allocate),
        ("deploy", phases.deploy),
        ("mark_active", phases.mark_active),
        ("send_welcome_emails", emails.send_welcome_emails),
    ):
        started = time.perf_counter()
        call(ctx, tenant)
        timings[name] = time.perf_counter() - started
    timings["to_active"] = sum(timings[p] for p in PHASES[:4])
    return timings


def stats(name: str, values: list[float]) -> dict[str, object]:
    return {
        "measure": name,
        "p50_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
        "max_s": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--plan", default="team")
    parser.add_argument("--json", default="bench/results/latency.json")
    args = parser.parse_args()

    timelines, cli_s = orchestrated(args.requests, args.plan)
    floors = floor(args.requests, args.plan)
    beyond = [t.to_active_s - t.phases_s["deploy"] for t in timelines]
    rows = [
        stats("request -> active", [t.to_active_s for t in timelines]),
        stats("  beyond the deploy phase (workload start)", beyond),
        stats("  intake (request -> run created)", [t.intake_s for t in timelines]),
        stats("  queue (created -> dequeued)", [t.queue_s for t in timelines]),
        stats("  launch (dequeued -> worker started)", [t.launch_s for t in timelines]),
        *[stats(f"  op {p}", [t.phases_s[p] for t in timelines]) for p in PHASES],
        stats("tenantctl request (CLI wall time)", cli_s),
        stats("floor: phases as plain Python -> active", [f["to_active"] for f in floors]),
        *[stats(f"  floor {p}", [f[p] for f in floors]) for p in PHASES],
    ]
    ratio = statistics.median(t.to_active_s for t in timelines) / statistics.median(
        f["to_active"] for f in floors
    )
    print_table(rows, ["measure", "p50_s", "p95_s", "max_s"])
    print(
        f"orchestrated / floor (p50): {ratio:.1f}x over {args.requests} requests, plan "
        f"{args.plan}; targets: beyond workload start p50 <= 3 s "
        f"({percentile(beyond, 50):.2f}), p95 <= 6 s ({percentile(beyond, 95):.2f})"
    )
    write_json(
        args.json,
        {
            "machine": machine_info(),
            "requests": args.requests,
            "plan": args.plan,
            "rows": rows,
            "ratio_p50": ratio,
            "timelines": [t.__dict__ for t in timelines],
            "floor": floors,
        },
    )


if __name__ == "__main__":
    main()
