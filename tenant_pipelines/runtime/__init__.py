"""How runs execute: on one host, the fork-server run launcher and its worker; with several, the
launcher that sends each run to its tenant's host and the Celery worker there. Dagster's private
modules (`dagster._*`), pinned to the version in pyproject, are imported in `dagster_private`
only."""
