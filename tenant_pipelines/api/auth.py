"""Who is calling: a bearer token for the API, a server-side session for the console.

Every handler depends on one of these; the caller's subject and role come from the token as the
registry knows it, never from the request. A console session (`api.sessions`) holds only the
token's id, and the token is checked again at every request: a revoked or expired token ends
its sessions at their next request.
"""

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.api.sessions import TOKEN_ID
from tenant_pipelines.domain.access import Caller, NotAuthenticated

bearer = HTTPBearer(auto_error=False, description="An API token from `tenantctl token create`.")
SESSION_TOKEN_ID = TOKEN_ID
SESSION_CSRF = "csrf"  # the session's CSRF token: console forms, the Dagster UI's requests


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def api_caller(credentials: Credentials, ctx: Ctx) -> Caller:
    if credentials is None:
        raise NotAuthenticated("send the API token as 'Authorization: Bearer <token>'")
    return ctx.registry.tokens.authenticate(credentials.credentials)


ApiCaller = Annotated[Caller, Depends(api_caller)]


def caller_of_session(session: Mapping[str, Any], ctx: ApiContext) -> Caller | None:
    """The caller of a console session (`scope["session"]`; the console's pages and the Dagster
    UI's door), or None: no session, an ended one, or one whose token is revoked or expired.
    One registry read: from async code, call it in a worker thread."""
    token_id = session.get(SESSION_TOKEN_ID)
    if not isinstance(token_id, str):
        return None
    try:
        return ctx.registry.tokens.caller_for_id(token_id)
    except NotAuthenticated:
        return None


def session_caller(request: Request, ctx: ApiContext) -> Caller | None:
    """The console's caller; a session whose token is no longer good is ended on the spot."""
    caller = caller_of_session(request.session, ctx)
    if caller is None and SESSION_TOKEN_ID in request.session:
        request.session.clear()
    return caller
