"""The platform's Prometheus metrics: their names, labels and buckets, and how every process
shares them.

Run workers are processes of their own, so the counters and histograms use prometheus-client's
multiprocess mode: each process writes its values to files in one directory
(`PROMETHEUS_MULTIPROC_DIR`: `tenantctl up` makes one of its own in memory and removes it at its
stop, `localstack.up.metrics_dir`), and the API server's `/metrics` sums them. The variable must
be set before this module is first imported, which is why the stack sets it in the environment
of every process it starts. Without it (a test, a one-off command), values stay in the process
that recorded them.

Names follow Prometheus' conventions: the `tenant_` prefix, seconds, counters ending in
`_total`. No label carries a tenant id, slug or email: labels are plans, phases, kinds, outcomes,
doors and route templates, so the number of series stays fixed whatever the number of tenants.
What each metric answers is in README "Metrics and alerts".
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From a tenth of a second (an idle platform activates a tenant in about 0.35 s) to the largest
# plan's whole-run bound, fine enough that a median read from the buckets is within a few percent.
LATENCY_BUCKETS = (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600, 900,
)  # fmt: skip
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Door(StrEnum):
    """Who started a retry or a decommission."""

    API = "api"
    CONSOLE = "console"
    CLI = "cli"
    DAGSTER_UI = "dagster_ui"


class FailureKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"


REQUESTS_SUBMITTED = Counter(
    "tenant_requests_submitted_total", "Tenant requests accepted, every door", ["plan"]
)
SUBMIT_TO_ACTIVE = Histogram(
    "tenant_submit_to_active_seconds",
    "From a request's record (its submission) to its tenant active",
    ["plan"],
    buckets=LATENCY_BUCKETS,
)
PHASE_DURATION = Histogram(
    "tenant_phase_duration_seconds",
    "Each successful attempt of a provisioning phase",
    ["phase", "plan"],
    buckets=LATENCY_BUCKETS,
)
PHASE_FAILURES = Counter(
    "tenant_phase_failures_total",
    "Failed attempts of a provisioning phase, by kind of error",
    ["phase", "plan", "kind"],
)
PROVISIONINGS_FAILED = Counter(
    "tenant_provisionings_failed_total",
    "Provisionings that failed for good (the tenant failed), by the phase where",
    ["plan", "phase"],
)
COMPENSATIONS = Counter(
    "tenant_compensations_total", "Compensations that finished: the tenant's resources released"
)
COMPENSATIONS_GIVEN_UP = Counter(
    "tenant_compensations_given_up_total",
    "Compensations that gave up after their attempts: a resource would not release",
)
RETRIES = Counter("tenant_retries_total", "Retries started, by door", ["started_by"])
DECOMMISSIONS = Counter(
    "tenant_decommissions_total", "Decommissions started, by door", ["started_by"]
)
WELCOME_EMAILS = Counter(
    "tenant_welcome_emails_total", "Welcome emails after the phase, by outcome", ["outcome"]
)
API_REQUEST_DURATION = Histogram(
    "tenant_api_request_duration_seconds",
    "HTTP API and console requests, by route template and status class",
    ["route", "method", "status_class"],
    buckets=API_BUCKETS,
)


@contextmanager
def timed_phase(phase: str, plan: str) -> Iterator[None]:
    """Observe the block's duration as a successful attempt of `phase` (a failed attempt is
    counted by `phase_failed`, not timed)."""
    started = time.perf_counter()
    yield
    PHASE_DURATION.labels(phase=phase, plan=plan).observe(time.perf_counter() - started)


def exposition(*extra: Collector) -> bytes:
    """Every process's values (or this process's, outside multiprocess mode), with `extra`
    collectors read now, in Prometheus' text format."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        for metric in _ALL:
            registry.register(metric)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


_ALL = (
    REQUESTS_SUBMITTED,
    SUBMIT_TO_ACTIVE,
    PHASE_DURATION,
    PHASE_FAILURES,
    PROVISIONINGS_FAILED,
    COMPENSATIONS,
    COMPENSATIONS_GIVEN_UP,
    RETRIES,
    DECOMMISSIONS,
    WELCOME_EMAILS,
    API_REQUEST_DURATION,
)
