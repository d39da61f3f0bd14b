"""``GET /v1/alerts``: alerts raised, newest first, with their delivery counts.

Deliveries are counted per (alert, subscription) pair, by the pair's current
state: the latest attempt in ``webhook_deliveries`` decides (2xx: delivered;
otherwise pending while ``next_attempt_at`` is set, failed once no retry is
scheduled), and a pending ``webhook`` outbox row whose pair has no attempt yet
counts as pending. The counts of a whole page come from one aggregate
statement over the page's alert ids, never one query per alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from service.alerts import models
from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    fetch_page,
    page_response,
)
from service.api.queries import AccountParam, RegionParam, bind_scope
from service.api.schemas import AlertPage, responses
from service.outbox.models import OutboxItem, OutboxKind, OutboxStatus

router = APIRouter(prefix="/v1", tags=["alerts"], dependencies=[Depends(require_read)])

# (created_at DESC, id DESC) is ix_alerts_created_at_id; alerts are never updated.
KEYSET = Keyset("alerts", ("time", "str"))

A = models.Alert
WD = models.WebhookDelivery

_COLUMNS = (
    A.id,
    A.type,
    A.cluster_name.label("cluster"),
    A.service_name.label("service"),
    A.deployment_id,
    A.summary,
    A.created_at,
    # Where the alert's resource is (the alert body's fields; null when unknown).
    A.payload["account_id"].astext.label("account_id"),
    A.payload["region"].astext.label("region"),
)


def _where(shape: tuple[bool, bool]) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if shape[0]:
        filters.append(A.payload["account_id"].astext == bindparam("account_id"))
    if shape[1]:
        filters.append(A.payload["region"].astext == bindparam("region"))
    return filters


LIST: ListRoute[tuple[bool, bool]] = ListRoute(
    KEYSET, AlertPage, select(*_COLUMNS), [(A.created_at, True), (A.id, True)], _where
)


async def delivery_counts(
    conn: AsyncConnection, alert_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """``{alert_id: {"pending", "delivered", "failed"}}`` for ``alert_ids``, in one statement."""
    counts = {alert_id: {"pending": 0, "delivered": 0, "failed": 0} for alert_id in alert_ids}
    if not alert_ids:
        return counts
    latest = (
        select(WD.alert_id, WD.webhook_id, WD.status_code, WD.next_attempt_at)
        .where(WD.alert_id.in_(alert_ids))
        .ext(distinct_on(WD.alert_id, WD.webhook_id))
        .order_by(WD.alert_id, WD.webhook_id, WD.attempt.desc(), WD.id.desc())
        .subquery()
    )
    ok = func.coalesce(latest.c.status_code.between(200, 299), False)
    attempted = select(
        latest.c.alert_id,
        func.count().filter(ok).label("delivered"),
        func.count().filter(~ok, latest.c.next_attempt_at.is_not(None)).label("pending"),
        func.count().filter(~ok, latest.c.next_attempt_at.is_(None)).label("failed"),
    ).group_by(latest.c.alert_id)
    queued_alert = OutboxItem.payload["alert_id"].astext
    queued_webhook = OutboxItem.payload["webhook_id"].astext
    queued = (
        select(
            queued_alert.label("alert_id"),
            cast(literal(0), Integer).label("delivered"),
            func.count().label("pending"),
            cast(literal(0), Integer).label("failed"),
        )
        .where(
            OutboxItem.status == OutboxStatus.PENDING.value,
            OutboxItem.kind == OutboxKind.WEBHOOK.value,
            queued_alert.in_(alert_ids),
            ~exists(
                select(WD.id).where(
                    and_(WD.alert_id == queued_alert, WD.webhook_id == queued_webhook)
                )
            ),
        )
        .group_by(queued_alert)
    )
    result = await conn.execute(union_all(attempted, queued))
    for row in result.mappings():
        bucket = counts.get(row["alert_id"])
        if bucket is not None:
            for state in ("pending", "delivered", "failed"):
                bucket[state] += int(row[state])
    return counts


@router.get(
    "/alerts",
    summary="List alerts",
    description=(
        "Alerts ecswatch raised, newest first. `deliveries` counts webhook "
        "subscriptions by the state of their delivery of this alert. See docs/alerts.md "
        "for the alert types and when each is raised."
    ),
    response_model=AlertPage,
    responses=responses(AlertPage),
)
async def list_alerts(
    conn: ReadConnection,
    account_id: AccountParam = None,
    region: RegionParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    params: dict[str, Any] = {}
    shape = bind_scope(account_id, region, params)
    page, next_page = await fetch_page(conn, LIST, shape, params, limit=limit, cursor=cursor)
    counts = await delivery_counts(conn, [row["id"] for row in page])
    items = [{**row, "deliveries": counts[row["id"]]} for row in page]
    return page_response(LIST, items, next_page)
