"""tenant-pipelines: provision tenants end to end, orchestrated by Dagster."""
