"""The API's reads survive a dropped pooled connection without a pre-ping per request.

The API reads through an engine that does not pre-ping each checkout; a
connection dropped since its last use fails its first statement and the read is
retried once on a fresh connection. The database sits behind a TCP proxy that
cuts every connection (stubbing at the wire), as a restart would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from service.api.app import create_app
from service.config import load_settings
from service.runtime import Runtime, open_runtime
from tests.api import seed
from tests.api.conftest import READ, READ_TOKEN
from tests.rig.tcp_proxy import TcpProxy


@pytest.fixture
async def proxied(
    database_url: str, db_proxy: TcpProxy, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    url = make_url(database_url).set(host="127.0.0.1", port=db_proxy.port)
    settings = load_settings(
        database_url=url.render_as_string(hide_password=False),
        data_dir=tmp_path / "data",
        api_tokens=f"read:{READ_TOKEN}",
    )
    async with open_runtime(settings, pool_size=2) as runtime:
        # A 500 is answered as a problem, not raised into the test.
        transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=READ
        ) as client:
            yield runtime, client


async def test_a_dropped_connection_is_retried_once(
    proxied: tuple[Runtime, httpx.AsyncClient], db_proxy: TcpProxy, engine: object
) -> None:
    runtime, client = proxied
    assert runtime.read_engine.pool._pre_ping is False  # type: ignore[attr-defined]
    await seed.insert_rows(runtime.engine, "clusters", [seed.cluster("prod")])
    for path in ("/v1/clusters", "/v1/tasks?cluster=prod", "/v1/tasks/nope"):
        first = await client.get(path)
        assert first.status_code in (200, 404), first.text
        db_proxy.cut()  # every pooled connection dies, as in a database restart
        db_proxy.restore()
        again = await client.get(path)
        assert again.status_code == first.status_code, (path, again.text)
        assert again.json() == first.json()
    names = [c["name"] for c in (await client.get("/v1/clusters")).json()["items"]]
    assert names == ["prod"]


async def test_a_database_that_stays_down_is_a_problem(
    proxied: tuple[Runtime, httpx.AsyncClient], db_proxy: TcpProxy
) -> None:
    _, client = proxied
    assert (await client.get("/v1/clusters")).status_code == 200
    db_proxy.cut()
    response = await client.get("/v1/clusters")
    # As before the read engine (the retry fails too): 500, unexpected error.
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    db_proxy.restore()
    assert (await client.get("/v1/clusters")).status_code == 200
