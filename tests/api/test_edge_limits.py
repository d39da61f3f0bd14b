"""Nothing unbounded before authentication: the body limit, the token checked before
the body is read, repeated filters capped, cursors of any shape refused cleanly,
and uvicorn's concurrency limit.

The "not read" checks drive the app over ASGI directly, with a ``receive`` that
records every call: the ASGI server hands a body to the app only through it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from service.api.pagination import Keyset
from service.api.queries import MAX_TAG_FILTERS
from service.config import Settings
from service.errors import InvalidInputError
from service.readiness import RoleStatus
from service.roles.api import serve_api
from service.runtime import Runtime, open_runtime
from tests.api.conftest import ADMIN, ADMIN_TOKEN, READ

BIG = 20 * 1024 * 1024


class Wire:
    """One request over ASGI: the body in chunks, and what the app read and answered."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.received = 0  # how many times the app asked for the body
        self.bytes_read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if self.received > len(self.chunks):
            await asyncio.sleep(3600)  # as a server does while the client sends nothing
        chunk = self.chunks[self.received - 1]
        self.bytes_read += len(chunk)
        return {
            "type": "http.request",
            "body": chunk,
            "more_body": self.received < len(self.chunks),
        }

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return int(start["status"])

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode().lower(): v.decode() for k, v in start["headers"]}

    @property
    def json(self) -> Any:
        return json.loads(
            b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        )


async def call(app: FastAPI, method: str, path: str, wire: Wire, headers: dict[str, str]) -> Wire:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("api", 80),
    }
    await asyncio.wait_for(app(scope, wire.receive, wire.send), 30)
    return wire


def _problem(wire: Wire, status: int) -> dict[str, Any]:
    assert wire.status == status, wire.sent
    assert wire.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = wire.json
    assert body["status"] == status
    return body


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong-token-0123456789abcdef"}, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {ADMIN_TOKEN}"}, id="not-bearer"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/webhooks"), ("DELETE", "/v1/webhooks/wh_1")]
)
async def test_a_body_route_without_a_valid_token_is_401_before_the_body_is_read(
    app: FastAPI, headers: dict[str, str], method: str, path: str
) -> None:
    wire = Wire([b"x" * 65_536] * (BIG // 65_536))
    headers = {**headers, "content-type": "application/json", "content-length": str(BIG)}
    await call(app, method, path, wire, headers)
    body = _problem(wire, 401)
    assert body["type"].endswith("/unauthorized")
    assert wire.headers["www-authenticate"] == "Bearer"
    assert wire.received == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "/healthz", 405), ("POST", "/v1/clusters", 405), ("POST", "/v1/nothing", 404)],
)
async def test_no_route_for_the_method_is_still_404_or_405_and_reads_nothing(
    app: FastAPI, method: str, path: str, status: int
) -> None:
    wire = Wire([b"x" * 65_536] * 4)
    await call(app, method, path, wire, {"content-length": str(4 * 65_536)})
    _problem(wire, status)
    assert wire.received == 0


