"""Which of the product's modules a submit and a retry pass through, and how often a call climbs
back up a layer: traced while they run against a real platform, not read from the code.

    python -m bench.call_chain [--json PATH]

Starts a platform with `tenantctl up` (product defaults, plus an empty fault plan), provisions one
tenant to warm it up and makes a second one fail at Deploy (a permanent fault, then lifted). Then,
in this process, it opens the API server's context on that platform as the API server does at
start (`ApiContext.open`: registry, instance, launcher, Dagster UI), submits one tenant through it
untraced (the first launch in a process imports the code location), and traces, with a profile hook
on every thread, each call from one product module (`tenant_pipelines/`, `resources/`,
`sensors/`) into another made while:

- submit: `api.tenants.submit` records a new tenant's request and launches its run;
- retry: `api.tenants.retry` re-executes the failed tenant's run from its failure.

Both are the functions the HTTP handlers call with the caller read from the token. A climb is a
call into a module of a higher layer than the caller's: the layers of the import-linter contract in
`pyproject.toml`, with `resources/` beside the registry, `sensors/` beside `orchestration/` and
`definitions.py` just below `api/`.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import anyio

from bench.common import write_json
from tests.stack_helpers import Stack, local_stack, write_fault_plan

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("tenant_pipelines", "resources", "sensors")
LAYER_RANK = {
    "cli": 10,
    "localstack": 9,
    "api": 8,
    "definitions.py": 7,
    "runtime": 6,
    "orchestration": 5,
    "sensors": 5,
    "service": 4,
    "saga": 3,
    "registry": 3,
    "resources": 3,
    "settings.py": 2,
    "domain": 1,
    "support": 1,
}
ORG = "chain"


def module_of(path: str) -> str:
    return str(Path(path).relative_to(ROOT))


def layer_of(module: str) -> str:
    parts = Path(module).parts
    return parts[1] if parts[0] == "tenant_pipelines" and len(parts) > 1 else parts[0]


@dataclass
class CallTrace:
    """Calls between product modules, in the order they were made, on every thread."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    on: bool = False

    def __post_init__(self) -> None:
        self._prefixes = tuple(str(ROOT / package) + os.sep for package in PRODUCT)

    def hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on or event != "call":
            return
        callee = frame.f_code.co_filename
        if not callee.startswith(self._prefixes):
            return
        caller = frame.f_back
        while caller is not None and not caller.f_code.co_filename.startswith(self._prefixes):
            caller = caller.f_back
        if caller is not None and caller.f_code.co_filename != callee:
            self.calls.append((module_of(caller.f_code.co_filename), module_of(callee)))
        elif caller is None:
            self.calls.append(("(caller)", module_of(callee)))

    def summary(self) -> dict[str, Any]:
        entered: list[str] = []
        climbs: Counter[str] = Counter()
        for source, target in self.calls:
            if target not in entered:
                entered.append(target)
            if source != "(caller)" and (
                LAYER_RANK[layer_of(target)] > LAYER_RANK[layer_of(source)]
            ):
                climbs[f"{source} -> {target}"] += 1
        return {
            "modules_entered": len(entered),
            "layers_entered": len({layer_of(module) for module in entered}),
            "calls_between_modules": len(self.calls),
            "climbs": sum(climbs.values()),
            "chain": entered,
            "climbs_by_call": dict(climbs.most_common()),
        }


@contextmanager
def traced(trace: CallTrace) -> Iterator[None]:
    threading.setprofile(trace.hook)
    sys.setprofile(trace.hook)
    trace.on = True
    try:
        yield
    finally:
        trace.on = False
        sys.setprofile(None)
        threading.setprofile(None)


def submit_cli(stack: Stack, slug: str) -> None:
    stack.cli(
        "request", "--slug", slug, "--org", ORG, "--plan", "team",
        "--admin-email", f"admin@{slug}.example.com",
        "--caller", "chain", "--role", "platform-admin",
    )  # fmt: skip


