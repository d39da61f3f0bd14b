"""One renderer of every error as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import AmbiguousNameError, EcswatchError, InvalidInputError
from service.logging import get_logger

log = get_logger(__name__)

PROBLEM_BASE = "https://ecswatch.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

_HTTP_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-parameter",
    429: "too-many-requests",
}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response with a stable ``type`` URI."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to one problem+json renderer; no stack traces leak."""

    @app.exception_handler(EcswatchError)
    async def _ecswatch_error(request: Request, exc: EcswatchError) -> JSONResponse:
        param = exc.param if isinstance(exc, InvalidInputError) else None
        if exc.status_code >= 500:
            log.error("request_failed", path=request.url.path, error=exc.detail)
        return problem(
            exc.status_code,
            exc.problem_type,
            exc.title,
            exc.detail,
            instance=request.url.path,
            param=param,
            scopes=exc.scopes if isinstance(exc, AmbiguousNameError) else None,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Query, path and body mistakes alike are 400 "invalid-parameter" naming the
        # parameter (``events.0`` for an item of a body field); 422 is never sent.
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            param, detail = None, "the request body is not valid JSON"
        else:
            if location[:1] == ("body",):
                param = ".".join(str(p) for p in location[1:]) or None
            else:
                # A query, path or header parameter; an item index ("tag", 0) is dropped.
                param = str(location[1]) if len(location) > 1 else None
            message = first.get("msg", "invalid value")
            if param:
                detail = f"{param}: {message}"
            elif location[:1] == ("body",):
                detail = f"request body: {message}"
            else:
                detail = "invalid request"
        return problem(
            400,
            "invalid-parameter",
            "Invalid parameter",
            detail,
            instance=request.url.path,
            param=param,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _HTTP_TYPES.get(exc.status_code, "http-error")
        title = slug.replace("-", " ").capitalize()
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette names only the methods of the first route that matched the
            # path; a path served by several routes (GET and POST /v1/webhooks)
            # must list all of them.
            methods = allowed_methods(request.app, request.url.path)
            if methods:
                headers = {**(headers or {}), "Allow": ", ".join(methods)}
        return problem(
            exc.status_code, slug, title, detail, instance=request.url.path, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        return problem(
            500, "internal-error", "Internal error", "unexpected error", instance=request.url.path
        )


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the OpenAPI document declares for ``path``."""
    patterns: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if patterns is None:
        patterns = []
        for template, operations in app.openapi().get("paths", {}).items():
            literal = re.split(r"\{[^}]+\}", template)
            regex = "[^/]+".join(re.escape(part) for part in literal)
            patterns.append((re.compile(f"^{regex}$"), sorted(m.upper() for m in operations)))
        app.state.allowed_methods = patterns
    for pattern, methods in patterns:
        if pattern.match(path):
            return methods
    return []


def install_problem_openapi(app: FastAPI) -> None:
    """Make the OpenAPI document say what the handlers above actually send.

    FastAPI documents every error response as ``application/json`` and adds a 422
    "Validation Error" to each operation; ecswatch sends problems as
    ``application/problem+json`` and validation failures as 400. Operations that
    take parameters or a body all get a documented 400.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _rewrite_problems(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


_UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError")

#: One example per documented problem status, as the handlers above render them.
PROBLEM_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {
        "type": PROBLEM_BASE + "invalid-parameter",
        "title": "Invalid parameter",
        "status": 400,
        "detail": "since: Input should be a valid datetime",
        "instance": "/v1/tasks",
        "param": "since",
    },
    401: {
        "type": PROBLEM_BASE + "unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "a bearer token is required",
        "instance": "/v1/tasks",
    },
    403: {
        "type": PROBLEM_BASE + "forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "this route needs a token with the admin scope",
        "instance": "/v1/webhooks",
    },
    404: {
        "type": PROBLEM_BASE + "not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no such resource",
        "instance": "/v1/tasks/0123456789abcdef0123456789abcdef",
    },
    409: {
        "type": PROBLEM_BASE + "conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "the name matches more than one resource",
        "instance": "/v1/services/prod/web",
    },
    413: {
        "type": PROBLEM_BASE + "payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": "the request body is larger than 65536 bytes",
        "instance": "/v1/webhooks",
    },
}


def _rewrite_problems(schema: dict[str, Any]) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            if ("parameters" in operation or "requestBody" in operation) and "400" not in responses:
                responses["400"] = {
                    "description": "A parameter is invalid; `param` names it.",
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}},
                }
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                content = response.get("content", {})
                if "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
                # Each status shows a problem it really sends, not the Problem
                # model's one example (a 400).
                example = PROBLEM_EXAMPLES.get(int(code))
                if example is not None and PROBLEM_MEDIA_TYPE in content:
                    content[PROBLEM_MEDIA_TYPE]["example"] = example
                if code == "401":
                    response["headers"] = {
                        "WWW-Authenticate": {
                            "description": "Always `Bearer`.",
                            "schema": {"type": "string"},
                        }
                    }
    components = schema.get("components", {}).get("schemas", {})
    for name in _UNUSED_SCHEMAS:
        components.pop(name, None)