async def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(
    app: FastAPI, settings: Settings
) -> None:
    assert settings.api_max_body_bytes == 65_536
    wire = Wire([b"{" * 1024] * 100)
    headers = {**ADMIN, "content-type": "application/json", "content-length": "65537"}
    await call(app, "POST", "/v1/webhooks", wire, headers)
    body = _problem(wire, 413)
    assert body["type"].endswith("/payload-too-large")
    assert wire.received == 0


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(app: FastAPI) -> None:
    # Chunked: no Content-Length, so the bytes are counted as they come.
    wire = Wire([b"[" * 8192] * (BIG // 8192))
    headers = {**ADMIN, "content-type": "application/json", "transfer-encoding": "chunked"}
    await call(app, "POST", "/v1/webhooks", wire, headers)
    _problem(wire, 413)
    assert wire.bytes_read <= 65_536 + 8192


async def test_a_body_within_the_limit_reaches_the_route(app: FastAPI) -> None:
    # Split in chunks and without a length: the route gets the whole body, replayed.
    body = json.dumps({"url": "ftp://example.com/x", "events": ["deployment.failed"]}).encode()
    wire = Wire([body[:10], body[10:]])
    await call(app, "POST", "/v1/webhooks", wire, {**ADMIN, "content-type": "application/json"})
    problem = _problem(wire, 400)
    assert problem["param"] == "url"  # the route's own validation ran on the whole body


async def test_a_read_token_passes_the_edge_and_the_route_says_403(app: FastAPI) -> None:
    wire = Wire([b"{}"])
    await call(app, "POST", "/v1/webhooks", wire, {**READ, "content-type": "application/json"})
    _problem(wire, 403)


async def test_a_malformed_content_length_is_400(app: FastAPI) -> None:
    wire = Wire([b"{}"])
    await call(app, "POST", "/v1/webhooks", wire, {**ADMIN, "content-length": "12abc"})
    _problem(wire, 400)
    assert wire.received == 0


async def test_anonymous_20_mb_post_over_http_is_401(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.post(
        "/v1/webhooks", content=b"{" * BIG, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


# ---------------------------------------------------------------- filters and cursors


async def test_tag_filters_are_capped(client: httpx.AsyncClient) -> None:
    tags = [("tag", f"k{i}:v") for i in range(MAX_TAG_FILTERS)]
    assert (await client.get("/v1/services", params=tags)).status_code == 200
    for route in ("/v1/services", "/v1/tasks"):
        response = await client.get(route, params=[*tags, ("tag", "one:more")])
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["param"] == "tag"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client that sees a 500 as a response, not as the app's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=ADMIN) as c:
        yield c


MALFORMED = [
    pytest.param(_b64(b"[" * 1500), id="1500-nested-brackets"),
    pytest.param(_b64(b'{"k": "tasks", "v": ' + b"[" * 1400 + b"]" * 1400 + b"}"), id="deep-v"),
    pytest.param(_b64(b"{" * 1500), id="1500-nested-braces"),
    pytest.param(_b64(b"\xff\xfe" * 100), id="not-utf8"),
    pytest.param("!!!not-base64!!!", id="not-base64"),
    pytest.param("A", id="one-char"),
    pytest.param(_b64(b"1" * 5000), id="huge-number"),
    pytest.param("x" * 60_000, id="huge"),
]


@pytest.mark.parametrize("cursor", MALFORMED)
@pytest.mark.parametrize("route", ["tasks", "events", "quarantine"])
async def test_a_malformed_cursor_of_any_shape_is_a_400(
    admin: httpx.AsyncClient, route: str, cursor: str
) -> None:
    response = await admin.get(f"/v1/{route}", params={"cursor": cursor})
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["param"] == "cursor"


@pytest.mark.parametrize("cursor", MALFORMED)
def test_keyset_decode_refuses_every_malformed_cursor(cursor: str) -> None:
    # The route's parameter check aside: decode() is the guard for any caller.
    with pytest.raises(InvalidInputError):
        Keyset("tasks", ("str",)).decode(cursor)


# ---------------------------------------------------------------- uvicorn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connections_past_the_concurrency_limit_get_503(settings: Settings) -> None:
    limited = settings.model_copy(update={"api_limit_concurrency": 10})
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with open_runtime(limited, pool_size=2) as runtime:
        serving = asyncio.create_task(
            serve_api(runtime, stop, host="127.0.0.1", port=0, roles=RoleStatus(), started=started)
        )
        port = await asyncio.wait_for(started, 30)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                refused = await http.get(f"http://127.0.0.1:{port}/healthz")
            assert refused.status_code == 503
            for _, writer in idle[:5]:
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.2)  # the server sees the closes on its next loop turns
            async with httpx.AsyncClient(trust_env=False) as http:
                served = await http.get(f"http://127.0.0.1:{port}/healthz")
            assert served.status_code == 200
        finally:
            for _, writer in idle[5:]:
                writer.close()
            stop.set()
            await serving


async def test_metrics_on_their_own_port_and_not_on_the_api_port(settings: Settings) -> None:
    metrics_port = _free_port()
    separate = settings.model_copy(update={"metrics_port": metrics_port})
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with open_runtime(separate, pool_size=2) as runtime:
        serving = asyncio.create_task(
            serve_api(runtime, stop, host="127.0.0.1", port=0, roles=RoleStatus(), started=started)
        )
        try:
            port = await asyncio.wait_for(started, 30)
            async with httpx.AsyncClient(trust_env=False) as http:
                on_api = await http.get(f"http://127.0.0.1:{port}/metrics")
                on_metrics = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
                api_only = await http.get(f"http://127.0.0.1:{metrics_port}/v1/clusters")
                health = await http.get(f"http://127.0.0.1:{port}/healthz")
        finally:
            stop.set()
            await serving
    assert on_api.status_code == 404
    assert on_metrics.status_code == 200
    assert "ecswatch_outbox_depth" in on_metrics.text
    assert api_only.status_code == 404
    assert health.status_code == 200


async def test_metrics_stay_on_the_api_port_by_default(runtime: Runtime) -> None:
    assert runtime.settings.metrics_port is None
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve_api(runtime, stop, host="127.0.0.1", port=0, roles=RoleStatus(), started=started)
    )
    try:
        port = await asyncio.wait_for(started, 30)
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        await serving
    assert response.status_code == 200


async def test_a_get_with_an_oversized_body_is_413_too(app: FastAPI) -> None:
    wire = Wire([b"x" * 65_536] * 4)
    await call(app, "GET", "/v1/clusters", wire, {**READ, "content-length": str(4 * 65_536)})
    _problem(wire, 413)
    assert wire.received == 0
