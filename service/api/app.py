"""The FastAPI application factory; routes read through the shared runtime."""

from __future__ import annotations

from fastapi import FastAPI

from service.api.docs import install_docs
from service.api.errors import install_error_handlers, install_problem_openapi
from service.api.limits import EdgeLimits
from service.api.routes import (
    accounts,
    alerts,
    clusters,
    container_instances,
    deployments,
    events,
    health,
    metrics,
    prometheus,
    quarantine,
    services,
    tasks,
    webhooks,
)
from service.readiness import RoleStatus
from service.runtime import Runtime

DESCRIPTION = """\
Clusters, services, tasks, container instances and deployments as ecswatch last
saw them, the EventBridge events and CloudWatch datapoints it stored, the alerts
it raised and the webhook subscriptions that receive them.

* **Authentication**: `Authorization: Bearer <token>` with a token from
  `ECSWATCH_API_TOKENS`; `read` opens every GET route, `admin` also opens
  webhooks and `/v1/quarantine`. `/healthz`, `/readyz`, `/metrics`,
  `/openapi.json`, `/docs` and `/redoc` are open.
* **Lists** take `limit` (1-500, default 100) and `cursor`, and answer
  `{"items": [...], "next_cursor": ...}`; pass `next_cursor` back as `cursor`
  until it is null.
* **Errors** are `application/problem+json` (RFC 9457); a bad parameter is a 400
  whose `param` names it.
* **Times** are RFC 3339 in UTC.
"""

OPENAPI_TAGS = [
    {"name": "accounts", "description": "Watched accounts and regions, and their status."},
    {"name": "clusters", "description": "ECS clusters."},
    {"name": "services", "description": "ECS services and their recent deployments."},
    {"name": "tasks", "description": "ECS tasks and their containers."},
    {"name": "container instances", "description": "EC2 and external instances."},
    {"name": "deployments", "description": "Deployments and their outcomes."},
    {"name": "events", "description": "Stored EventBridge events."},
    {"name": "metrics", "description": "Stored CloudWatch datapoints."},
    {"name": "alerts", "description": "Alerts raised and their delivery state."},
    {"name": "webhooks", "description": "Webhook subscriptions (admin scope)."},
    {"name": "quarantine", "description": "Messages that could not be processed (admin scope)."},
    {"name": "health", "description": "Probes and Prometheus metrics (no token)."},
]


def create_app(
    runtime: Runtime, roles: RoleStatus | None = None, *, serve_metrics: bool = True
) -> FastAPI:
    """Build the app around an open runtime (the caller owns its lifetime).

    ``serve_metrics=False`` leaves ``/metrics`` out, for when :func:`create_metrics_app`
    serves it on a port of its own (``ECSWATCH_METRICS_PORT``).
    """
    docs = runtime.settings.api_docs
    app = FastAPI(
        title="ecswatch",
        version="0.1.0",
        summary="Query API over ecswatch's copy of Amazon ECS state",
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        openapi_url="/openapi.json" if docs else None,
        # FastAPI's own pages load their files from a CDN: service.api.docs serves them.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.roles = roles or RoleStatus()
    install_error_handlers(app)
    install_edge_limits(app, runtime)
    app.include_router(health.router)
    if serve_metrics:
        app.include_router(prometheus.router)
    for module in (
        accounts,
        clusters,
        services,
        tasks,
        container_instances,
        deployments,
        events,
        metrics,
        alerts,
        quarantine,
        webhooks,
    ):
        app.include_router(module.router)
    install_problem_openapi(app)
    if docs:
        install_docs(app)
    return app


def install_edge_limits(app: FastAPI, runtime: Runtime) -> None:
    """Authenticate body-carrying requests and bound bodies before any route reads
    them (:mod:`service.api.limits`)."""
    app.add_middleware(EdgeLimits, settings=lambda: runtime.settings)


def create_metrics_app(runtime: Runtime) -> FastAPI:
    """``/metrics`` alone, for its own port: scrapers reach it, the load balancer does not."""
    app = FastAPI(title="ecswatch metrics", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    install_error_handlers(app)
    install_edge_limits(app, runtime)
    app.include_router(prometheus.router)
    return app
