"""Errors as the API answers them: `{"error": "<one clear sentence>", "field": "<name>"}`.

The status says whose move it is: 401 authenticate, 403 not allowed for this role, 404 unknown
or another org's, 409 the tenant's state or another operation stands in the way, 422 fix the
input, 429 the caller holds as many event streams as it may, 503 the platform behind the API is
not there (the webserver, or the registry: the sentence names the store and the cause) or this
server is at its limit.
"""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenant_pipelines.domain.access import Forbidden, NotAuthenticated
from tenant_pipelines.domain.errors import (
    BusinessRefusal,
    ConfigError,
    InvalidTransition,
    NotFound,
    OperationInFlight,
    PlatformNotRunning,
    Refused,
    RegistryUnavailable,
    RequestConflict,
    TenantPipelinesError,
)
from tenant_pipelines.domain.request import field_errors
from tenant_pipelines.orchestration.graphql import DagsterApiError


class TooManyStreams(TenantPipelinesError):
    """The caller's token holds as many open event streams as one token may."""


class ServerBusy(TenantPipelinesError):
    """This server cannot take more of something right now (event streams): try again later."""


STATUS_OF: list[tuple[type[Exception], int]] = [
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (RequestConflict, 409),
    (Refused, 409),
    (OperationInFlight, 409),
    (InvalidTransition, 409),
    (BusinessRefusal, 409),
    (DagsterApiError, 503),
    (PlatformNotRunning, 503),
    (ConfigError, 503),
    (RegistryUnavailable, 503),
    (TooManyStreams, 429),
    (ServerBusy, 503),
]


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


class InvalidInput(TenantPipelinesError):
    """Input the API refuses, with the field at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = ErrorBody(error=message, field=field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(error: Exception) -> int:
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return 500


def invalid(error: ValidationError | RequestValidationError) -> JSONResponse:
    """422 naming the first field at fault and its rule (and every problem in the sentence)."""
    problems = field_errors(error) if isinstance(error, ValidationError) else _fastapi(error)
    field, _ = problems[0]
    message = "invalid request: " + "; ".join(f"{f}: {rule}" for f, rule in problems)
    return error_response(422, message, field)


def _fastapi(error: RequestValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query")]
        field = ".".join(location) or "request"
        problems.append((field, str(item.get("msg", "invalid")).removeprefix("Value error, ")))
    return problems or [("request", "invalid")]


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # A body that is not JSON at all (400), an unknown path (404), a wrong method (405).
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return invalid(error)

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, error: ValidationError) -> JSONResponse:
        return invalid(error)

    @app.exception_handler(InvalidInput)
    async def _input_invalid(_: Request, error: InvalidInput) -> JSONResponse:
        return error_response(422, str(error), error.field)

    @app.exception_handler(TenantPipelinesError)
    async def _refused(_: Request, error: TenantPipelinesError) -> JSONResponse:
        status = status_of(error)
        message = str(error) if status != 500 else "internal error; see the API server's log"
        return error_response(status, message)
