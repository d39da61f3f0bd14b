"""``GET /v1/clusters``: every cluster ecswatch knows, by name."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    fetch,
    next_cursor,
)
from service.api.queries import TagJoin, fetch_dicts
from service.api.schemas import Cluster, ClusterPage, responses
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


@router.get(
    "/clusters",
    summary="List clusters",
    description="Clusters with their counts and tags, ordered by name.",
    responses=responses(ClusterPage),
)
async def list_clusters(
    conn: ReadConnection,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> ClusterPage:
    after_key = KEYSET.decode(cursor)
    page = TAGS.select(*_COLUMNS).order_by(models.Cluster.name).limit(fetch(limit + 1))
    if after_key is not None:
        page = page.where(models.Cluster.name > after_key[0])
    rows = await fetch_dicts(conn, page)
    return ClusterPage(
        items=[Cluster.model_validate(row) for row in rows[:limit]],
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["name"],)),
    )
