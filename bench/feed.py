"""bench/feed: one tenant's audit feed when the instance holds N tenants' events.

Fills a fresh Dagster instance (SQLite and/or PostgreSQL) with each tenant's provisioning events
inside a run of its own, stored as the very records `context.log_event(to_observation(...))`
writes (each made from the record a real run stored for the same op), then times
`audit.read_events(instance, tenant=...)`, the query `tenantctl audit --tenant` makes, on the
instance as `audit.feed_instance` prepares it for the CLI. Target: p95 within 20 ms among 10,000
tenants. On PostgreSQL it also times the feed on Dagster's default engine, which opens a new
connection per statement: the figure before `feed_instance`.

    python -m bench.feed [--tenants 10000] [--events-per-tenant 8] [--queries 200]
                         [--storage sqlite|postgres|both] [--pg-url URL] [--json PATH]
    CI smoke size:  python -m bench.feed --tenants 50 --queries 20
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import secrets
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    EventLogEntry,
    OpDefinition,
    OpExecutionContext,
    job,
    op,
    serialize_value,
)
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.engine import URL, make_url

from bench.common import machine_info, percentile, print_table, write_json
from tenant_pipelines.domain.events import AuditEvent, make_event
from tenant_pipelines.orchestration.feed import (
    AUDIT_ASSET,
    WEBSERVER_POOL,
    feed_instance,
    read_events,
    to_observation,
)
from tenant_pipelines.runtime.dagster_private import SqlEventLogStorageTable as EVENT_LOGS
from tenant_pipelines.runtime.dagster_private import (
    SqliteEventLogStorage,
    event_row,
    index_asset_event,
    index_asset_event_tags,
)

TARGET_P95_MS = 20.0
WARMUP_QUERIES = 5
WRITER_THREADS = 4  # add_run and shard writes wait on fsync/round trips: 4 threads ~2x
BATCH_EVENTS = 2_000  # rows per INSERT: 7 columns x 2,000 stays under SQLite's 32,766 variables
JOB_NAME = "provision_tenant"  # tenant_pipelines.jobs.PROVISION_JOB, without importing the ops
GLOB = "tenant.provisioning.*"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_JSON = "bench/results/feed.json"
REFERENCE_SLUG = "bench-reference"
REFERENCE_AT = "2026-01-01T00:00:00+00:00"

# A provisioning run's feed, in the order the ops emit it: (event type, op that emits it).
PROVISIONING = [
    ("tenant.provisioning.started", "validate"),
    ("tenant.provisioning.step_completed", "validate"),
    ("tenant.provisioning.step_completed", "allocate"),
    ("tenant.provisioning.step_completed", "deploy"),
    ("tenant.provisioning.step_completed", "mark_active"),
    ("tenant.provisioning.completed", "mark_active"),
    ("tenant.email.sent", "send_welcome_emails"),
    ("tenant.provisioning.step_completed", "send_welcome_emails"),
]


def feed_plan(k: int) -> list[tuple[str, str]]:
    """K events: a provisioning run's, cut short or with more emails before the last step."""
    if k <= len(PROVISIONING):
        return PROVISIONING[:k]
    extra = [("tenant.email.sent", "send_welcome_emails")] * (k - len(PROVISIONING))
    return PROVISIONING[:-1] + extra + PROVISIONING[-1:]


def _details(event_type: str, slug: str, index: int) -> dict[str, Any]:
    if event_type == "tenant.provisioning.started":
        return {"request_id": f"req-{slug}", "plan": "starter", "requested_by": f"admin@{slug}"}
    if event_type == "tenant.provisioning.completed":
        return {"url": f"https://{slug}.example.test", "message": "Tenant activated"}
    if event_type == "tenant.email.sent":
        return {"kind": "welcome", "to": f"admin@{slug}", "attempts": 1, "provider_id": f"p{index}"}
    return {}


def observation_entry(
    template: EventLogEntry, event: AuditEvent, timestamp: float
) -> EventLogEntry:
    """The record `context.log_event(to_observation(event))` stores, made from `template`: what
    a real run stored for the same op (`reference_records`), with this event's run, time and
    observation."""
    stored = template.dagster_event
    if stored is None or stored.event_specific_data is None:
        raise AssertionError(f"not an observation: {template!r}")
    return template._replace(
        run_id=event.run_id,
        timestamp=timestamp,
        dagster_event=stored._replace(
            event_specific_data=stored.event_specific_data._replace(
                asset_observation=to_observation(event)
            ),
            logging_tags={**stored.logging_tags, "run_id": event.run_id},
        ),
    )


