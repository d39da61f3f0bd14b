"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["health"])


_READY = {"status": "ready", "checks": {"database": "ok", "roles": {"api": "running"}}}


@router.get(
    "/healthz",
    summary="Liveness: the process is up",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and every selected role running",
    responses={
        200: {
            "description": "Ready",
            "content": {"application/json": {"example": _READY}},
        },
        # The 503 body has the same shape, e.g. {"status": "not_ready", "checks":
        # {"database": "unreachable: OSError", ...}}; documented in docs/api.md.
        503: {"description": "Not ready; the body says which check failed"},
    },
)
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with request.app.state.runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready", with the reason
        checks["database"] = f"unreachable: {type(exc).__name__}"
    roles = request.app.state.roles
    checks["roles"] = roles.snapshot()
    ready = checks["database"] == "ok" and roles.all_running()
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
