"""The FastAPI application factory; routes read through the shared runtime."""

from __future__ import annotations

from fastapi import FastAPI

from service.api.errors import install_error_handlers
from service.api.routes import health
from service.roles import RoleStatus
from service.runtime import Runtime


def create_app(runtime: Runtime, roles: RoleStatus | None = None) -> FastAPI:
    """Build the app around an open runtime (the caller owns its lifetime)."""
    app = FastAPI(
        title="ecswatch",
        version="0.1.0",
        summary="Query API over ecswatch's copy of Amazon ECS state",
    )
    app.state.runtime = runtime
    app.state.roles = roles or RoleStatus()
    install_error_handlers(app)
    app.include_router(health.router)
    return app
