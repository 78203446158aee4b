"""Dagster resources: one module per concern, each an interface with its backends."""
