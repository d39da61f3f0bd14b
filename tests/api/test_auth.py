"""Bearer tokens: missing, wrong and read-scoped tokens on every route class."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI

from service.api.app import create_app
from service.api.deps import scope_of
from service.config import ApiToken, load_settings
from service.logging import get_logger
from service.readiness import RoleStatus
from service.runtime import Runtime, open_runtime
from tests.api.conftest import ADMIN, ADMIN_TOKEN, READ, READ_TOKEN

READ_ROUTES = [
    ("GET", "/v1/accounts"),
    ("GET", "/v1/clusters"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/prod/web"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/some-task"),
    ("GET", "/v1/container-instances"),
    ("GET", "/v1/deployments"),
    ("GET", "/v1/deployments/ecs-svc/1"),
    ("GET", "/v1/events"),
    ("GET", "/v1/metrics"),
    ("GET", "/v1/alerts"),
]
ADMIN_ROUTES = [
    ("GET", "/v1/quarantine"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/wh_x"),
    ("DELETE", "/v1/webhooks/wh_x"),
    ("GET", "/v1/webhooks/wh_x/deliveries"),
    ("POST", "/v1/webhooks/wh_x/test"),
    ("POST", "/v1/webhooks/wh_x/rotate-secret"),
]
OPEN_ROUTES = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"]

WEBHOOK_BODY = {"url": "https://93.184.215.14/x", "events": ["deployment.failed"]}


def _template(path: str) -> str:
    replacements = {
        "/prod/web": "/{cluster}/{service}",
        "/some-task": "/{task_id}",
        "/ecs-svc/1": "/{deployment_id}",
        "/wh_x": "/{webhook_id}",
    }
    for concrete, template in replacements.items():
        path = path.replace(concrete, template)
    return path


def test_every_v1_route_is_classified(app: FastAPI) -> None:
    declared = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    classified = {(m, _template(p)) for m, p in READ_ROUTES + ADMIN_ROUTES}
    assert declared == classified


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    body = WEBHOOK_BODY if method == "POST" and path == "/v1/webhooks" else None
    return await client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-configured-token"},
        {"Authorization": f"Basic {READ_TOKEN}"},
        {"Authorization": f"Bearer {READ_TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "basic-scheme", "suffixed", "empty"],
)
async def test_missing_or_wrong_token_is_401(
    anonymous: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path in READ_ROUTES + ADMIN_ROUTES:
        response = await call(anonymous, method, path, headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "https://ecswatch.dev/problems/unauthorized"


async def test_read_token_opens_reads_but_not_admin_routes(anonymous: httpx.AsyncClient) -> None:
    for method, path in READ_ROUTES:
        response = await call(anonymous, method, path, READ)
        assert response.status_code in (200, 404), (method, path)
    for method, path in ADMIN_ROUTES:
        response = await call(anonymous, method, path, READ)
        assert response.status_code == 403, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "https://ecswatch.dev/problems/forbidden"


async def test_admin_token_opens_everything(anonymous: httpx.AsyncClient) -> None:
    for method, path in READ_ROUTES + ADMIN_ROUTES:
        response = await call(anonymous, method, path, ADMIN)
        assert response.status_code in (200, 201, 404), (method, path, response.text)


async def test_open_routes_need_no_token(runtime: Runtime) -> None:
    # Ready (database up, its one role running): every open route answers 200.
    app = create_app(runtime, RoleStatus(running={"api": True}))
    async with _client(app) as anonymous:
        # Tokens are configured here: the routes below are open, not unguarded.
        assert (await anonymous.get("/v1/clusters")).status_code == 401
        for path in OPEN_ROUTES:
            response = await anonymous.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
        docs = await anonymous.get("/docs")
        assert "swagger" in docs.text.lower()
    # Not ready: only /readyz may answer 503, and it still asks for no token.
    app = create_app(runtime, RoleStatus(running={"api": True, "consumer": False}))
    async with _client(app) as anonymous:
        for path in OPEN_ROUTES:
            response = await anonymous.get(path)
            expected = 503 if path == "/readyz" else 200
            assert response.status_code == expected, (path, response.status_code, response.text)
            assert "www-authenticate" not in response.headers, path
        assert (await anonymous.get("/readyz")).json()["status"] == "not_ready"


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_no_tokens_configured_means_no_auth(database_url: str, tmp_path: Path) -> None:
    settings = load_settings(database_url=database_url, data_dir=tmp_path)
    async with open_runtime(settings, pool_size=1) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/v1/clusters")).status_code == 200
            assert (await client.get("/v1/quarantine")).status_code == 200


def test_scope_of_compares_every_token() -> None:
    tokens = (
        ApiToken("read", load_settings(api_tokens=f"read:{READ_TOKEN}").api_tokens[0].token),
        ApiToken("admin", load_settings(api_tokens=f"admin:{ADMIN_TOKEN}").api_tokens[0].token),
    )
    assert scope_of(READ_TOKEN, tokens) == "read"
    assert scope_of(ADMIN_TOKEN, tokens) == "admin"
    assert scope_of("nope", tokens) is None
    assert scope_of("", tokens) is None
    # The same token configured with both scopes grants the wider one.
    both = (tokens[0], ApiToken("admin", tokens[0].token))
    assert scope_of(READ_TOKEN, both) == "admin"


async def test_tokens_never_reach_the_logs(
    anonymous: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # ecswatch logs through structlog, which (unconfigured in-process) prints to
    # stdout and never reaches caplog: capture it explicitly, next to stdlib logs.
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as service_logs:
        # Positive control: the capture really sees ecswatch's own loggers.
        get_logger("service.api.deps").debug("capture_check", value="sentinel-7f3a")
        for headers in (READ, ADMIN, {"Authorization": "Bearer wrong-token-value-123"}):
            for method, path in READ_ROUTES + ADMIN_ROUTES:
                await call(anonymous, method, path, headers)
    logged = caplog.text + "\n".join(repr(entry) for entry in service_logs)
    assert "sentinel-7f3a" in logged
    for secret in (READ_TOKEN, ADMIN_TOKEN, "wrong-token-value-123"):
        assert secret not in logged
