"""Dagster: the ops, jobs and hook that run the saga, the audit feed as Dagster events, launching
runs, and the instance. Thin adapters over `saga/`."""
