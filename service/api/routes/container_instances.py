"""``GET /v1/container-instances``: EC2 and external instances registered to clusters."""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement, bindparam

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
    ClusterForm,
    ClusterParam,
    RegionParam,
    TagJoin,
    bind_cluster,
    bind_scope,
    cluster_filter,
    scope_columns,
    scope_filter,
)
from service.api.schemas import (
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
    *scope_columns(CI.arn),
)


class Shape(NamedTuple):
    """Which filters a /v1/container-instances request uses (see ListRoute)."""

    cluster: ClusterForm | None
    status: bool
    agent_connected: bool | None
    scope: tuple[bool, bool]


def _where(shape: Shape) -> list[ColumnElement[bool]]:
    filters = cluster_filter(shape.cluster, name_column=CI.cluster_name, arn_column=CI.cluster_arn)
    filters += scope_filter(CI.arn, shape.scope)
    if shape.status:
        filters.append(CI.status == bindparam("status"))
    if shape.agent_connected is not None:
        # IS TRUE / IS FALSE, as before: a constant of the shape, not a parameter.
        filters.append(CI.agent_connected.is_(shape.agent_connected))
    return filters


LIST = ListRoute(KEYSET, ContainerInstancePage, TAGS.select(*_COLUMNS), [(CI.arn, False)], _where)


@router.get(
    "/container-instances",
    summary="List container instances",
    description=(
        "Container instances ordered by ARN. `agent_connected=false` finds instances "
        "whose ECS agent is disconnected."
    ),
    response_model=ContainerInstancePage,
    responses=responses(ContainerInstancePage),
)
async def list_container_instances(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    status: Annotated[
        ContainerInstanceStatus | None, Query(description="Only this status.")
    ] = None,
    agent_connected: Annotated[bool | None, Query(description="Agent connection state.")] = None,
    account_id: AccountParam = None,
    region: RegionParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    params: dict[str, Any] = {}
    if status is not None:
        params["status"] = status.value
    shape = Shape(
        cluster=None if cluster is None else bind_cluster(cluster, params, arn_indexed=False),
        status=status is not None,
        agent_connected=agent_connected,
        scope=bind_scope(account_id, region, params),
    )
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor)