@dataclass(frozen=True)
class TenantRun:
    slug: str
    run: DagsterRun
    entries: list[EventLogEntry]


def tenant_run(
    index: int, plan: list[tuple[str, str]], started: float, templates: dict[str, EventLogEntry]
) -> TenantRun:
    slug, org = f"tenant-{index:05d}", f"org-{index % 500:03d}"
    run = DagsterRun(
        job_name=JOB_NAME,
        run_id=str(uuid.uuid4()),
        run_config={"ops": {"validate": {"config": {"slug": slug, "org": org, "plan": "starter"}}}},
        status=DagsterRunStatus.SUCCESS,
        tags={"tenant": slug, "org": org, "plan": "starter", "request_id": f"req-{slug}"},
    )
    entries = []
    for i, (event_type, step) in enumerate(plan):
        at = started + i * 2.0
        event = make_event(
            event_type,
            tenant=slug,
            org=org,
            run_id=run.run_id,
            step=step,
            details=_details(event_type, slug, i),
        )
        event = replace(event, at=datetime.fromtimestamp(at, UTC).isoformat())
        entries.append(observation_entry(templates[step], event, at))
    return TenantRun(slug, run, entries)


STEPS = sorted({step for _, step in PROVISIONING})  # the ops of a provisioning run's feed


def _reference_event(run_id: str, step: str) -> AuditEvent:
    event = make_event(
        "tenant.provisioning.started",
        tenant=REFERENCE_SLUG,
        org="org-ref",
        run_id=run_id,
        step=step,
        details={"request_id": "req-ref", "url": "https://ref.example.test"},
    )
    return replace(event, at=REFERENCE_AT)


def _logging_op(step: str) -> OpDefinition:
    @op(name=step)
    def log_reference(context: OpExecutionContext) -> None:
        context.log_event(to_observation(_reference_event(context.run_id, step)))

    return log_reference


@job(name=JOB_NAME)
def _reference_job() -> None:
    for step in STEPS:
        _logging_op(step)()


def reference_records(instance: DagsterInstance) -> dict[str, EventLogEntry]:
    """Run a real job whose ops (one per step of the feed) each log an audit event; the records
    they stored, by step, from which every tenant's records are made. Checked: remade from its
    template, each reference record is itself again, and no remade record names the reference
    run."""
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    run_id = _reference_job.execute_in_process(run_config=quiet, instance=instance).run_id
    # Dagster leaves SIGTERM mapped to SIGINT's handler, ignored in a background job.
    signal.signal(signal.SIGTERM, on_sigterm)
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=AUDIT_ASSET, asset_partitions=[REFERENCE_SLUG]), limit=20
    ).records
    templates = {
        record.event_log_entry.step_key or "": record.event_log_entry for record in records
    }
    if sorted(templates) != STEPS:
        raise AssertionError(f"the reference run stored observations of {sorted(templates)}")
    for step, stored in templates.items():
        again = observation_entry(stored, _reference_event(run_id, step), stored.timestamp)
        other = observation_entry(stored, _reference_event(str(uuid.uuid4()), step), 0.0)
        if again != stored or run_id in serialize_value(other):
            raise AssertionError(f"the record of {step} is not made from its template alone")
    return templates


