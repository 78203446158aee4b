"""The environment a tenant's workload is started with, named once for both sides: the deployer
(`resources.deployer`) sets it, the workload (`resources.workload_server`) reads it. No imports:
the workload stays as light as it is."""

# The DSN of the tenant's PostgreSQL identity store: in the environment, never in argv, which
# every local user can read in /proc.
IDENTITY_DSN_ENV = "TENANT_WORKLOAD_IDENTITY_DSN"

# How the workload's PostgreSQL connections name themselves (`pg_stat_activity.application_name`).
PG_APPLICATION_NAME = "tenant-workload"
