"""`tenantctl`: the command line of the control plane.

Errors are one line on stderr. Exit status: 2 invalid input (and a slug already taken);
3 refused because of the tenant's state or another lifecycle operation (retry, decommission,
compensation) already in flight on it; 1 anything else.
"""

import argparse
import dataclasses
import getpass
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from tenant_pipelines.cli import tokens
from tenant_pipelines.cli.platform_api import (
    PlatformApi,
    PlatformRefused,
    PlatformUnreachable,
    running_platform_api,
)
from tenant_pipelines.domain.access import Operator
from tenant_pipelines.domain.errors import (
    OperationInFlight,
    Refused,
    RequestConflict,
    SlugInUse,
    TenantPipelinesError,
)
from tenant_pipelines.domain.states import StatusState, TenantState
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.files import PRIVATE_UMASK

# SQLAlchemy, pydantic and Dagster are imported where a command needs them: each costs a
# command's start hundreds of milliseconds, and `request`, `status` and `list` on a running
# platform need none of them (cli.platform_api).
if TYPE_CHECKING:
    from dagster import DagsterInstance

    from tenant_pipelines.registry.store import TenantRegistry

FOLLOW_POLL_S = 0.5
BATCH_POLL_S = 0.5
# A decommission waits up to 120 s for a compensation in flight before it launches.
LIFECYCLE_TIMEOUT_S = 150
T = TypeVar("T")


class UsageError(Exception):
    """Invalid input: exit status 2."""


def _registry(settings: Settings) -> "TenantRegistry":
    from tenant_pipelines.registry.store import TenantRegistry

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return TenantRegistry.shared(settings.db_url)


def _instance(settings: Settings) -> "DagsterInstance":
    from tenant_pipelines.orchestration.instance import open_instance  # Dagster is slow to import

    return open_instance(settings.dagster_home, settings)


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, sort_keys=True) if args.json else text)


def cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    fields: dict[str, object] = {
        "slug": args.slug,
        "org": args.org,
        "plan": args.plan,
        "admin_email": args.admin_email,
        "requested_by": {"subject": args.caller, "role": args.role},
        # Chosen here, so that a request sent again (to the registry, after the API server
        # did not answer) is the same request, recorded once.
        "request_id": args.request_id or str(uuid.uuid4()),
    }
    data = _on_platform(settings, lambda api: _submit_to(api, fields))
    if data is None:
        data = submit(settings, fields)
    _print(args, data, str(data["request_id"]))
    return 0


def _submit_to(api: PlatformApi, fields: dict[str, object]) -> dict[str, Any]:
    """Recorded and launched by the running platform's API server."""
    try:
        answer: dict[str, Any] = api.call("POST", "/local/requests", fields)
    except PlatformRefused as refused:
        if refused.status in (409, 422):  # the id reused, the slug taken, a field invalid
            raise UsageError(str(refused)) from None
        raise
    return answer


def submit(settings: Settings, fields: dict[str, object]) -> dict[str, Any]:
    """Validate and record a request in the registry; the intake sensor launches its run."""
    from pydantic import ValidationError

    from tenant_pipelines.domain.request import TenantRequest, describe_validation_error
    from tenant_pipelines.service.context import ServiceContext
    from tenant_pipelines.service.ports import NoRuns
    from tenant_pipelines.service.submit import submit as submit_request

    try:
        request = TenantRequest.parse(fields)
    except ValidationError as error:
        raise UsageError(describe_validation_error(error)) from None
    # No launcher: the intake sensor will launch it.
    records_only = ServiceContext(_registry(settings), NoRuns(), hosts=settings.placement_hosts)
    try:
        submission = submit_request(records_only, Operator(request.requested_by.subject), request)
    except (SlugInUse, RequestConflict) as refused:
        raise UsageError(str(refused)) from None
    return submission.to_json()


def _on_platform(settings: Settings, call: Callable[[PlatformApi], T]) -> T | None:
    """What the running platform's API server answers to `call`; None if there is none to ask,
    and the command does the work itself."""
    api = running_platform_api(settings)
    if api is None:
        return None
    try:
        return call(api)
    except PlatformUnreachable:
        return None


def _operator() -> str:
    """Who runs a command on the control-plane host: the platform operator, by login name."""
    return f"operator:{getpass.getuser()}"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    path = f"/local/tenants/{quote(args.slug, safe='')}"
    data = _on_platform(settings, lambda api: api.call("GET", path))
    if data is None:
        data = _status_from_registry(settings, args.slug)
    _print(args, data, status_line(data))
    return 0


