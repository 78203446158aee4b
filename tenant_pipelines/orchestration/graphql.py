"""Dagster's GraphQL API, as the UI calls it: runs launched here behave exactly like runs
launched from the UI (queued, re-executable, tagged with their parents).

The operations are sent through a transport: in the API server, the schema executed in-process
(`runtime.dagster_ui.DagsterUi.execute`); in tests, the door's `/dagster/graphql` over HTTP.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tenant_pipelines.domain.errors import TenantPipelinesError

# Sends one GraphQL operation; `{"data": ..., "errors": [<message>, ...]}`.
GraphQLTransport = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
LOCATION = "tenant_pipelines"
REPOSITORY = "__repository__"

_RESULT_FIELDS = """
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on Error { message }
"""

LAUNCH_RUN = f"""
mutation LaunchRun($executionParams: ExecutionParams!) {{
  launchRun(executionParams: $executionParams) {{ {_RESULT_FIELDS} }}
}}"""

REEXECUTE = f"""
mutation Reexecute($reexecutionParams: ReexecutionParams, $executionParams: ExecutionParams) {{
  launchRunReexecution(reexecutionParams: $reexecutionParams,
                       executionParams: $executionParams) {{ {_RESULT_FIELDS} }}
}}"""


class DagsterApiError(TenantPipelinesError):
    pass


class DagsterApi:
    def __init__(self, transport: GraphQLTransport) -> None:
        self._send = transport

    def _call(self, query: str, variables: Mapping[str, Any], field: str) -> str:
        body = self._send(query, variables)
        if body.get("errors"):
            raise DagsterApiError(f"GraphQL error: {body['errors'][0]}")
        result = body["data"][field]
        if result["__typename"] != "LaunchRunSuccess":
            detail = result.get("message") or result.get("errors") or result
            raise DagsterApiError(f"{result['__typename']}: {detail}")
        return str(result["run"]["runId"])

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        params = {
            "selector": self._selector(job_name),
            "runConfigData": dict(run_config),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        return self._call(LAUNCH_RUN, {"executionParams": params}, "launchRun")

    def reexecute_from_failure(
        self, parent_run_id: str, extra_tags: Mapping[str, str] | None = None
    ) -> str:
        """Exactly the UI's "Re-execute from failure"; `extra_tags` replace the parent's."""
        return self.reexecute(parent_run_id, "FROM_FAILURE", extra_tags)

    def reexecute(
        self, parent_run_id: str, strategy: str, extra_tags: Mapping[str, str] | None = None
    ) -> str:
        """The UI's re-execution: strategy FROM_FAILURE or ALL_STEPS."""
        params: dict[str, Any] = {"parentRunId": parent_run_id, "strategy": strategy}
        if extra_tags:
            params["extraTags"] = [{"key": k, "value": v} for k, v in extra_tags.items()]
        return self._call(REEXECUTE, {"reexecutionParams": params}, "launchRunReexecution")

    def reexecute_steps(
        self,
        parent_run_id: str,
        root_run_id: str,
        job_name: str,
        run_config: Mapping[str, Any],
        tags: Mapping[str, str],
        step_keys: Sequence[str],
    ) -> str:
        """Re-execute chosen steps of a run (Dagster refuses FROM_FAILURE for canceled runs)."""
        all_tags = {
            **tags,
            "dagster/parent_run_id": parent_run_id,
            "dagster/root_run_id": root_run_id,
        }
        params = {
            "selector": self._selector(job_name),
            "runConfigData": dict(run_config),
            "stepKeys": list(step_keys),
            "executionMetadata": {
                "parentRunId": parent_run_id,
                "rootRunId": root_run_id,
                "tags": [{"key": k, "value": v} for k, v in all_tags.items()],
            },
        }
        return self._call(REEXECUTE, {"executionParams": params}, "launchRunReexecution")

    @staticmethod
    def _selector(job_name: str) -> dict[str, str]:
        return {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": job_name,
        }
