"""``GET /v1/deployments``: deployments and their outcomes, newest start first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Select, select

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    after_nullable_first,
    fetch,
    next_cursor,
)
from service.api.queries import (
    ClusterParam,
    ServiceParam,
    cluster_matches,
    fetch_dicts,
    service_matches,
)
from service.api.schemas import Deployment, DeploymentPage, responses
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


def recent_deployments(cluster: str, service: str, limit: int) -> Select[*tuple[Any, ...]]:
    """The newest deployments of one service (served by ix_deployments_service)."""
    return (
        select(*COLUMNS)
        .where(D.cluster_name == cluster, D.service_name == service)
        .order_by(*ORDER)
        .limit(fetch(limit))
    )


@router.get(
    "/deployments",
    summary="List deployments",
    description=(
        "Deployments (rolling, ECS blue/green, CodeDeploy) with their outcome, newest "
        "`started_at` first. `cluster` and `service` take a name or an ARN."
    ),
    responses=responses(DeploymentPage),
)
async def list_deployments(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    service: ServiceParam = None,
    outcome: Annotated[DeploymentOutcome | None, Query(description="Only this outcome.")] = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> DeploymentPage:
    after_key = KEYSET.decode(cursor)
    stmt = select(*COLUMNS).order_by(*ORDER).limit(fetch(limit + 1))
    if cluster is not None:
        stmt = stmt.where(
            cluster_matches(
                cluster, name_column=D.cluster_name, arn_column=D.cluster_arn, arn_indexed=False
            )
        )
    if service is not None:
        stmt = stmt.where(
            service_matches(
                service,
                name_column=D.service_name,
                cluster_name_column=D.cluster_name,
                arn_column=D.service_arn,
            )
        )
    if outcome is not None:
        stmt = stmt.where(D.outcome == outcome.value)
    if after_key is not None:
        stmt = stmt.where(after_nullable_first(D.started_at, D.id, after_key))
    rows = await fetch_dicts(conn, stmt)
    return DeploymentPage(
        items=[Deployment.model_validate(row) for row in rows[:limit]],
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["started_at"], row["id"])),
    )
