"""``GET /v1/container-instances``: EC2 and external instances registered to clusters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    fetch,
    next_cursor,
)
from service.api.queries import ClusterParam, TagJoin, cluster_matches, fetch_dicts
from service.api.schemas import (
    ContainerInstance,
    ContainerInstancePage,
    ContainerInstanceStatus,
    responses,
)
from service.state import models

router = APIRouter(prefix="/v1", tags=["container instances"], dependencies=[Depends(require_read)])

KEYSET = Keyset("container-instances", ("str",))

CI = models.ContainerInstance
TAGS = TagJoin(CI.arn)

_COLUMNS = (
    CI.arn,
    CI.ec2_instance_id,
    CI.cluster_name.label("cluster"),
    CI.cluster_arn,
    CI.status,
    CI.agent_connected,
    CI.running_tasks_count,
    CI.pending_tasks_count,
    CI.registered_resources,
    CI.remaining_resources,
    CI.version,
    CI.attributes,
    CI.updated_at,
    CI.health_status,
    CI.gone_at,
)


@router.get(
    "/container-instances",
    summary="List container instances",
    description=(
        "Container instances ordered by ARN. `agent_connected=false` finds instances "
        "whose ECS agent is disconnected."
    ),
    responses=responses(ContainerInstancePage),
)
async def list_container_instances(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    status: Annotated[
        ContainerInstanceStatus | None, Query(description="Only this status.")
    ] = None,
    agent_connected: Annotated[bool | None, Query(description="Agent connection state.")] = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> ContainerInstancePage:
    after_key = KEYSET.decode(cursor)
    stmt = TAGS.select(*_COLUMNS).order_by(CI.arn).limit(fetch(limit + 1))
    if cluster is not None:
        stmt = stmt.where(
            cluster_matches(
                cluster, name_column=CI.cluster_name, arn_column=CI.cluster_arn, arn_indexed=False
            )
        )
    if status is not None:
        stmt = stmt.where(CI.status == status.value)
    if agent_connected is not None:
        stmt = stmt.where(CI.agent_connected.is_(agent_connected))
    if after_key is not None:
        stmt = stmt.where(CI.arn > after_key[0])
    rows = await fetch_dicts(conn, stmt)
    return ContainerInstancePage(
        items=[ContainerInstance.model_validate(row) for row in rows[:limit]],
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["arn"],)),
    )
