"""``GET /v1/clusters``: every cluster ecswatch knows, by name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

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
    AccountParam,
    RegionParam,
    TagJoin,
    bind_scope,
    scope_columns,
    scope_filter,
)
from service.api.schemas import ClusterPage, responses
from service.state import models

router = APIRouter(prefix="/v1", tags=["clusters"], dependencies=[Depends(require_read)])

TAGS = TagJoin(models.Cluster.arn)
# Names are unique only within an account and region: the ARN breaks ties.
KEYSET = Keyset("clusters", ("str", "str"))

_COLUMNS = (
    models.Cluster.arn,
    models.Cluster.name,
    models.Cluster.status,
    models.Cluster.active_services_count,
    models.Cluster.running_tasks_count,
    models.Cluster.pending_tasks_count,
    models.Cluster.registered_container_instances_count,
    models.Cluster.container_insights,
    models.Cluster.gone_at,
    *scope_columns(models.Cluster.arn),
)

LIST: ListRoute[tuple[bool, bool]] = ListRoute(
    KEYSET,
    ClusterPage,
    TAGS.select(*_COLUMNS),
    [(models.Cluster.name, False), (models.Cluster.arn, False)],
    lambda shape: scope_filter(models.Cluster.arn, shape),
)


@router.get(
    "/clusters",
    summary="List clusters",
    description="Clusters with their counts and tags, ordered by name (then ARN).",
    response_model=ClusterPage,
    responses=responses(ClusterPage),
)
async def list_clusters(
    conn: ReadConnection,
    account_id: AccountParam = None,
    region: RegionParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    params: dict[str, Any] = {}
    shape = bind_scope(account_id, region, params)
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor)
