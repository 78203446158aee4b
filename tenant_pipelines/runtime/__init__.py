"""How runs execute on this host: the fork-server run launcher and its worker. The only package
allowed to import Dagster's private modules (`dagster._*`), pinned to the version in pyproject."""
