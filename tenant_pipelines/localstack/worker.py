"""`tenantctl worker`: one worker host of a platform with several, in the foreground.

It runs the runs of the tenants placed on this host (TENANT_HOST_NAME) and their workloads. A
Celery worker (`runtime.host_worker`) takes the runs the control host's launcher sends to this
host's queue, and nothing else; its processes each execute one run at a time, up to
TENANT_MAX_CONCURRENT_RUNS at once. At its start it brings back the workloads of this host's
active tenants, and only those; at its stop it stops them, as `tenantctl up` does on one host.
Beside the Celery worker it keeps this host's ingress (a Caddy on the host's address in
TENANT_WORKER_HOSTS: `localstack.gateway.ingress_plan_for`), through which the control host's
edge reaches this host's tenants.

One worker per host name: it holds an advisory lock on the name in the Dagster instance's
database, so a second `tenantctl worker` under the same name, on any machine, is refused naming
the first (two would share the host's queue and settle each other's runs).

The control host's `tenantctl up` does not touch what lives here: it restores no workload and
settles no run of this host. A run whose Celery process dies is noticed by the control host's
daemon (the run monitor reads the task's state at the broker), which marks it failed; its run
retries re-execute it, on this host again.

A stop is a crash for the runs in flight, as `up`'s is: the Celery processes that execute runs
are killed outright first, so no interrupt turns a run into a failure to compensate. Before each
start of the Celery worker (the first, and a restart after it died), the runs of this host whose
worker process is gone are marked failed, and run retries run them again here: nothing else would
notice them, since their task's state at the broker still says "started".
"""

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from resources.gateway import write_plan
from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.localstack import gateway, isolation, leftovers, platform_lock
from tenant_pipelines.localstack.broker import check_broker, node_name, wait_consuming
from tenant_pipelines.localstack.supervisor import ChildSpec, StackError, Supervisor
from tenant_pipelines.localstack.up import WorkloadControl, check_data_dir, named
from tenant_pipelines.runtime.warm_workers import MAX_RUNS_PER_WORKER
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.procs import descendants

APP_MODULE = "tenant_pipelines.runtime.host_worker"
READY_TIMEOUT_S = 60.0


def check_worker_settings(settings: Settings) -> None:
    if not settings.worker_hosts:
        raise StackError(
            "tenantctl worker runs one of several hosts: set TENANT_WORKER_HOSTS (with"
            " DAGSTER_PG_URL and TENANT_CELERY_BROKER) as on the control host"
        )
    if settings.host_name not in settings.worker_hosts:
        raise StackError(
            f"this host's name {settings.host_name!r} (TENANT_HOST_NAME) is not one of"
            f" TENANT_WORKER_HOSTS ({', '.join(settings.worker_hosts)})"
        )


