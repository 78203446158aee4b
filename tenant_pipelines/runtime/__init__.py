"""How runs execute on this host: the fork-server run launcher and its worker. Dagster's private
modules (`dagster._*`), pinned to the version in pyproject, are imported in `dagster_private`
only."""