class EventWriter:
    """Writes batches of tenants' runs and events with the storage's own statements: one
    transaction per batch, and on SQLite (no batch write there) one per run shard too."""

    def __init__(self, instance: DagsterInstance, scratch: Path, pool: Executor) -> None:
        self.instance = instance
        self.storage = instance.event_log_storage
        self.pool = pool
        self.runs_s = 0.0
        self.events_s = 0.0
        self.shard_template: Path | None = None
        if isinstance(self.storage, SqliteEventLogStorage):
            # A run shard as the storage creates it (schema, WAL, alembic stamp): creating each
            # of 10,000 shards through alembic would cost ~0.15 s apiece.
            template = SqliteEventLogStorage(str(scratch / "shard-template"))
            with template.run_connection("template"):
                pass
            template.dispose()
            self.shard_template = Path(template.path_for_shard("template"))

    def write(self, batch: Sequence[TenantRun]) -> None:
        began = time.perf_counter()
        list(self.pool.map(self.instance.add_run, [tenant.run for tenant in batch]))
        runs_done = time.perf_counter()
        entries = [entry for tenant in batch for entry in tenant.entries]
        if isinstance(self.storage, SqliteEventLogStorage):
            self._write_sqlite(self.storage, batch, entries)
        else:
            self.storage.store_event_batch(entries)
        self.runs_s += runs_done - began
        self.events_s += time.perf_counter() - runs_done

    def _write_sqlite(
        self,
        storage: SqliteEventLogStorage,
        batch: Sequence[TenantRun],
        entries: list[EventLogEntry],
    ) -> None:
        # The rows SqliteEventLogStorage.store_event inserts, serialized once for both shards.
        rows = [[event_row(storage, entry) for entry in tenant.entries] for tenant in batch]

        def write_shard(tenant: TenantRun, tenant_rows: list[dict[str, Any]]) -> None:
            run_id = tenant.run.run_id
            shutil.copyfile(str(self.shard_template), storage.path_for_shard(run_id))
            engine = create_engine(storage.conn_string_for_shard(run_id), poolclass=NullPool)
            with engine.begin() as conn:
                conn.execute(EVENT_LOGS.insert().values(tenant_rows))
            engine.dispose()

        list(self.pool.map(write_shard, batch, rows))
        # What store_event mirrors into the index shard (asset events), once per batch.
        with storage.index_transaction() as conn:
            insert = EVENT_LOGS.insert().values(
                [row for tenant_rows in rows for row in tenant_rows]
            )
            ids = sorted(row[0] for row in conn.execute(insert.returning(EVENT_LOGS.c.id)))
            index_asset_event_tags(storage, conn, entries, ids)
            index_asset_event(storage, conn, entries[-1], ids[-1])


@dataclass(frozen=True)
class Populated:
    slugs: list[str]
    seconds: float
    runs_s: float  # add_run
    events_s: float  # event log writes


