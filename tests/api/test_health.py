"""Health probes through the ASGI app on the real test database."""

from __future__ import annotations

import httpx

from service.api.app import create_app
from service.readiness import RoleStatus
from service.runtime import Runtime


async def test_readyz_reports_database_and_roles(runtime: Runtime) -> None:
    roles = RoleStatus(running={"api": True, "consumer": False})
    app = create_app(runtime, roles)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["roles"] == {"api": "running", "consumer": "stopped"}
        roles.running["consumer"] = True
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "roles": {"api": "running", "consumer": "running"}},
        }


async def test_unknown_route_is_problem_json(runtime: Runtime) -> None:
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://ecswatch.dev/problems/not-found"