def celery_argv(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "--app",
        APP_MODULE,
        "worker",
        "--queues",
        settings.host_name,
        "--hostname",
        node_name(settings),
        "--concurrency",
        str(settings.max_concurrent_runs),
        "--prefetch-multiplier",
        "1",
        "--max-tasks-per-child",
        str(MAX_RUNS_PER_WORKER),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def _settle_orphaned_runs(settings: Settings, say: Callable[[str], None]) -> None:
    """Before every start of the Celery worker: what the last one left running is stopped (its
    processes die with it, but not at once; they are no longer below this process), then the
    runs it left in flight end, so that run retries run them again here."""
    from tenant_pipelines.orchestration.instance import open_instance
    from tenant_pipelines.orchestration.recovery import settle_orphaned_runs

    # This host's ingress, a live child of ours, stays; a dead worker's processes are no longer.
    leftovers.kill_marked(str(settings.data_dir), spare=descendants([os.getpid()]))
    try:
        instance = open_instance(settings.dagster_home, settings)
        try:
            settled = settle_orphaned_runs(instance, settings.host_name)
        finally:
            instance.dispose()
    except Exception as error:  # the database may be away: the Celery worker starts regardless
        # Our errors name the database, never its password; others are named by their type.
        reason = str(error) if isinstance(error, TenantPipelinesError) else type(error).__name__
        say(f"the runs the last Celery worker left could not be settled now: {reason}")
        return
    if settled:
        say(f"{len(settled)} run(s) whose worker process died will be run again")


def _ingress_spec(settings: Settings) -> ChildSpec:
    """This host's ingress: the control host's edge relays its tenants' requests through it."""
    plan = gateway.ingress_plan_for(settings)
    write_plan(settings.data_dir, plan)  # this host's runs keep its markers by it
    caddy = gateway.caddy_binary(settings.caddy)
    gateway.caddy_version(caddy)
    return gateway.child_spec(settings, plan, caddy, named(settings.child_env(), "ingress"))


def _kill_run_processes(roots: list[int]) -> None:
    """SIGKILL the Celery processes below `roots` (those that execute runs), never a tenant
    workload a run started: workloads are stopped by `WorkloadControl.stop_all`."""
    for pid, cmdline in descendants(roots).items():
        if "celery" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_worker(
    settings: Settings, workloads: WorkloadControl, say: Callable[[str], None], init: bool = False
) -> int:
    check_worker_settings(settings)
    check_data_dir(settings, init)
    locks = platform_lock.hold(settings.data_dir, settings.dagster_home, {})
    host_lock = None
    try:
        killed = leftovers.kill_marked(str(settings.data_dir))
        if killed:
            say(f"stopped {len(killed)} process(es) left by a previous tenantctl worker")
        isolation.prepare(settings, say)
        check_broker(settings)
        if settings.dagster_pg_url is None:  # Settings refuse worker hosts without it
            raise StackError("TENANT_WORKER_HOSTS needs DAGSTER_PG_URL")
        host_lock = platform_lock.hold_host_name(settings.dagster_pg_url, settings.host_name)
        from tenant_pipelines.orchestration.instance import ensure_dagster_home

        ensure_dagster_home(settings.dagster_home, settings)
        log_dir = settings.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        env = named(settings.child_env(), "run-worker")
        settle = functools.partial(_settle_orphaned_runs, settings, say)
        celery = ChildSpec("celery", celery_argv(settings), env, prepare=settle)
        specs = [_ingress_spec(settings), celery]
        supervisor = Supervisor(specs, log_dir, str(settings.data_dir), say)
        return _supervise(settings, supervisor, workloads, say)
    finally:
        if host_lock is not None:
            host_lock.close()
        for fd in locks:
            os.close(fd)


def _supervise(
    settings: Settings,
    supervisor: Supervisor,
    workloads: WorkloadControl,
    say: Callable[[str], None],
) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        restored = workloads.restore()
        supervisor.start_all()
        deadline = time.monotonic() + READY_TIMEOUT_S
        supervisor.wait_ready("ingress", deadline)
        wait_consuming(settings, deadline, stop)
        say(
            f"worker host {settings.host_name} is up: it runs the runs of its tenants"
            f" ({len(restored)} active tenant workload(s) restored). Ctrl-C stops it."
        )
        with _orphan_watch(settings, say) as watch:
            supervisor.run(lambda timeout: stop.wait(timeout) or watch(time.monotonic()))
        return 0
    finally:
        supervisor.stop(_kill_run_processes)
        workloads.stop_all()


@contextlib.contextmanager
def _orphan_watch(
    settings: Settings, say: Callable[[str], None]
) -> Iterator[Callable[[float], bool]]:
    """A check, between the supervisor's polls, for runs of this host whose process died
    unnoticed (`recovery.OrphanWatch`); it never stops the worker (False)."""
    from tenant_pipelines.orchestration.instance import open_instance
    from tenant_pipelines.orchestration.recovery import OrphanWatch

    instance = open_instance(settings.dagster_home, settings)
    watch = OrphanWatch(instance, settings.host_name)
    failing: list[str] = []  # said once per streak of failed checks

    def tick(now: float) -> bool:
        try:
            ended = watch.tick(now)
        except Exception as error:  # the database may be away for a while: checked again later
            if not failing:
                failing.append(type(error).__name__)
                say(f"could not look for runs whose worker process died: {failing[0]}")
            return False
        failing.clear()
        if ended:
            say(f"{len(ended)} run(s) whose worker process died will be run again")
        return False

    try:
        yield tick
    finally:
        instance.dispose()
