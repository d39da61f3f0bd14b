"""``GET /v1/metrics``: stored CloudWatch datapoints, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import ColumnElement, select

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
    ServiceParam,
    SinceParam,
    UntilParam,
    cluster_name_of_arn,
    fetch_dicts,
    is_arn,
    jsonb_object,
    parse_time,
    service_names_of_arn,
)
from service.api.schemas import NO_NUL, MetricPage, MetricPoint, responses
from service.errors import InvalidInputError
from service.state import models

router = APIRouter(prefix="/v1", tags=["metrics"], dependencies=[Depends(require_read)])

# (timestamp DESC, id DESC) is ix_metric_points_time_id; points are immutable.
KEYSET = Keyset("metrics", ("time", "int"))

M = models.MetricPoint

_COLUMNS = (
    M.id,
    M.namespace,
    M.name,
    M.statistic,
    M.unit,
    M.cluster_name.label("cluster"),
    M.service_name.label("service"),
    M.dimensions,
    M.timestamp,
    M.value,
)


def _cluster(value: str) -> ColumnElement[bool]:
    # Metric points carry CloudWatch dimensions, i.e. names; an ARN is reduced to its name.
    if not is_arn(value):
        return M.cluster_name == value
    name = cluster_name_of_arn(value)
    if name is None:
        raise InvalidInputError(f"not a cluster ARN: {value!r}", param="cluster")
    return M.cluster_name == name


def _service(value: str) -> ColumnElement[bool]:
    if not is_arn(value):
        return M.service_name == value
    names = service_names_of_arn(value)
    if names is None:
        raise InvalidInputError(f"not a service ARN: {value!r}", param="service")
    cluster, service = names
    if cluster is None:
        return M.service_name == service
    return (M.service_name == service) & (M.cluster_name == cluster)


@router.get(
    "/metrics",
    summary="List metric points",
    description=(
        "CloudWatch datapoints ecswatch polled, newest `timestamp` first. `name` is the "
        "CloudWatch metric name (e.g. `CPUUtilization`); `since`/`until` (RFC 3339) bound "
        "`timestamp`, both inclusive."
    ),
    responses=responses(MetricPage),
)
async def list_metrics(
    conn: ReadConnection,
    namespace: Annotated[
        str | None,
        Query(description="e.g. AWS/ECS or ECS/ContainerInsights.", max_length=256, pattern=NO_NUL),
    ] = None,
    name: Annotated[
        str | None, Query(description="e.g. CPUUtilization.", max_length=256, pattern=NO_NUL)
    ] = None,
    statistic: Annotated[
        str | None, Query(description="e.g. Average.", max_length=64, pattern=NO_NUL)
    ] = None,
    cluster: ClusterParam = None,
    service: ServiceParam = None,
    since: SinceParam = None,
    until: UntilParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> MetricPage:
    after_key = KEYSET.decode(cursor)
    since_at = parse_time(since, param="since")
    until_at = parse_time(until, param="until")
    stmt = select(*_COLUMNS).order_by(M.timestamp.desc(), M.id.desc()).limit(fetch(limit + 1))
    if namespace is not None:
        stmt = stmt.where(M.namespace == namespace)
    if name is not None:
        stmt = stmt.where(M.name == name)
    if statistic is not None:
        stmt = stmt.where(M.statistic == statistic)
    if cluster is not None:
        stmt = stmt.where(_cluster(cluster))
    if service is not None:
        stmt = stmt.where(_service(service))
    if since_at is not None:
        stmt = stmt.where(M.timestamp >= since_at)
    if until_at is not None:
        stmt = stmt.where(M.timestamp <= until_at)
    if after_key is not None:
        stmt = stmt.where(after([(M.timestamp, True), (M.id, True)], after_key))
    rows = await fetch_dicts(conn, stmt)
    items = [
        MetricPoint.model_validate({**row, "dimensions": jsonb_object(row["dimensions"])})
        for row in rows[:limit]
    ]
    return MetricPage(
        items=items,
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["timestamp"], row["id"])),
    )
