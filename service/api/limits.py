"""The API's edge: authentication and a bounded body before any route reads a byte.

FastAPI reads and parses a request's body before a route's dependencies run, so
a token checked by a dependency is checked after the body was read: an anonymous
client could make every replica read and parse megabytes. This ASGI middleware
runs first, on every request:

* A request that may carry a body (``POST``, ``PUT``, ``PATCH``, ``DELETE``) to
  a route that takes it needs a valid bearer token (any scope; the route's
  dependency still checks the scope) whenever tokens are configured: 401
  otherwise, with nothing read. Any other path or method goes to the router as
  it is, for its 404 or 405, which read no body either.
* A declared ``Content-Length`` above ``ECSWATCH_API_MAX_BODY_BYTES`` is refused
  with 413 at once. A body is then read here, counting bytes as they stream in
  (chunked bodies declare no length), and refused with 413 as soon as it passes
  the limit; the route gets the bytes read, replayed.

Every refusal is ``application/problem+json``, as the routes' errors are.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import CHALLENGE, scope_of_authorization
from service.api.errors import problem
from service.config import Settings

#: Methods whose requests carry a body to parse.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyTooLarge(Exception):
    """The request body passed the limit while it was read."""


class EdgeLimits:
    """ASGI middleware: authenticate body-carrying requests and bound every body."""

    def __init__(self, app: ASGIApp, *, settings: Callable[[], Settings]) -> None:
        # Read per request, not when the app is built: building it (for its
        # OpenAPI document alone) needs no runtime.
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in BODY_METHODS:
            if not routed(scope):
                # 404 or 405 from the router, which reads no body.
                await self.app(scope, receive, send)
                return
        elif not declares_body(scope):
            # The common case, a GET: nothing to bound, and no cost beyond this scan.
            await self.app(scope, receive, send)
            return
        settings = self.settings()
        limit = settings.api_max_body_bytes
        headers = Headers(scope=scope)
        path = scope.get("path", "")
        if method in BODY_METHODS and settings.api_tokens:
            authorization = headers.get("authorization")
            if scope_of_authorization(authorization, settings.api_tokens) is None:
                detail = (
                    "a bearer token is required"
                    if authorization is None
                    else "the bearer token is not valid"
                )
                response = problem(
                    401, "unauthorized", "Unauthorized", detail, instance=path, headers=CHALLENGE
                )
                await response(scope, receive, send)
                return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isascii() or not declared.isdigit():
                response = problem(
                    400,
                    "bad-request",
                    "Bad request",
                    "Content-Length is not a number",
                    instance=path,
                )
                await response(scope, receive, send)
                return
            if int(declared) > limit:
                await too_large(limit, scope, receive, send)
                return
        try:
            body = await read_bounded(receive, limit)
        except BodyTooLarge:
            await too_large(limit, scope, receive, send)
            return
        if body is None:
            return  # the client went away before its body was whole: nobody to answer
        await self.app(scope, replay(body, receive), send)


def declares_body(scope: Scope) -> bool:
    """Whether the request's headers announce a body (a length other than 0, or chunks)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def routed(scope: Scope) -> bool:
    """Whether a route of the app takes this method on this path."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", ())
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


async def too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 413; the connection closes, so the rest of the body is never read."""
    response = problem(
        413,
        "payload-too-large",
        "Payload too large",
        f"the request body is larger than {limit} bytes",
        instance=scope.get("path", ""),
        headers={"Connection": "close"},
    )
    await response(scope, receive, send)


async def read_bounded(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or :class:`BodyTooLarge` once more than ``limit`` bytes
    came; None when the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then defers to the server's."""
    sent = False

    async def receive_replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_replayed
