"""``GET /v1/accounts``: every scope (account, region), watched or seen in events.

A watched scope has a row from the poller's first round (``monitored`` true) with
the time of its last successful reconcile and metrics poll and its last error; a
scope that events come from but ecswatch holds no credentials for is recorded by
the consumer (``monitored`` false). The counts are of resources that exist now,
by the account and region of their ARNs; ``last_heartbeat_at`` is the time of the
newest heartbeat consumed from that scope (docs/api.md, "Accounts").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import ColumnElement, func, select

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    list_page,
)
from service.api.schemas import AccountPage, responses
from service.state import models

router = APIRouter(prefix="/v1", tags=["accounts"], dependencies=[Depends(require_read)])

KEYSET = Keyset("accounts", ("str", "str"))
S = models.ScopeStatus


def _in_scope(arn: Any) -> ColumnElement[bool]:
    """``arn``'s account (5th part) and region (4th) are the scope row's."""
    return (func.split_part(arn, ":", 5) == S.account_id) & (
        func.split_part(arn, ":", 4) == S.region
    )


def _count(table: Any, *where: ColumnElement[bool]) -> Any:
    return (
        select(func.count())
        .select_from(table)
        .where(table.gone_at.is_(None), _in_scope(table.arn), *where)
        .correlate(S)
        .scalar_subquery()
    )


_SELECT = select(
    S.account_id,
    S.region,
    S.monitored,
    S.last_reconcile_at,
    S.last_metrics_at,
    S.last_error,
    S.last_error_at,
    _count(models.Cluster).label("clusters_count"),
    _count(models.Service, func.coalesce(models.Service.status, "ACTIVE") != "INACTIVE").label(
        "services_count"
    ),
    _count(models.Task, models.Task.last_status == "RUNNING").label("running_tasks_count"),
    # The scope's own heartbeat (service.poller.heartbeat): the row "<account>/<region>".
    select(models.Heartbeat.last_at)
    .where(models.Heartbeat.scope == S.account_id + "/" + S.region)
    .correlate(S)
    .scalar_subquery()
    .label("last_heartbeat_at"),
)

LIST: ListRoute[tuple[()]] = ListRoute(
    KEYSET, AccountPage, _SELECT, [(S.account_id, False), (S.region, False)]
)


@router.get(
    "/accounts",
    summary="List accounts and regions",
    description=(
        "Every scope (account, region): those ecswatch watches, with their last successful"
        " reconcile and metrics poll and their last error, and those only seen in events"
        " (`monitored: false`). Ordered by account, then region."
    ),
    response_model=AccountPage,
    responses=responses(AccountPage),
)
async def list_accounts(
    conn: ReadConnection,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    return await list_page(conn, LIST, (), {}, limit=limit, cursor=cursor)
