"""Request dependencies: bearer-token authentication and database access.

Tokens come from ``ECSWATCH_API_TOKENS`` (``scope:token`` pairs). ``read`` opens
every GET route, ``admin`` additionally opens webhook management and
``/v1/quarantine``. With no token configured the API is open, which the CLI
allows only on a loopback address.

The presented token is compared with every configured token in constant time
(``hmac.compare_digest``), and the loop never stops early, so the response time
tells an attacker neither how much of a token matched nor which token did.
Tokens are never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.config import ApiToken, Scope
from service.runtime import Runtime

bearer_scheme = HTTPBearer(
    scheme_name="bearerAuth",
    description="A token from ECSWATCH_API_TOKENS: `read` for GET routes, "
    "`admin` for webhooks and /v1/quarantine.",
    auto_error=False,
)

#: The header a 401 carries (RFC 6750).
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_runtime(request: Request) -> Runtime:
    """The runtime the app was built around."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def scope_of(token: str, tokens: tuple[ApiToken, ...]) -> Scope | None:
    """The widest scope ``token`` grants, or None when it matches no configured token."""
    given = token.encode("utf-8")
    granted: Scope | None = None
    for candidate in tokens:
        # No early exit: every configured token is compared, match or not.
        matches = hmac.compare_digest(given, candidate.token.get_secret_value().encode("utf-8"))
        if matches and granted != "admin":
            granted = candidate.scope
    return granted


def scope_of_authorization(header: str | None, tokens: tuple[ApiToken, ...]) -> Scope | None:
    """The scope an ``Authorization`` header's bearer token grants (None: none),
    read as :data:`bearer_scheme` reads it."""
    if header is None:
        return None
    scheme, credentials = get_authorization_scheme_param(header)
    if scheme.lower() != "bearer" or not credentials:
        return None
    return scope_of(credentials, tokens)


def _authorize(
    request: Request, credentials: HTTPAuthorizationCredentials | None, need: Scope
) -> None:
    tokens = get_runtime(request).settings.api_tokens
    if not tokens:
        return
    if credentials is None:
        raise HTTPException(401, "a bearer token is required", headers=CHALLENGE)
    scope = scope_of(credentials.credentials, tokens)
    if scope is None:
        raise HTTPException(401, "the bearer token is not valid", headers=CHALLENGE)
    if need == "admin" and scope != "admin":
        raise HTTPException(403, "this route needs a token with the admin scope")


async def require_read(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Allow tokens of either scope."""
    _authorize(request, credentials, "read")


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Allow only ``admin`` tokens."""
    _authorize(request, credentials, "admin")


async def _caller_scope(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Scope:
    # Runs after require_read/require_admin, so a token is there and valid. With
    # no token configured the API is open on loopback only: the caller is its owner.
    tokens = get_runtime(request).settings.api_tokens
    if not tokens:
        return "admin"
    granted = None if credentials is None else scope_of(credentials.credentials, tokens)
    if granted is None:
        raise HTTPException(401, "the bearer token is not valid", headers=CHALLENGE)
    return granted


#: The scope of the caller's token (``admin`` when the API has no tokens).
CallerScope = Annotated[Scope, Depends(_caller_scope)]


async def _read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    # The read engine is in autocommit: every read route answers from one statement
    # (or statements that need no common snapshot), so BEGIN/ROLLBACK would be two
    # wasted round trips. It does not pre-ping: statements go through execute_read(),
    # which retries once on a fresh connection when a pooled one was dropped.
    async with get_runtime(request).read_connection() as conn:
        yield conn


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    # The request owns the transaction: commit when the route returns, roll back
    # when it raises. scope="function" below makes the commit happen before the
    # response is sent, so a 201 always describes committed rows.
    async with get_runtime(request).sessionmaker() as session, session.begin():
        yield session


ReadConnection = Annotated[AsyncConnection, Depends(_read_connection, scope="function")]
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]
