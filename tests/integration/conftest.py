"""Integration fixtures: a real local platform (Dagster instance, registry, backends)."""

from tests.platform_fixtures import local_platform

__all__ = ["local_platform"]
