"""The domain: what a tenant request is, its plans, states, records and events.

No Dagster, no I/O: every other layer builds on it.
"""
