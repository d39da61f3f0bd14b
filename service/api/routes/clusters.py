"""``GET /v1/clusters``: every cluster ecswatch knows, by name."""

from __future__ import annotations

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
from service.api.queries import TagJoin
from service.api.schemas import ClusterPage, responses
from service.state import models

router = APIRouter(prefix="/v1", tags=["clusters"], dependencies=[Depends(require_read)])

TAGS = TagJoin(models.Cluster.arn)
KEYSET = Keyset("clusters", ("str",))

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
)

LIST: ListRoute[tuple[()]] = ListRoute(
    KEYSET, ClusterPage, TAGS.select(*_COLUMNS), [(models.Cluster.name, False)]
)


@router.get(
    "/clusters",
    summary="List clusters",
    description="Clusters with their counts and tags, ordered by name.",
    response_model=ClusterPage,
    responses=responses(ClusterPage),
)
async def list_clusters(
    conn: ReadConnection,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    return await list_page(conn, LIST, (), {}, limit=limit, cursor=cursor)