def _status_from_registry(settings: Settings, slug: str) -> dict[str, Any]:
    from tenant_pipelines.registry.status import tenant_status

    found = tenant_status(_registry(settings), settings.served_at, slug)
    if found.tenant_id is None and found.state == StatusState.REQUEST_LAUNCHED:
        # Only now is Dagster worth importing: did its run end before making the tenant?
        from tenant_pipelines.orchestration.diagnose import explain_request

        found = explain_request(_instance(settings), found)
    return found.model_dump()


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    query = f"?{urlencode({'state': args.state})}" if args.state else ""
    rows = _on_platform(settings, lambda api: api.call("GET", f"/local/tenants{query}"))
    if rows is None:
        from tenant_pipelines.registry.status import list_statuses

        found = list_statuses(_registry(settings), settings.served_at, args.state)
        rows = [row.model_dump() for row in found]
    text = "\n".join(status_line(row) for row in rows) or "no tenants"
    _print(args, rows, text)
    return 0


def status_line(data: dict[str, Any]) -> str:
    """One tenant as `status` and `list` print it."""
    line = f"{data['slug']:<20} {data['state']:<16} {data['plan']:<10} {data['url']}"
    if data.get("failed_step"):
        line += f"  failed at {data['failed_step']}: {data.get('failure_reason')}"
    return line


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.domain.events import dumps, format_event
    from tenant_pipelines.orchestration import feed

    # Held connections for the one-shot read too: it takes two statements per page.
    instance = feed.feed_instance(_instance(settings))
    show: Callable[[Any], None] = (
        (lambda e: print(dumps(e), flush=True))
        if args.json
        else (lambda e: print(format_event(e), flush=True))
    )
    if args.follow:
        try:
            for event in feed.follow_events(
                instance,
                tenant=args.tenant,
                type_glob=args.type,
                poll_s=FOLLOW_POLL_S,
                sleep=time.sleep,
            ):
                show(event)
        except KeyboardInterrupt:
            return 0
    events, _ = feed.read_events(instance, tenant=args.tenant, type_glob=args.type)
    for event in events:
        show(event)
    return 0


def _running_platform(settings: Settings) -> PlatformApi:
    """The running platform's API server: the one process that launches lifecycle runs."""
    api = running_platform_api(settings)
    if api is None:
        raise TenantPipelinesError(
            f"the platform is not running for {settings.data_dir}; start it with `tenantctl up`"
        )
    return api


def _launch_and_wait(
    args: argparse.Namespace, settings: Settings, launch: Callable[[], str], wanted: str
) -> int:
    """Launch a run; with --wait, block until it ends and exit 0 only if the tenant is `wanted`."""
    from tenant_pipelines.orchestration.runs import wait_for_run

    run_id = launch()
    data: dict[str, Any] = {"slug": args.slug, "run_id": run_id}
    text = f"run {run_id} launched for {args.slug}"
    if not args.wait:
        _print(args, data, text)
        return 0
    wait_for_run(_instance(settings), run_id)
    tenant = _registry(settings).tenants.get(args.slug)
    data.update(state=tenant.state, failed_step=tenant.failed_step)
    text += f"; tenant is {tenant.state}"
    if tenant.failed_step:
        text += f" (failed at {tenant.failed_step}: {tenant.failure_reason})"
    _print(args, data, text)
    return 0 if tenant.state == wanted else 1


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    if args.slug is None:
        return _batch(args, settings, "retry")
    return _lifecycle(args, settings, "retry", TenantState.ACTIVE)


def cmd_decommission(args: argparse.Namespace, settings: Settings) -> int:
    if args.slug is None:
        if not args.all_matching:
            raise UsageError("name a SLUG, or select tenants with --all-matching and a filter")
        return _batch(args, settings, "decommission")
    return _lifecycle(args, settings, "decommission", TenantState.DECOMMISSIONED)


BATCH_FILTERS = ("state", "plan", "org", "slug_prefix", "created_after")


