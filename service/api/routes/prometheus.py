"""``GET /metrics``: ecswatch's own Prometheus metrics (no token needed).

Counters are updated where things happen; the outbox gauges describe rows in
the database, which any replica may have written, so they are refreshed from
the database on each scrape instead, as is the age of the newest heartbeat
consumed (service.state.heartbeats).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import get_runtime
from service.logging import get_logger
from service.outbox.models import OutboxItem, OutboxKind, OutboxStatus
from service.runtime import Runtime
from service.state.heartbeats import heartbeat_age_s, scope_heartbeat_ages_s
from service.telemetry import (
    HEARTBEAT_AGE,
    OUTBOX_DEAD,
    OUTBOX_DEPTH,
    OUTBOX_OLDEST_AGE,
    REGISTRY,
    SCOPE_HEARTBEAT_AGE,
)

router = APIRouter(tags=["health"])

log = get_logger(__name__)


async def refresh_outbox_gauges(runtime: Runtime) -> None:
    """Set outbox depth and dead rows by kind, the oldest pending row's age, and
    the heartbeats' ages (ecswatch's own, and each scope's)."""
    stmt = (
        select(
            OutboxItem.kind,
            OutboxItem.status,
            func.count().label("depth"),
            func.extract("epoch", func.now() - func.min(OutboxItem.created_at)).label("age"),
        )
        .where(OutboxItem.status.in_([OutboxStatus.PENDING.value, OutboxStatus.DEAD.value]))
        .group_by(OutboxItem.kind, OutboxItem.status)
    )
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
        age = await heartbeat_age_s(conn)
        scope_ages = await scope_heartbeat_ages_s(conn)
    HEARTBEAT_AGE.set(float("inf") if age is None else age)
    SCOPE_HEARTBEAT_AGE.clear()
    for (account_id, region), scope_age in scope_ages.items():
        SCOPE_HEARTBEAT_AGE.labels(account_id=account_id, region=region).set(scope_age)
    depth = {kind.value: 0 for kind in OutboxKind}
    dead = {kind.value: 0 for kind in OutboxKind}
    oldest = 0.0
    for kind, status, count, age in rows:
        if status == OutboxStatus.DEAD.value:
            dead[kind] = int(count)
            continue
        depth[kind] = int(count)
        oldest = max(oldest, float(age or 0.0))
    for kind, count in depth.items():
        OUTBOX_DEPTH.labels(kind=kind).set(count)
    for kind, count in dead.items():
        OUTBOX_DEAD.labels(kind=kind).set(count)
    OUTBOX_OLDEST_AGE.set(oldest)


@router.get(
    "/metrics",
    summary="Prometheus metrics of ecswatch itself",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"example": 'ecswatch_outbox_depth{kind="webhook"} 0.0\n'}}}
    },
)
async def metrics(request: Request) -> Response:
    try:
        await refresh_outbox_gauges(get_runtime(request))
    except (SQLAlchemyError, OSError) as exc:
        # A scrape must still answer when the database is down: the other
        # metrics are what tells the operator why.
        log.warning("outbox_gauges_stale", error_type=type(exc).__name__)
        # Whatever the last scrape saw is no longer known.
        HEARTBEAT_AGE.set(float("nan"))
        SCOPE_HEARTBEAT_AGE.clear()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
