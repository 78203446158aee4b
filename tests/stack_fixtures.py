"""The `stack` fixture: one real `tenantctl up` per test module, for the e2e and security tiers.

Starting a stack takes most of a module's time, so a module shares one. A module that needs a
different stack says so by overriding `stack_options` (fault plan, `--init`, environment, what
to do before the start or after the stop); everything else is the same for every module.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from tests.stack_helpers import Stack, local_stack, write_fault_plan


@dataclass(frozen=True)
class StackOptions:
    faults: bool = False  # an empty fault plan in TENANT_FAULT_PLAN, at `stack.fault_plan`
    init: bool = False  # `up --init` creates the data directory (checked absent before)
    env: Mapping[str, str] = field(default_factory=dict)
    before_start: Callable[[Stack], None] | None = None
    after_stop: Callable[[Stack], None] | None = None  # once `up` has exited 0


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    """The embedded default; a module overrides this fixture to vary it."""
    return StackOptions()


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    stack_options: StackOptions,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A running stack for the module; at the end `up` must stop cleanly (exit 0) on SIGTERM,
    unless a test stopped it already."""
    options = stack_options
    module = request.module.__name__.rsplit(".", 1)[-1]
    tmp = tmp_path_factory.mktemp(module.removeprefix("test_"))
    env = dict(options.env)
    plan = tmp / "faults.json"
    if options.faults:
        write_fault_plan(plan, [])
        env["TENANT_FAULT_PLAN"] = str(plan)
    with local_stack(tmp, make_data_dir=not options.init, **env) as running:
        if options.faults:
            running.fault_plan = plan
        if options.before_start is not None:
            options.before_start(running)
        start(running, options.init)
        yield running
        if running.process is not None:
            assert running.stop() == 0
        if options.after_stop is not None:
            options.after_stop(running)


def start(stack: Stack, init: bool) -> None:
    if not init:
        stack.start()
        return
    assert not stack.data_dir.exists()
    stack.start("--init")
    assert stack.data_dir.is_dir()
