"""The Dagster UI and its GraphQL API, served inside the API server instead of by a webserver
process of its own.

The UI shows every org's runs and can launch, re-execute and terminate any of them, so it must
answer only through the platform's door (`api.dagster_door`: a platform-admin session or token,
same-origin mutations). A separate `dagster-webserver` listens on a TCP port that any local
process, and any web page open in an operator's browser, can reach; mounting dagster-webserver's
own ASGI app behind the door leaves nothing else to reach. It is the same app the webserver
serves (UI, GraphQL over HTTP and websockets, compute logs), built the way
`dagster-webserver`'s command line builds it, on the API server's own instance, so runs launched
from the UI go through the same run launcher and coordinator as the API's.

The API server's re-executions (`runtime.launchers.ApiServerLauncher`) use the same GraphQL schema
in-process (`execute`), so their runs are exactly the UI's: queued, tagged with their parents,
re-executable.
"""

import asyncio
from collections.abc import Mapping
from inspect import isawaitable
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from dagster_graphql.schema import create_schema
from dagster_webserver.app import create_app_from_workspace_process_context
from dagster_webserver.version import __version__
from graphql import execute, parse
from starlette.types import ASGIApp

from tenant_pipelines.runtime.dagster_private import WorkspaceFileTarget, WorkspaceProcessContext
from tenant_pipelines.runtime.run_coordinator import SlotRunCoordinator


class DagsterUi:
    """dagster-webserver's app for one workspace, and an in-process GraphQL executor.

    Read-only when the instance's run coordinator is not this project's: runs launched from the
    UI are admitted (requested_by, the tenant's operation claim) by that coordinator, and an
    operator's own dagster.yaml could choose another.
    """

    def __init__(self, instance: DagsterInstance, workspace: Path, path_prefix: str) -> None:
        self.read_only = not isinstance(instance.run_coordinator, SlotRunCoordinator)
        # Loads the code location (a code server process, as the webserver starts one).
        self._process = WorkspaceProcessContext(
            instance,
            workspace_load_target=WorkspaceFileTarget(paths=[str(workspace)]),
            version=__version__,
            read_only=self.read_only,
        )
        self.app: ASGIApp = create_app_from_workspace_process_context(
            self._process, path_prefix=path_prefix
        )
        self._schema = create_schema()

    def execute(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """Run one GraphQL operation as the UI would; its `data`, or its errors' messages.

        Called from worker threads (the API's sync handlers): Dagster's resolvers may be
        coroutines, which run on a loop of this call's own."""
        with self._process.create_request_context() as context:
            result = execute(
                self._schema.graphql_schema,
                parse(query),
                context_value=context,
                variable_values=dict(variables),
            )
            if isawaitable(result):
                result = asyncio.run(_completed(result))
        errors = [error.message for error in result.errors or []]
        return {"data": result.data, "errors": errors}

    def close(self) -> None:
        """Stop the code server the workspace started."""
        self._process.__exit__(None, None, None)


async def _completed(result: Any) -> Any:
    return await result
