"""``GET /v1/deployments``: deployments and their outcomes, newest start first."""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import ColumnElement, Select, bindparam, select

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    fetch,
    list_page,
)
from service.api.queries import (
    ClusterForm,
    ClusterParam,
    ServiceForm,
    ServiceParam,
    bind_cluster,
    bind_service,
    cluster_filter,
    service_filter,
)
from service.api.schemas import DeploymentPage, responses
from service.deployments.outcome import Outcome as DeploymentOutcome
from service.state import models

router = APIRouter(prefix="/v1", tags=["deployments"], dependencies=[Depends(require_read)])

# started_at is set once when the deployment is first seen, unlike updated_at, so
# an in-progress deployment does not jump across pages while a client paginates.
KEYSET = Keyset("deployments", ("time?", "str"))

D = models.Deployment

COLUMNS = (
    D.id,
    D.cluster_name.label("cluster"),
    D.cluster_arn,
    D.service_name.label("service"),
    D.service_arn,
    D.kind,
    D.outcome,
    D.reason,
    D.task_definition,
    D.rollback_target,
    D.started_at,
    D.updated_at,
    D.finished_at,
    D.failed_tasks,
    D.stuck,
)

# DESC NULLS FIRST is the order of ix_deployments_service (started_at DESC).
ORDER = (D.started_at.desc().nulls_first(), D.id.desc())


def recent_deployments(limit: int) -> Select[*tuple[Any, ...]]:
    """The newest ``limit`` deployments of one service (served by ix_deployments_service).

    Binds ``cluster`` and ``service`` (names).
    """
    return (
        select(*COLUMNS)
        .where(D.cluster_name == bindparam("cluster"), D.service_name == bindparam("service"))
        .order_by(*ORDER)
        .limit(fetch(limit))
    )


class Shape(NamedTuple):
    """Which filters a /v1/deployments request uses (see ListRoute)."""

    cluster: ClusterForm | None
    service: ServiceForm | None
    outcome: bool


def _where(shape: Shape) -> list[ColumnElement[bool]]:
    filters = cluster_filter(shape.cluster, name_column=D.cluster_name, arn_column=D.cluster_arn)
    filters += service_filter(
        shape.service,
        name_column=D.service_name,
        cluster_name_column=D.cluster_name,
        arn_column=D.service_arn,
    )
    if shape.outcome:
        filters.append(D.outcome == bindparam("outcome"))
    return filters


LIST = ListRoute(
    KEYSET, DeploymentPage, select(*COLUMNS), [(D.started_at, True), (D.id, True)], _where
)


@router.get(
    "/deployments",
    summary="List deployments",
    description=(
        "Deployments (rolling, ECS blue/green, CodeDeploy) with their outcome, newest "
        "`started_at` first. `cluster` and `service` take a name or an ARN."
    ),
    response_model=DeploymentPage,
    responses=responses(DeploymentPage),
)
async def list_deployments(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    service: ServiceParam = None,
    outcome: Annotated[DeploymentOutcome | None, Query(description="Only this outcome.")] = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    params: dict[str, Any] = {}
    if outcome is not None:
        params["outcome"] = outcome.value
    shape = Shape(
        cluster=None if cluster is None else bind_cluster(cluster, params, arn_indexed=False),
        service=None if service is None else bind_service(service, params),
        outcome=outcome is not None,
    )
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor)
