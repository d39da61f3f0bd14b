"""``GET /v1/services`` and ``GET /v1/services/{cluster}/{service}``."""

from __future__ import annotations

import re
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import ColumnElement, bindparam

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    Single,
    list_page,
    single_response,
)
from service.api.queries import (
    MAX_NAMESAKES,
    AccountParam,
    ClusterForm,
    ClusterParam,
    RegionParam,
    TagJoin,
    TagParam,
    bind_cluster,
    bind_scope,
    bind_tags,
    cluster_filter,
    fetch_dicts,
    in_scope,
    one_scope,
    scope_columns,
    scope_filter,
    tags_match_bound,
)
from service.api.routes.deployments import recent_deployments
from service.api.schemas import (
    NO_NUL,
    LaunchType,
    ServiceDetail,
    ServicePage,
    ServiceStatus,
    responses,
)
from service.errors import NotFoundError
from service.state import models

router = APIRouter(prefix="/v1", tags=["services"], dependencies=[Depends(require_read)])

KEYSET = Keyset("services", ("str",))
RECENT_DEPLOYMENTS = 10

S = models.Service
TAGS = TagJoin(S.arn)

_COLUMNS = (
    S.arn,
    S.name,
    S.cluster_name.label("cluster"),
    S.cluster_arn,
    S.status,
    S.desired_count,
    S.running_count,
    S.pending_count,
    S.launch_type,
    S.task_definition,
    S.deployment_controller,
    S.updated_at,
    S.gone_at,
    *scope_columns(S.arn),
)
# Describe details, on the one-service route only.
_DETAIL_COLUMNS = (
    S.capacity_provider_strategy,
    S.deployment_configuration,
    S.current_deployments,
    S.load_balancers,
    S.described_at,
)


class Shape(NamedTuple):
    """Which filters a /v1/services request uses (see ListRoute)."""

    cluster: ClusterForm | None
    status: bool
    launch_type: bool
    tags: int
    scope: tuple[bool, bool]


def _where(shape: Shape) -> list[ColumnElement[bool]]:
    filters = cluster_filter(shape.cluster, name_column=S.cluster_name, arn_column=S.cluster_arn)
    filters += scope_filter(S.arn, shape.scope)
    if shape.status:
        filters.append(S.status == bindparam("status"))
    if shape.launch_type:
        filters.append(S.launch_type == bindparam("launch_type"))
    if shape.tags:
        filters.append(tags_match_bound(S.arn, shape.tags))
    return filters


LIST = ListRoute(KEYSET, ServicePage, TAGS.select(*_COLUMNS), [(S.arn, False)], _where)


@router.get(
    "/services",
    summary="List services",
    description=(
        "Services ordered by ARN. `cluster` takes a name or an ARN; `tag=key:value` "
        "may repeat and every tag must match."
    ),
    response_model=ServicePage,
    responses=responses(ServicePage),
)
async def list_services(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    status: Annotated[ServiceStatus | None, Query(description="Only this status.")] = None,
    launch_type: Annotated[LaunchType | None, Query(description="Only this launch type.")] = None,
    tag: TagParam = None,
    account_id: AccountParam = None,
    region: RegionParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    params: dict[str, Any] = {}
    shape = Shape(
        cluster=None if cluster is None else bind_cluster(cluster, params, arn_indexed=False),
        status=status is not None,
        launch_type=launch_type is not None,
        tags=bind_tags(tag, params),
        scope=bind_scope(account_id, region, params),
    )
    if status is not None:
        params["status"] = status.value
    if launch_type is not None:
        params["launch_type"] = launch_type.value
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor)


#: Services of one cluster name and service name, in every scope (at most MAX_NAMESAKES).
ONE = (
    TAGS.select(*_COLUMNS, *_DETAIL_COLUMNS)
    .where(S.cluster_name == bindparam("cluster"), S.name == bindparam("service"))
    # Old- and new-format ARNs of one service may both be stored; prefer the live one.
    .order_by((S.status == "ACTIVE").desc(), S.updated_at.desc(), S.arn)
    .limit(MAX_NAMESAKES)
)
DEPLOYMENTS = recent_deployments(RECENT_DEPLOYMENTS)
# arn:…:service/<cluster>/<name> -> arn:…:cluster/<cluster>
_CLUSTER_OF_SERVICE = re.compile(r":service/([^/]+)/.*$")


@router.get(
    "/services/{cluster}/{service}",
    summary="Get one service",
    description=(
        f"One service by cluster name and service name, with its {RECENT_DEPLOYMENTS} "
        "most recent deployments (newest first). Names are unique only within an "
        "account and region: `account_id` and `region` pick the scope, and names that "
        "match services of several scopes answer 409, listing them. "
        "`GET /v1/services?service=<ARN>` always names one service."
    ),
    response_model=ServiceDetail,
    responses=responses(ServiceDetail, errors=(401, 404, 409)),
)
async def get_service(
    conn: ReadConnection,
    cluster: Annotated[str, Path(description="Cluster name.", max_length=2048, pattern=NO_NUL)],
    service: Annotated[str, Path(description="Service name.", max_length=2048, pattern=NO_NUL)],
    account_id: AccountParam = None,
    region: RegionParam = None,
) -> Response:
    names = {"cluster": cluster, "service": service}
    found = [
        r for r in await fetch_dicts(conn, ONE, names) if in_scope(r["arn"], account_id, region)
    ]
    row = one_scope(found, what=f"service {service!r} of cluster {cluster!r}", arn_key="arn")
    if row is None:
        raise NotFoundError(f"no service {service!r} in cluster {cluster!r}")
    cluster_arn = row["cluster_arn"] or _CLUSTER_OF_SERVICE.sub(r":cluster/\1", row["arn"])
    arns = {
        "service_arn": row["arn"],
        "cluster_arn": cluster_arn,
        "account_id": row["account_id"] or "",
        "region": row["region"] or "",
    }
    deployments = await fetch_dicts(conn, DEPLOYMENTS, {**names, **arns})
    return single_response(
        DETAIL,
        {
            **row,
            # Never described: no configuration to show (not an empty one).
            "deployment_configuration": row["deployment_configuration"] or None,
            "deployments": deployments,
        },
    )


DETAIL = Single(ServiceDetail)
