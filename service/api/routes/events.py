"""``GET /v1/events``: stored EventBridge events, newest ``time`` first."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Select, bindparam, select

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    after,
    fetch,
    next_cursor,
)
from service.api.queries import (
    ClusterParam,
    SinceParam,
    UntilParam,
    fetch_dicts,
    inline_json,
    inline_time,
    is_arn,
    jsonb_list,
    jsonb_object,
    parse_time,
)
from service.api.schemas import NO_NUL, Event, EventPage, responses
from service.state import models

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Depends(require_read)])

# (time DESC, id DESC) is ix_raw_events_time_id; the event time never changes.
KEYSET = Keyset("events", ("time", "str"))

E = models.RawEvent

_COLUMNS = (
    E.id,
    E.detail_type,
    E.source,
    E.account,
    E.region,
    E.time,
    E.resources,
    E.detail,
    E.received_at,
)


class Shape(NamedTuple):
    """Which filters a /v1/events request uses; one reusable statement per shape.

    (Reusing a statement lets SQLAlchemy find its compiled form through a
    memoised cache key instead of walking a new statement tree per request.)
    """

    detail_type: bool
    cluster: Literal["name", "arn"] | None
    resource: bool
    since: bool
    until: bool
    after: bool


@functools.lru_cache(maxsize=128)
def list_statement(shape: Shape) -> Select[*tuple[Any, ...]]:
    """The /v1/events statement of ``shape``; values are bound at execution."""
    stmt = select(*_COLUMNS).order_by(E.time.desc(), E.id.desc()).limit(fetch())
    if shape.detail_type:
        stmt = stmt.where(E.detail_type == bindparam("detail_type"))
    if shape.cluster == "name":
        stmt = stmt.where(E.cluster_name == bindparam("cluster"))
    elif shape.cluster == "arn":
        stmt = stmt.where(E.cluster_arn == bindparam("cluster"))
    if shape.resource:
        # resources @> '["arn"]', served by the GIN index on resources.
        stmt = stmt.where(E.resources.contains(inline_json(None, name="resource")))
    if shape.since:
        stmt = stmt.where(E.time >= inline_time("since"))
    if shape.until:
        stmt = stmt.where(E.time <= inline_time("until"))
    if shape.after:
        bound: tuple[Any, ...] = (
            bindparam("after_time", type_=E.time.type),
            bindparam("after_id", type_=E.id.type),
        )
        stmt = stmt.where(after([(E.time, True), (E.id, True)], bound))
    return stmt


@router.get(
    "/events",
    summary="List stored events",
    description=(
        "Events as received, newest `time` first. `resource` keeps events whose "
        "`resources` contain that ARN; `since` and `until` (RFC 3339) bound `time`, "
        "both inclusive."
    ),
    responses=responses(EventPage),
)
async def list_events(
    conn: ReadConnection,
    detail_type: Annotated[
        str | None, Query(description="EventBridge detail-type.", max_length=256, pattern=NO_NUL)
    ] = None,
    cluster: ClusterParam = None,
    resource: Annotated[
        str | None,
        Query(
            description="An ARN listed in the event's resources.", max_length=2048, pattern=NO_NUL
        ),
    ] = None,
    since: SinceParam = None,
    until: UntilParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> EventPage:
    after_key = KEYSET.decode(cursor)
    since_at = parse_time(since, param="since")
    until_at = parse_time(until, param="until")
    params: dict[str, Any] = {
        "fetch_rows": limit + 1,
        "detail_type": detail_type,
        "cluster": cluster,
        "resource": json.dumps([resource]),
        "since": since_at.isoformat() if since_at else None,
        "until": until_at.isoformat() if until_at else None,
    }
    if after_key is not None:
        params["after_time"], params["after_id"] = after_key
    shape = Shape(
        detail_type=detail_type is not None,
        cluster=None if cluster is None else "arn" if is_arn(cluster) else "name",
        resource=resource is not None,
        since=since_at is not None,
        until=until_at is not None,
        after=after_key is not None,
    )
    rows = await fetch_dicts(conn, list_statement(shape), params)
    items = [
        Event.model_validate(
            {
                **row,
                "resources": jsonb_list(row["resources"]),
                "detail": jsonb_object(row["detail"]),
            }
        )
        for row in rows[:limit]
    ]
    return EventPage(
        items=items,
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["time"], row["id"])),
    )