def _batch(args: argparse.Namespace, settings: Settings, action: str) -> int:
    """Retry or decommission every tenant matching the filter, once the operator has confirmed
    how many (`--yes N`, or N typed at the prompt); then follow the batch to its end. Exit 3 if
    any tenant was refused or skipped."""
    wanted = {key: getattr(args, key) for key in BATCH_FILTERS if getattr(args, key)}
    if not wanted:
        raise UsageError(f"a {action} of many tenants needs a filter (e.g. --state failed)")
    _registry(settings)
    api = _running_platform(settings)
    slugs = api.call("POST", "/local/batch-preview", wanted)["slugs"]
    _confirm(args, action, len(slugs))
    call = {"requested_by": _operator(), "action": action, "filter": wanted, "expect": len(slugs)}
    started = _platform_call(api, "POST", "/local/batches", call)
    batch = _follow_batch(api, str(started["id"]))
    return _report_batch(args, batch)


def _confirm(args: argparse.Namespace, action: str, count: int) -> None:
    if count == 0:
        raise Refused("no tenant matches the filter")
    if args.yes is not None:
        if args.yes != count:
            raise Refused(f"{count} tenant(s) match, not the {args.yes} given with --yes")
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{count} tenant(s) match: confirm with --yes {count}")
    typed = input(f"{action} {count} tenant(s)? Type {count} to confirm: ").strip()
    if typed != str(count):
        raise Refused("not confirmed; nothing done")


def _platform_call(api: PlatformApi, method: str, path: str, body: Any = None) -> Any:
    try:
        return api.call(method, path, body, LIFECYCLE_TIMEOUT_S)
    except PlatformRefused as refused:
        if refused.status == 409:
            raise Refused(str(refused)) from None
        raise


def _follow_batch(api: PlatformApi, batch_id: str) -> dict[str, Any]:
    while True:
        batch: dict[str, Any] = api.call("GET", f"/local/batches/{quote(batch_id, safe='')}")
        if batch["finished_at"]:
            return batch
        time.sleep(BATCH_POLL_S)


def _report_batch(args: argparse.Namespace, batch: dict[str, Any]) -> int:
    items = batch["items"]
    lines = [f"batch {batch['batch_id']}: {batch['action']} of {len(items)} tenant(s)"]
    for item in items:
        said = (item["run_id"] and f"run {item['run_id']}") or item["detail"]
        lines.append(f"  {item['slug']}: {item['outcome']} ({said})")
    _print(args, batch, "\n".join(lines))
    return 0 if all(item["outcome"] == "done" for item in items) else 3


def cmd_compensate(args: argparse.Namespace, settings: Settings) -> int:
    return _lifecycle(args, settings, "compensate", TenantState.FAILED)


def _lifecycle(
    args: argparse.Namespace, settings: Settings, operation: str, wanted: TenantState
) -> int:
    """Have the running platform launch one lifecycle operation on `args.slug` as the
    operator; with --wait, follow it. A registry that cannot be read is said first, naming the
    store and the cause, whether or not the platform runs."""
    _registry(settings)
    api = _running_platform(settings)
    return _launch_and_wait(args, settings, lambda: _operate(api, operation, args.slug), wanted)


def _operate(api: PlatformApi, operation: str, slug: str) -> str:
    path = f"/local/tenants/{quote(slug, safe='')}/{operation}"
    try:
        answer = api.call("POST", path, {"requested_by": _operator()}, LIFECYCLE_TIMEOUT_S)
    except PlatformRefused as refused:
        if refused.status == 409:  # the tenant's state, or an operation in flight
            raise Refused(str(refused)) from None
        raise
    except PlatformUnreachable as error:
        raise TenantPipelinesError(f"the platform did not answer: {error}") from None
    return str(answer["run_id"])


def _batch_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """Without a SLUG: every tenant matching the filter, in one batch (`/v1/batches`)."""
    p.add_argument("--state", choices=[s.value for s in TenantState])
    p.add_argument("--plan")
    p.add_argument("--org")
    p.add_argument("--slug-prefix")
    p.add_argument("--created-after", help="ISO 8601 with a timezone, e.g. 2026-12-07T10:00Z")
    p.add_argument("--yes", type=int, metavar="N", help="confirm N tenants without a prompt")
    if name == "decommission":
        p.add_argument(
            "--all-matching", action="store_true", help="every tenant the filter matches"
        )


