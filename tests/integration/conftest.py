"""Integration fixtures: a real local platform (Dagster instance, registry, backends) and the
local backends on their own."""

from tests.local_backends import data_dir, deployer, identity
from tests.platform_fixtures import local_platform

__all__ = ["data_dir", "deployer", "identity", "local_platform"]
