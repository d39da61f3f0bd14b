"""``GET /v1/metrics``: stored CloudWatch datapoints, newest first."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement, bindparam, select

from service.api.deps import ReadConnection, require_read
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
    ServiceParam,
    SinceParam,
    UntilParam,
    cluster_name_of_arn,
    is_arn,
    jsonb_object,
    parse_time,
    service_names_of_arn,
)
from service.api.schemas import NO_NUL, MetricPage, responses
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


def _bind_cluster(value: str, params: dict[str, Any]) -> None:
    # Metric points carry CloudWatch dimensions, i.e. names; an ARN is reduced to its name.
    if not is_arn(value):
        params["cluster"] = value
        return
    name = cluster_name_of_arn(value)
    if name is None:
        raise InvalidInputError(f"not a cluster ARN: {value!r}", param="cluster")
    params["cluster"] = name


def _bind_service(value: str, params: dict[str, Any]) -> Literal["name", "name+cluster"]:
    if not is_arn(value):
        params["service"] = value
        return "name"
    names = service_names_of_arn(value)
    if names is None:
        raise InvalidInputError(f"not a service ARN: {value!r}", param="service")
    cluster, params["service"] = names
    if cluster is None:
        return "name"
    params["service_cluster"] = cluster
    return "name+cluster"


class Shape(NamedTuple):
    """Which filters a /v1/metrics request uses (see ListRoute)."""

    namespace: bool
    name: bool
    statistic: bool
    cluster: bool
    service: Literal["name", "name+cluster"] | None
    since: bool
    until: bool


def _where(shape: Shape) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    for used, column in (
        (shape.namespace, M.namespace),
        (shape.name, M.name),
        (shape.statistic, M.statistic),
    ):
        if used:
            filters.append(column == bindparam(column.key))
    if shape.cluster:
        filters.append(M.cluster_name == bindparam("cluster"))
    if shape.service is not None:
        filters.append(M.service_name == bindparam("service"))
        if shape.service == "name+cluster":
            filters.append(M.cluster_name == bindparam("service_cluster"))
    if shape.since:
        filters.append(M.timestamp >= bindparam("since", type_=M.timestamp.type))
    if shape.until:
        filters.append(M.timestamp <= bindparam("until", type_=M.timestamp.type))
    return filters


LIST = ListRoute(KEYSET, MetricPage, select(*_COLUMNS), [(M.timestamp, True), (M.id, True)], _where)


def _item(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "dimensions": jsonb_object(row["dimensions"])}


@router.get(
    "/metrics",
    summary="List metric points",
    description=(
        "CloudWatch datapoints ecswatch polled, newest `timestamp` first. `name` is the "
        "CloudWatch metric name (e.g. `CPUUtilization`); `since`/`until` (RFC 3339) bound "
        "`timestamp`, both inclusive."
    ),
    response_model=MetricPage,
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
) -> Response:
    since_at = parse_time(since, param="since")
    until_at = parse_time(until, param="until")
    params: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "statistic": statistic,
        "since": since_at,
        "until": until_at,
    }
    if cluster is not None:
        _bind_cluster(cluster, params)
    shape = Shape(
        namespace=namespace is not None,
        name=name is not None,
        statistic=statistic is not None,
        cluster=cluster is not None,
        service=None if service is None else _bind_service(service, params),
        since=since_at is not None,
        until=until_at is not None,
    )
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor, item=_item)
