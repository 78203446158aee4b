"""Security fixtures: a real stack per module (as in the e2e tier) and the local backends."""

from tests.local_backends import data_dir, deployer, identity
from tests.stack_fixtures import stack, stack_options

__all__ = ["data_dir", "deployer", "identity", "stack", "stack_options"]