def failed_tenant(stack: Stack, fault_plan: Path, slug: str) -> None:
    """`slug` failed at Deploy and compensated, its fault lifted: ready to retry."""
    write_fault_plan(fault_plan, [{"phase": "deploy", "tenant": slug, "mode": "permanent"}])
    submit_cli(stack, slug)
    stack.wait_for_state(slug, {"failed"})
    deadline = time.monotonic() + 120
    while not any(
        event["type"] == "tenant.provisioning.compensated"
        for event in stack.cli_json_lines("audit", "--tenant", slug)
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{slug} was never compensated")
        time.sleep(0.5)
    write_fault_plan(fault_plan, [])


def caller_of(registry: Any, token: str) -> Any:
    """The token's caller, from today's registry or one before its split per kind of record
    (so the script also traces an older checkout, for before/after figures)."""
    authenticate = getattr(registry, "authenticate", None) or registry.tokens.authenticate
    return authenticate(token)


def trace_use_cases(stack: Stack, token: str, failed: str) -> dict[str, Any]:
    from tenant_pipelines.api import tenants
    from tenant_pipelines.api.context import Addresses, ApiContext
    from tenant_pipelines.domain.request import TenantFields
    from tenant_pipelines.settings import Settings
    from tenant_pipelines.support.metrics import Door

    os.environ.update(stack.env)
    settings = Settings.from_env()
    workspace = settings.data_dir / "workspace.yaml"  # `up` writes one when started elsewhere
    if not workspace.exists():
        workspace = ROOT / "workspace.yaml"
    ctx = ApiContext(settings, Addresses(workspace=workspace))
    ctx.open()
    try:
        caller = caller_of(ctx.registry, token)

        def fields(slug: str) -> TenantFields:
            return TenantFields(
                slug=slug, org=ORG, plan="team", admin_email=f"admin@{slug}.example.com"
            )

        # Untraced: the API server's first launch also imports the code location, once.
        tenants.submit(ctx, caller, fields("first"), uuid.uuid4())
        results: dict[str, Any] = {}
        traced_fields = fields("traced")  # FastAPI parses the body before the handler
        use_cases: dict[str, Callable[[], Any]] = {
            "submit": lambda: tenants.submit(ctx, caller, traced_fields, uuid.uuid4()),
            "retry": lambda: anyio.run(tenants.retry, ctx, caller, failed, Door.API),
        }
        for name, use_case in use_cases.items():
            trace = CallTrace()
            with traced(trace):
                use_case()
            results[name] = trace.summary()
        for slug in ("first", "traced"):
            stack.wait_for_state(slug, {"active"})
        stack.wait_for_state(failed, {"active"})
        return results
    finally:
        ctx.close()


def print_summary(results: dict[str, Any]) -> None:
    for name, found in results.items():
        print(
            f"{name}: {found['modules_entered']} modules in {found['layers_entered']} layers, "
            f"{found['calls_between_modules']} calls between modules, {found['climbs']} climbs"
        )
        print("  chain: " + " > ".join(found["chain"]))
        for call, count in found["climbs_by_call"].items():
            print(f"  climb x{count}: {call}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/call-chain.json")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp,
        local_stack(Path(tmp), TENANT_FAULT_PLAN=str(Path(tmp) / "faults.json")) as stack,
    ):
        fault_plan = Path(tmp) / "faults.json"
        write_fault_plan(fault_plan, [])
        stack.start()
        try:
            token = stack.token("platform-admin", subject="chain")
            submit_cli(stack, "warm")
            stack.wait_for_state("warm", {"active"})
            failed_tenant(stack, fault_plan, "broken")
            results = trace_use_cases(stack, token, "broken")
        finally:
            stack.stop()
    print_summary(results)
    write_json(args.json, {"use_cases": results})


if __name__ == "__main__":
    main()
