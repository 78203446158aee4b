"""`tenantctl`, the command line of the control plane."""

from tenant_pipelines.cli.commands import main

__all__ = ["main"]
