"""Security fixtures: a real stack per module (as in the e2e tier) and the local backends."""

from tests.stack_fixtures import stack, stack_options

__all__ = ["stack", "stack_options"]
