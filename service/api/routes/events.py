"""``GET /v1/events``: stored EventBridge events, newest ``time`` first."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement, bindparam, select

from service.api.deps import CallerScope, ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    list_page,
)
from service.api.queries import (
    ClusterParam,
    SinceParam,
    UntilParam,
    inline_json,
    inline_time,
    is_arn,
    jsonb_list,
    jsonb_object,
    parse_time,
)
from service.api.schemas import NO_NUL, EventPage, responses
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


def _where(shape: Shape) -> list[ColumnElement[bool]]:
    """The /v1/events filters of ``shape``; values are bound at execution."""
    filters: list[ColumnElement[bool]] = []
    if shape.detail_type:
        filters.append(E.detail_type == bindparam("detail_type"))
    if shape.cluster == "name":
        filters.append(E.cluster_name == bindparam("cluster"))
    elif shape.cluster == "arn":
        filters.append(E.cluster_arn == bindparam("cluster"))
    if shape.resource:
        # resources @> '["arn"]', served by the GIN index on resources.
        filters.append(E.resources.contains(inline_json(None, name="resource")))
    if shape.since:
        filters.append(E.time >= inline_time("since"))
    if shape.until:
        filters.append(E.time <= inline_time("until"))
    return filters


LIST = ListRoute(KEYSET, EventPage, select(*_COLUMNS), [(E.time, True), (E.id, True)], _where)


def _item(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "resources": jsonb_list(row["resources"]), "detail": jsonb_object(row["detail"])}


#: What a masked environment value reads as.
MASKED = "***"


def mask_environment(detail: dict[str, Any]) -> dict[str, Any]:
    """``detail`` with every ``overrides.containerOverrides[].environment[].value``
    replaced by :data:`MASKED` (names stay). People pass secrets to tasks this way
    (``RunTask --overrides``), and the read scope must not reveal them. The stored
    detail is not changed: the parts on the way to a value are copied.
    """
    overrides = detail.get("overrides")
    if not isinstance(overrides, dict):
        return detail
    containers = overrides.get("containerOverrides")
    if not isinstance(containers, list):
        return detail
    masked_containers: list[Any] = []
    for container in containers:
        environment = container.get("environment") if isinstance(container, dict) else None
        if not isinstance(environment, list):
            masked_containers.append(container)
            continue
        masked_environment = [
            {**entry, "value": MASKED} if isinstance(entry, dict) and "value" in entry else entry
            for entry in environment
        ]
        masked_containers.append({**container, "environment": masked_environment})
    return {**detail, "overrides": {**overrides, "containerOverrides": masked_containers}}


def _masked_item(row: dict[str, Any]) -> dict[str, Any]:
    item = _item(row)
    item["detail"] = mask_environment(item["detail"])
    return item


@router.get(
    "/events",
    summary="List stored events",
    description=(
        "Events as received, newest `time` first. `resource` keeps events whose "
        "`resources` contain that ARN; `since` and `until` (RFC 3339) bound `time`, "
        "both inclusive. For a `read` token, the values of environment variables in "
        "`detail.overrides.containerOverrides` read `***`; an `admin` token sees them."
    ),
    response_model=EventPage,
    responses=responses(EventPage),
)
async def list_events(
    conn: ReadConnection,
    scope: CallerScope,
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
) -> Response:
    since_at = parse_time(since, param="since")
    until_at = parse_time(until, param="until")
    params: dict[str, Any] = {
        "detail_type": detail_type,
        "cluster": cluster,
        "resource": json.dumps([resource]),
        "since": since_at.isoformat() if since_at else None,
        "until": until_at.isoformat() if until_at else None,
    }
    shape = Shape(
        detail_type=detail_type is not None,
        cluster=None if cluster is None else "arn" if is_arn(cluster) else "name",
        resource=resource is not None,
        since=since_at is not None,
        until=until_at is not None,
    )
    # Environment values in container overrides are for the admin scope only.
    item = _item if scope == "admin" else _masked_item
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor, item=item)