def cmd_discard(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.orchestration.runs import DagsterRuns
    from tenant_pipelines.service.context import ServiceContext
    from tenant_pipelines.service.lifecycle import discard

    ctx = ServiceContext(_registry(settings), DagsterRuns(_instance(settings)))
    request_id = discard(ctx, Operator(_operator()), args.slug)
    data = {"slug": args.slug, "request_id": request_id, "state": "rejected"}
    _print(args, data, f"request {request_id} for {args.slug} discarded; the slug is free")
    return 0


def cmd_diagnose(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.orchestration.diagnose import diagnose, format_diagnosis

    unreadable: dict[str, str] = {}
    registry = _or_reason(lambda: _registry(settings), "registry", unreadable)
    instance = _or_reason(lambda: _instance(settings), "dagster", unreadable)
    if registry is None and instance is None:
        raise TenantPipelinesError("; ".join(unreadable.values()))
    result = diagnose(registry, instance, args.slug, unreadable)
    _print(args, result.to_json(), format_diagnosis(result))
    return _unreadable_said(result.unreadable)


def _unreadable_said(unreadable: dict[str, str]) -> int:
    """The one line on stderr (and exit 1) of a report made without some store."""
    if not unreadable:
        return 0
    print(f"tenantctl: {'; '.join(unreadable.values())}", file=sys.stderr)
    return 1


def _or_reason(open_store: Callable[[], T], name: str, unreadable: dict[str, str]) -> T | None:
    """The store, or None with the reason it could not be opened: commands that can say something
    useful from one store alone (diagnose, inventory) go on without the other."""
    try:
        return open_store()
    except (TenantPipelinesError, OSError) as error:
        unreadable[name] = str(error)
        return None


def cmd_inventory(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.composition import build_platform
    from tenant_pipelines.localstack.platform_lock import is_held
    from tenant_pipelines.saga.inventory import format_inventory, take_inventory

    p = build_platform(settings)
    # Workloads run only while `up` (or, on a worker host, `worker`) holds the data directory.
    skip = frozenset() if is_held(settings.data_dir) else frozenset({p.deployer.kind})
    unreadable: dict[str, str] = {}
    registry = _or_reason(lambda: _registry(settings), "registry", unreadable)
    backends = [p.storage, p.identity, p.traffic, p.deployer]
    ledger = None if registry is None else registry.ledger
    result = take_inventory(ledger, list(backends), skip, unreadable, settings.host_name)
    _print(args, result.to_json(), format_inventory(result))
    return _unreadable_said(result.unreadable) or (0 if result.clean else 1)


def cmd_emails(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.saga.emails import email_rows

    reg = _registry(settings)
    rows = [e.to_json() for e in email_rows(reg.ledger, reg.tenants.get(args.slug).tenant_id)]
    text = "\n".join(
        f"{r['kind']:<11} {r['status']:<9} {r['at'] or '-':<33} {r['provider_id'] or ''}"
        for r in rows
    )
    _print(args, rows, text)
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.localstack import up
    from tenant_pipelines.localstack.reconcile import LocalWorkloads

    if args.dagster_port is not None:
        print(
            "tenantctl: --dagster-port is no longer used: the API server serves the Dagster UI"
            " at /dagster/",
            file=sys.stderr,
        )
    if args.https_port is not None:  # the children's settings, and the addresses they give
        settings = dataclasses.replace(settings, https_port=args.https_port)
    up.check_data_dir(settings, args.init)  # before anything is written there
    _registry(settings)  # a registry that cannot be opened is said now, not in a child's log
    workspace = Path(args.workspace) if args.workspace else None
    if workspace is None and Path("workspace.yaml").is_file():
        workspace = Path("workspace.yaml").resolve()
    return up.run_stack(
        settings,
        up.Ports(edge=args.edge_port, api=args.api_port, https=settings.https_port),
        workspace,
        LocalWorkloads(settings),
        lambda line: print(line, flush=True),
        init=args.init,
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from tenant_pipelines.localstack.reconcile import LocalWorkloads
    from tenant_pipelines.localstack.worker import run_worker

    return run_worker(
        settings, LocalWorkloads(settings), lambda line: print(line, flush=True), init=args.init
    )


def cmd_gateway_config(args: argparse.Namespace, settings: Settings) -> int:
    """The Caddy configuration `up` starts the gateway with, for these settings and the route
    table as it is (none yet on a new host): to read, or to check with `caddy validate`."""
    from resources.gateway import config_for
    from tenant_pipelines.localstack.gateway import plan_for

    plan = plan_for(settings, args.edge_port, args.api_port)
    print(json.dumps(config_for(settings.data_dir, plan), indent=2))
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    try:
        print(args.token_handler(args, _registry(settings)))
    except tokens.InvalidGrant as error:
        raise UsageError(str(error)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenantctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=handler)
        return p

    p = command("request", cmd_request, "submit a new-tenant request; prints its id")
    for flag in ("--slug", "--org", "--plan", "--admin-email", "--caller", "--role"):
        p.add_argument(flag, required=True)
    p.add_argument("--request-id", help="idempotency key (UUID); generated if absent")

    p = command("status", cmd_status, "one tenant's state")
    p.add_argument("slug")

    p = command("list", cmd_list, "all tenants")
    p.add_argument("--state", choices=[s.value for s in TenantState])

    p = command("audit", cmd_audit, "the audit feed")
    p.add_argument("--tenant", help="one tenant's slug")
    p.add_argument("--type", help="event type glob, e.g. 'tenant.provisioning.*'")
    p.add_argument("--follow", action="store_true", help="keep printing new events")

    for name, handler, help_text in (
        ("retry", cmd_retry, "re-execute a failed tenant's run from where it failed"),
        ("decommission", cmd_decommission, "release everything and free the slug"),
        (
            "compensate",
            cmd_compensate,
            "launch a failed tenant's compensation again (after it gave up)",
        ),
    ):
        p = command(name, handler, help_text)
        p.add_argument("slug", nargs=None if name == "compensate" else "?")
        p.add_argument("--wait", action="store_true", help="wait for the outcome")
        if name != "compensate":
            _batch_arguments(p, name)

    p = command(
        "discard", cmd_discard, "give up a request whose run failed before a tenant existed"
    )
    p.add_argument("slug")

    p = command("diagnose", cmd_diagnose, "the stuck-saga runbook for one tenant")
    p.add_argument("slug")
    command("inventory", cmd_inventory, "backends against the ledger: orphans and ghosts")
    p = command("emails", cmd_emails, "the welcome emails of one tenant")
    p.add_argument("slug")

    tokens.add_commands(sub)
    sub.choices["token"].set_defaults(handler=cmd_token)

    p = command("gateway-config", cmd_gateway_config, "the edge gateway's Caddy configuration")
    p.add_argument("--edge-port", type=int, default=8080, help="as `up` is given it")
    p.add_argument("--api-port", type=int, default=8000, help="as `up` is given it")

    p = command("up", cmd_up, "run the local platform in the foreground")
    p.add_argument(
        "--dagster-port",
        type=int,
        help="no longer used: the Dagster UI is served by the API server, at /dagster/",
    )
    p.add_argument(
        "--edge-port", type=int, default=8080, help="the edge's plain HTTP (redirects to HTTPS)"
    )
    p.add_argument(
        "--https-port", type=int, help="the edge's HTTPS (default: TENANT_HTTPS_PORT, else 8443)"
    )
    p.add_argument("--api-port", type=int, default=8000, help="the HTTP API and the console")
    p.add_argument("--workspace", help="workspace.yaml (default: ./workspace.yaml if present)")
    p.add_argument(
        "--init", action="store_true", help="create TENANT_DATA_DIR if it does not exist yet"
    )

    p = command("worker", cmd_worker, "run this worker host's runs and workloads (several hosts)")
    p.add_argument(
        "--init", action="store_true", help="create TENANT_DATA_DIR if it does not exist yet"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Whatever a command makes in the data directory (the registry, keys, logs, and everything
    # `up`'s processes make) is the platform user's alone: tenants' workloads must not read it.
    os.umask(PRIVATE_UMASK)
    args = build_parser().parse_args(argv)
    # Libraries' own retry warnings (dagster-postgres logs each failed connection on the root
    # logger) are not the user's message: the error below is, in one line.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        return int(args.handler(args, Settings.from_env()))
    except UsageError as error:
        return _fail(args, error, 2)
    except (OperationInFlight, Refused) as error:
        return _fail(args, error, 3)
    except (TenantPipelinesError, OSError) as error:
        return _fail(args, error, 1)


def _fail(args: argparse.Namespace, error: Exception, code: int) -> int:
    """One line on stderr; with --json also `{"error": ...}` on stdout (docs/contracts.md)."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"tenantctl: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    return code


if __name__ == "__main__":
    sys.exit(main())
