"""Hand-made cursors whose values pass the JSON type check but not the database:
a lone surrogate, an integer beyond 64 bits, a time outside what PostgreSQL and
Python can hold. Each is a 400 problem naming ``cursor``, never a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN


def _cursor(route: str, values: list[object]) -> str:
    # json.dumps writes a lone surrogate as the escape "\ud800", as a tamperer would.
    raw = json.dumps({"k": route, "v": values}).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client that sees a 500 as a response, not as the app's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=ADMIN) as c:
        yield c


TAMPERED = [
    # str key parts
    pytest.param("tasks", ["\ud800"], id="tasks-lone-surrogate"),
    pytest.param("clusters", ["arn:\udfff"], id="clusters-lone-surrogate"),
    pytest.param("events", ["2025-03-01T10:00:00+00:00", "\ud83d"], id="events-lone-surrogate"),
    # int key parts (bigint columns)
    pytest.param("quarantine", [10**20], id="quarantine-int-beyond-64-bits"),
    pytest.param("quarantine", [-(10**20)], id="quarantine-negative-int-beyond-64-bits"),
    pytest.param("quarantine", [2**63], id="quarantine-int-just-past-bigint"),
    pytest.param("metrics", ["2025-03-01T10:00:00+00:00", 2**64], id="metrics-int-beyond-64-bits"),
    # time key parts: valid Python datetimes that leave the range once made UTC
    pytest.param("events", ["9999-12-31T23:59:59-10:00", "x"], id="events-after-year-9999"),
    pytest.param("events", ["0001-01-01T00:00:00+10:00", "x"], id="events-before-year-1"),
    pytest.param("deployments", ["9999-12-31T23:59:59-10:00", "x"], id="deployments-after-9999"),
    pytest.param("deployments", ["0001-01-01T00:00:00+10:00", "x"], id="deployments-before-1"),
    pytest.param("metrics", ["0001-01-01T00:00:00+05:00", 1], id="metrics-before-year-1"),
]


@pytest.mark.parametrize(("route", "values"), TAMPERED)
async def test_tampered_cursor_value_is_a_400_naming_the_cursor(
    admin: httpx.AsyncClient, route: str, values: list[object]
) -> None:
    response = await admin.get(f"/v1/{route}", params={"cursor": _cursor(route, values)})
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["param"] == "cursor"


@pytest.mark.parametrize(
    ("route", "values"),
    [
        pytest.param("tasks", ["arn:aws:ecs:us-east-1:1:task/c/\u2603\U0001f600"], id="tasks"),
        pytest.param("quarantine", [2**63 - 1], id="quarantine-max-bigint"),
        pytest.param("quarantine", [-(2**63)], id="quarantine-min-bigint"),
        pytest.param("events", ["9999-12-29T12:00:00-10:00", "x"], id="events-late-but-valid"),
        pytest.param("deployments", ["0001-01-02T00:00:00-10:00", "x"], id="deploy-early-valid"),
        pytest.param("deployments", [None, "x"], id="deployments-no-time"),
    ],
)
async def test_extreme_but_valid_cursor_values_still_page(
    admin: httpx.AsyncClient, route: str, values: list[object]
) -> None:
    # The bounds reject only what the database cannot take, not odd-but-valid keys.
    response = await admin.get(f"/v1/{route}", params={"cursor": _cursor(route, values)})
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.json()["items"] == []
