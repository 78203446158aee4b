"""How fast failures are handled under `tenantctl up`: a permanent failure to its compensation
(start and end), and a killed run worker to the resumed run.

    python -m bench.compensation [--samples 5] [--backend sqlite|postgres|hosts]
                                 [--json bench/results/compensation.json]

`--backend hosts` runs the platform with two worker hosts (bench/postgres.py): the killed run
worker is then a Celery process of the tenant's host, and its run resumes there.
"""

import argparse
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from unittest.mock import patch

from dagster import DagsterEventType, DagsterInstance

from bench.common import machine_info, percentile, print_table, write_json
from bench.variants import Variant, variant_env
from tenant_pipelines.orchestration.feed import read_events
from tests.e2e.matrix_helpers import kill_run_worker, runs_of, wait_for_step_start
from tests.stack_helpers import Stack, local_stack, write_fault_plan
from tests.worker_hosts import worker_hosts

TIMEOUT_S = 120


def submit(stack: Stack, slug: str) -> None:
    stack.cli(
        "request",
        "--slug",
        slug,
        "--org",
        "bench",
        "--plan",
        "team",
        "--admin-email",
        f"admin@{slug}.example.com",
        "--caller",
        "bench",
        "--role",
        "platform-admin",
    )


def event_time(instance: DagsterInstance, slug: str, event_type: str) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        events, _ = read_events(instance, tenant=slug, type_glob=event_type)
        if events:
            return datetime.fromisoformat(events[0].at).timestamp()
        time.sleep(0.1)
    raise RuntimeError(f"{slug}: no {event_type} within {TIMEOUT_S} s")


def run_marks(instance: DagsterInstance, run_id: str) -> tuple[float, float]:
    """(worker started, run ended) timestamps of a run."""
    start = end = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.event_type == DagsterEventType.RUN_START:
            start = entry.timestamp
        if event and event.event_type in (
            DagsterEventType.RUN_SUCCESS,
            DagsterEventType.RUN_FAILURE,
        ):
            end = entry.timestamp
    assert start is not None and end is not None, run_id
    return start, end


def compensation_sample(stack: Stack, instance: DagsterInstance, slug: str) -> dict[str, float]:
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": slug, "mode": "permanent"}])
    submit(stack, slug)
    failed_at = event_time(instance, slug, "tenant.provisioning.failed")
    event_time(instance, slug, "tenant.provisioning.compensation_finished")
    (run,) = runs_of(instance, slug, "compensate_tenant")
    deadline = time.monotonic() + TIMEOUT_S
    while not instance.get_run_by_id(run.run_id).is_finished:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"compensation run {run.run_id} never ended"
        time.sleep(0.1)
    start, end = run_marks(instance, run.run_id)
    first_release = event_time(instance, slug, "tenant.provisioning.compensated")
    return {
        "to_compensation_start_s": start - failed_at,
        "to_first_release_s": first_release - failed_at,
        "to_compensation_end_s": end - failed_at,
    }


def resume_sample(stack: Stack, instance: DagsterInstance, slug: str) -> dict[str, float]:
    assert stack.fault_plan is not None
    write_fault_plan(
        stack.fault_plan, [{"phase": "deploy", "tenant": slug, "mode": "hang", "times": 1}]
    )
    submit(stack, slug)
    run = wait_for_step_start(instance, slug, "deploy")
    time.sleep(0.5)
    killed_at = time.time()
    kill_run_worker(instance, run)
    resumed_at = event_time(instance, slug, "tenant.provisioning.resumed")
    active_at = event_time(instance, slug, "tenant.provisioning.completed")
    return {"to_resumed_s": resumed_at - killed_at, "to_active_s": active_at - killed_at}


def summarize(name: str, samples: list[dict[str, float]]) -> list[dict[str, object]]:
    return [
        {
            "measure": f"{name}: {key}",
            "p50_s": percentile([s[key] for s in samples], 50),
            "max_s": max(s[key] for s in samples),
        }
        for key in samples[0]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres", "hosts"])
    parser.add_argument("--json", default="bench/results/compensation.json")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        variant_env(Variant(args.backend)) as env,
    ):
        plan = Path(tmp) / "faults.json"
        write_fault_plan(plan, [])
        with local_stack(Path(tmp), TENANT_FAULT_PLAN=str(plan), **env) as stack:
            stack.fault_plan = plan
            stack.start()
            with (
                worker_hosts(stack.env, Path(tmp)),
                patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("DAGSTER_")}),
            ):
                instance = stack.instance()  # its dagster.yaml reads DAGSTER_PG_URL from here
                compensations = [
                    compensation_sample(stack, instance, f"comp{i}") for i in range(args.samples)
                ]
                resumes = [resume_sample(stack, instance, f"kill{i}") for i in range(args.samples)]
                instance.dispose()
            stack.stop()
    rows = summarize("permanent failure", compensations) + summarize("killed worker", resumes)
    print_table(rows, ["measure", "p50_s", "max_s"])
    met = max(s["to_compensation_start_s"] for s in compensations) <= 5
    print(f"target (compensation started within 5 s of the failure): {'met' if met else 'missed'}")
    write_json(
        args.json,
        {"machine": machine_info(), "compensation": compensations, "resume": resumes, "rows": rows},
    )


if __name__ == "__main__":
    main()
