"""The front door: the authenticated HTTP API (`/v1`) and the tenant console (`/console`), served
by one FastAPI application; handlers are thin adapters over the registry, the saga's views and
the orchestration layer."""
