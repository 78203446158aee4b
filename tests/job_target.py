"""Importable job targets for `build_reconstructable_job` (jobs with their resources bound).

The data directory is an argument so that each test's job is its own: Dagster caches
reconstructed jobs by target and arguments.
"""

from dagster import JobDefinition

from tenant_pipelines.definitions import build_definitions
from tenant_pipelines.settings import Settings


def job_named(name: str, data_dir: str, host_name: str = "") -> JobDefinition:
    """`host_name`: the host the job's runs act on (TENANT_HOST_NAME; "": this machine's)."""
    env = {"TENANT_DATA_DIR": data_dir, **({"TENANT_HOST_NAME": host_name} if host_name else {})}
    return build_definitions(Settings.from_env(env)).get_job_def(name)
