"""Importable job targets for `build_reconstructable_job` (jobs with their resources bound).

The data directory is an argument so that each test's job is its own: Dagster caches
reconstructed jobs by target and arguments.
"""

from dagster import JobDefinition

from tenant_pipelines.definitions import build_definitions
from tenant_pipelines.settings import Settings


def job_named(name: str, data_dir: str) -> JobDefinition:
    settings = Settings.from_env({"TENANT_DATA_DIR": data_dir})
    return build_definitions(settings).get_job_def(name)
