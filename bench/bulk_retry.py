"""Bulk retry at scale: tenants failed by an upstream outage, retried in one batch once it ends,
against the same number of fresh submissions, with the product's defaults.

    python -m bench.bulk_retry --requests 200 --rounds 3

Each round starts a fresh `tenantctl up` (with an empty fault plan) and issues a token, then:
1. **fresh**: N requests (free and team, alternating) from 16 client threads; the clock starts
   just before the first POST and stops at the first `GET /v1/tenants?slug_prefix=...` (polled
   every 0.5 s) that lists all N `active`.
2. **outage**: the fault plan makes Deploy fail for good for N more requests, submitted the same
   way; each fails and is compensated (not timed).
3. **batch**: the outage ends (the rule is dropped); one `POST /v1/batches` retries every failed
   tenant (`filter: {state: failed}`, the count confirmed). The clock starts just before that
   POST and stops when the same kind of poll lists all N `active`.
Fresh runs first, on the smaller registry, so the ratio batch / fresh errs against the batch.
After each round: every tenant active, `tenantctl inventory` clean, and every tenant's welcome
emails sent exactly once each (three `tenant.email.sent` events per tenant in the feed).
"""

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.burst import CLIENTS, POLL_S, TIMEOUT_S, post
from bench.common import machine_info, print_table, write_json
from tests.stack_helpers import Stack, local_stack, write_fault_plan

PLANS = ("free", "team")
TARGET_RATIO = 1.5
EMAILS_PER_TENANT = 3


def submit_all(stack: Stack, token: str, slugs: list[str]) -> None:
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(post, stack, token, slug, PLANS[i % len(PLANS)])
            for i, slug in enumerate(slugs)
        ]
        for future in futures:
            future.result()


def wait_states(stack: Stack, token: str, prefix: str, count: int, state: str) -> float:
    """Poll until `count` tenants whose slugs start with `prefix` are all in `state`; when."""
    deadline = time.perf_counter() + TIMEOUT_S
    while time.perf_counter() < deadline:
        rows = stack.api("GET", f"/v1/tenants?slug_prefix={prefix}", token).json()
        if len(rows) == count and all(row["state"] == state for row in rows):
            return time.perf_counter()
        time.sleep(POLL_S)
    raise RuntimeError(f"not all {count} tenants {prefix}* became {state} in {TIMEOUT_S} s")


def wait_compensated(stack: Stack, token: str, prefix: str, count: int) -> None:
    deadline = time.perf_counter() + TIMEOUT_S
    kind = "tenant.provisioning.compensation_finished"
    while time.perf_counter() < deadline:
        events = stack.api("GET", f"/v1/events?type={kind}", token).json()
        if len({e["tenant"] for e in events if e["tenant"].startswith(prefix)}) == count:
            return
        time.sleep(POLL_S)
    raise RuntimeError(f"the compensations of {prefix}* did not all finish")


def checks(stack: Stack, token: str, slugs: list[str]) -> dict[str, Any]:
    """Inventory clean; every tenant's welcome emails sent once each."""
    inventory = json.loads(stack.cli("inventory", "--json", check=False).stdout)
    problems = [] if inventory["clean"] else inventory["findings"] or inventory["unreadable"]
    sent = Counter(
        event["tenant"]
        for event in stack.api("GET", "/v1/events?type=tenant.email.sent", token).json()
    )
    twice = sorted(slug for slug in slugs if sent[slug] > EMAILS_PER_TENANT)
    missing = sorted(slug for slug in slugs if sent[slug] < EMAILS_PER_TENANT)
    return {"inventory_problems": problems, "emails_twice": twice, "emails_missing": missing}


def one_round(requests_n: int, round_no: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        local_stack(Path(tmp), TENANT_FAULT_PLAN=str(Path(tmp) / "faults.json")) as stack,
    ):
        plan = Path(tmp) / "faults.json"
        write_fault_plan(plan, [])
        stack.start()
        token = stack.token("platform-admin", subject="bulk-bench")
        fresh = [f"f{round_no}n{i:03d}" for i in range(requests_n)]
        failed = [f"o{round_no}n{i:03d}" for i in range(requests_n)]

        started = time.perf_counter()
        submit_all(stack, token, fresh)
        fresh_s = wait_states(stack, token, f"f{round_no}n", requests_n, "active") - started

        outage = [{"phase": "deploy", "tenant": f"o{round_no}n*", "mode": "permanent"}]
        write_fault_plan(plan, outage)
        submit_all(stack, token, failed)
        wait_states(stack, token, f"o{round_no}n", requests_n, "failed")
        wait_compensated(stack, token, f"o{round_no}n", requests_n)
        write_fault_plan(plan, [])  # the outage ends

        body = {"action": "retry", "filter": {"state": "failed"}, "expect": requests_n}
        started = time.perf_counter()
        answer = stack.api("POST", "/v1/batches", token, body)
        assert answer.status_code == 202, answer.text
        batch_s = wait_states(stack, token, f"o{round_no}n", requests_n, "active") - started
        found = checks(stack, token, fresh + failed)
        stack.stop()
    return {"fresh_s": fresh_s, "batch_s": batch_s, "ratio": batch_s / fresh_s, **found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="bench/results/bulk-retry.json")
    args = parser.parse_args()
    rounds = [one_round(args.requests, n) for n in range(1, args.rounds + 1)]
    print_table(rounds, ["fresh_s", "batch_s", "ratio", "emails_twice", "inventory_problems"])
    ratios = [r["ratio"] for r in rounds]
    print(
        f"{args.requests} fresh vs {args.requests} retried in one batch, {args.rounds} rounds: "
        f"fresh {statistics.median(r['fresh_s'] for r in rounds):.1f} s, "
        f"batch {statistics.median(r['batch_s'] for r in rounds):.1f} s, "
        f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}); "
        f"target <= {TARGET_RATIO}"
    )
    clean = all(
        not (r["inventory_problems"] or r["emails_twice"] or r["emails_missing"]) for r in rounds
    )
    print("inventory clean, every email sent once:", "yes" if clean else "NO")
    write_json(args.json, {"machine": machine_info(), "rounds": rounds})


if __name__ == "__main__":
    main()