def populate(
    instance: DagsterInstance,
    scratch: Path,
    tenants: int,
    k: int,
    templates: dict[str, EventLogEntry],
) -> Populated:
    began = time.perf_counter()
    plan = feed_plan(k)
    per_batch = max(1, BATCH_EVENTS // k)
    start = time.time() - tenants * 60.0
    slugs: list[str] = []
    with ThreadPoolExecutor(WRITER_THREADS) as pool:
        writer = EventWriter(instance, scratch, pool)
        for first in range(0, tenants, per_batch):
            batch = [
                tenant_run(i, plan, start + i * 60.0, templates)
                for i in range(first, min(first + per_batch, tenants))
            ]
            writer.write(batch)
            slugs.extend(tenant.slug for tenant in batch)
    return Populated(slugs, time.perf_counter() - began, writer.runs_s, writer.events_s)


def analyze(url: URL) -> None:
    """Refresh PostgreSQL's planner statistics, as autovacuum does on a live server (this CI one
    runs with autovacuum off). Without them, at 2,000 tenants the planner read the feed through
    idx_events_by_asset, filtering all tenants' observations (11 ms) instead of the partition
    index (0.07 ms)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def check_feed(instance: DagsterInstance, slug: str, plan: list[tuple[str, str]]) -> None:
    events, _ = read_events(instance, tenant=slug)
    run_ids = {event.run_id for event in events}
    if [e.type for e in events] != [t for t, _ in plan] or len(run_ids) != 1:
        raise AssertionError(f"{slug}: read back {[e.type for e in events]} in runs {run_ids}")
    run = instance.get_run_by_id(run_ids.pop())
    if run is None or run.tags.get("tenant") != slug:
        raise AssertionError(f"{slug}: its events are not in a run of its own")


def time_queries(
    query: Callable[[str], int], slugs: list[str], queries: int, rng: random.Random
) -> dict[str, Any]:
    for slug in rng.choices(slugs, k=WARMUP_QUERIES):
        query(slug)
    durations: list[float] = []
    counts: set[int] = set()
    for slug in rng.choices(slugs, k=queries):
        began = time.perf_counter()
        counts.add(query(slug))
        durations.append((time.perf_counter() - began) * 1000)
    p95 = percentile(durations, 95)
    return {
        "p50_ms": percentile(durations, 50),
        "p95_ms": p95,
        "max_ms": max(durations),
        "mean_ms": sum(durations) / len(durations),
        "returned": "/".join(str(c) for c in sorted(counts)),
        "target_met": p95 <= TARGET_P95_MS,
    }


def feed_query(instance: DagsterInstance, type_glob: str | None) -> Callable[[str], int]:
    def query(slug: str) -> int:
        events, _ = read_events(instance, tenant=slug, type_glob=type_glob)
        if any(event.tenant != slug for event in events):
            raise AssertionError(f"feed of {slug} holds another tenant's events")
        return len(events)

    return query


@contextmanager
def sqlite_instance() -> Iterator[tuple[DagsterInstance, Path, None]]:
    with tempfile.TemporaryDirectory(prefix="bench-feed-sqlite-") as home:
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        instance = DagsterInstance.from_config(home)
        try:
            yield instance, Path(home), None
        finally:
            instance.dispose()


@contextmanager
def postgres_instance(pg_url: str) -> Iterator[tuple[DagsterInstance, Path, URL]]:
    """A fresh database for this run, dropped afterwards whatever happens."""
    admin_url = make_url(pg_url).set(drivername="postgresql+psycopg2")
    db_name = f"bench_feed_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-feed-pg-") as home:
            db_url = admin_url.set(database=db_name)
            url = db_url.render_as_string(hide_password=False)
            Path(home, "dagster.yaml").write_text(
                f"storage:\n  postgres:\n    postgres_url: {json.dumps(url)}\n"
                "telemetry:\n  enabled: false\n"
            )
            instance = DagsterInstance.from_config(home)
            try:
                yield instance, Path(home), db_url
            finally:
                instance.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


def profile_top(query: Callable[[str], int], slugs: list[str], rng: random.Random) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for slug in rng.choices(slugs, k=50):
        query(slug)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return out.getvalue()


def measure(
    label: str,
    instance: DagsterInstance,
    type_glob: str | None,
    args: argparse.Namespace,
    slugs: list[str],
) -> dict[str, Any]:
    query = feed_query(instance, type_glob)
    load_before = os.getloadavg()[0]
    stats = time_queries(query, slugs, args.queries, random.Random(args.seed))
    # Other processes on the machine skew latencies: keep the load beside each result.
    stats["load_1m"] = max(load_before, os.getloadavg()[0])
    if args.profile:
        print(f"--- {label}: cProfile of 50 queries ---")
        print(profile_top(query, slugs, random.Random(args.seed)))
    return {"query": label, **stats}


def bench_storage(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    opened = sqlite_instance() if kind == "sqlite" else postgres_instance(args.pg_url)
    with opened as (instance, home, db_url):
        templates = reference_records(instance)
        filled = populate(instance, home, args.tenants, args.events_per_tenant, templates)
        slugs, plan = filled.slugs, feed_plan(args.events_per_tenant)
        for slug in {slugs[0], slugs[-1], random.Random(1).choice(slugs)}:
            check_feed(instance, slug, plan)
        if db_url is not None and not args.no_analyze:
            analyze(db_url)
        reader = feed_instance(instance)  # as `tenantctl audit` reads
        rows = [
            measure("tenant", reader, None, args, slugs),
            measure(f"tenant + {GLOB}", reader, GLOB, args, slugs),
        ]
        if kind == "postgres":
            # Dagster's default engine, on an instance of its own; measured last, so that a
            # warmer cache could only favour it.
            with DagsterInstance.from_config(str(home)) as default:
                rows.append(
                    measure("tenant, new connection per statement", default, None, args, slugs)
                )
        common = {
            "storage": kind,
            "tenants": args.tenants,
            "events": args.tenants * args.events_per_tenant,
            "populate_s": filled.seconds,
            "populate_runs_s": filled.runs_s,
            "populate_events_s": filled.events_s,
        }
        return [{**common, **row} for row in rows]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.feed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--events-per-tenant", type=int, default=len(PROVISIONING))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--storage", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--json", default=DEFAULT_JSON)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-analyze", action="store_true", help="query PostgreSQL without planner statistics"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the queries")
    args = parser.parse_args(argv)
    if args.tenants < 1 or args.events_per_tenant < 1 or args.queries < 1:
        parser.error("--tenants, --events-per-tenant and --queries must be positive")
    return args


COLUMNS = ["storage", "query", "tenants", "events", "populate_s", "p50_ms", "p95_ms", "max_ms"]
COLUMNS += ["returned", "target_met", "load_1m"]


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: temp dirs, the database


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    kinds = ["sqlite", "postgres"] if args.storage == "both" else [args.storage]
    rows = [row for kind in kinds for row in bench_storage(kind, args)]
    print_table(rows, COLUMNS)
    params = {k: v for k, v in vars(args).items() if k != "pg_url"}
    payload = {
        "benchmark": "feed",
        "target_p95_ms": TARGET_P95_MS,
        "params": params,
        "feed_pool": WEBSERVER_POOL,  # what audit.feed_instance sets on PostgreSQL
    }
    path = write_json(args.json, {**payload, "machine": machine_info(), "results": rows})
    print(f"target: p95 <= {TARGET_P95_MS:.0f} ms; results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
