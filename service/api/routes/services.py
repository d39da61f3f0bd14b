"""``GET /v1/services`` and ``GET /v1/services/{cluster}/{service}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    fetch,
    next_cursor,
)
from service.api.queries import (
    ClusterParam,
    TagJoin,
    TagParam,
    cluster_matches,
    fetch_dicts,
    parse_tags,
    tags_match,
)
from service.api.routes.deployments import recent_deployments
from service.api.schemas import (
    NO_NUL,
    Deployment,
    LaunchType,
    Service,
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
)
# Describe details, on the one-service route only.
_DETAIL_COLUMNS = (
    S.capacity_provider_strategy,
    S.deployment_configuration,
    S.current_deployments,
    S.load_balancers,
    S.described_at,
)


@router.get(
    "/services",
    summary="List services",
    description=(
        "Services ordered by ARN. `cluster` takes a name or an ARN; `tag=key:value` "
        "may repeat and every tag must match."
    ),
    responses=responses(ServicePage),
)
async def list_services(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    status: Annotated[ServiceStatus | None, Query(description="Only this status.")] = None,
    launch_type: Annotated[LaunchType | None, Query(description="Only this launch type.")] = None,
    tag: TagParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> ServicePage:
    after_key = KEYSET.decode(cursor)
    tags = parse_tags(tag or [])
    stmt = TAGS.select(*_COLUMNS).order_by(S.arn).limit(fetch(limit + 1))
    if cluster is not None:
        stmt = stmt.where(
            cluster_matches(
                cluster, name_column=S.cluster_name, arn_column=S.cluster_arn, arn_indexed=False
            )
        )
    if status is not None:
        stmt = stmt.where(S.status == status.value)
    if launch_type is not None:
        stmt = stmt.where(S.launch_type == launch_type.value)
    if tags:
        stmt = stmt.where(tags_match(S.arn, tags))
    if after_key is not None:
        stmt = stmt.where(S.arn > after_key[0])
    rows = await fetch_dicts(conn, stmt)
    return ServicePage(
        items=[Service.model_validate(row) for row in rows[:limit]],
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["arn"],)),
    )


@router.get(
    "/services/{cluster}/{service}",
    summary="Get one service",
    description=(
        f"One service by cluster name and service name, with its {RECENT_DEPLOYMENTS} "
        "most recent deployments (newest first)."
    ),
    responses=responses(ServiceDetail, errors=(401, 404)),
)
async def get_service(
    conn: ReadConnection,
    cluster: Annotated[str, Path(description="Cluster name.", max_length=2048, pattern=NO_NUL)],
    service: Annotated[str, Path(description="Service name.", max_length=2048, pattern=NO_NUL)],
) -> ServiceDetail:
    stmt = (
        TAGS.select(*_COLUMNS, *_DETAIL_COLUMNS)
        .where(S.cluster_name == cluster, S.name == service)
        # Old- and new-format ARNs of one service may both be stored; prefer the live one.
        .order_by((S.status == "ACTIVE").desc(), S.updated_at.desc())
        .limit(fetch(1))
    )
    found = await fetch_dicts(conn, stmt)
    row = found[0] if found else None
    if row is None:
        raise NotFoundError(f"no service {service!r} in cluster {cluster!r}")
    deployments = (
        await conn.execute(recent_deployments(cluster, service, RECENT_DEPLOYMENTS))
    ).mappings()
    return ServiceDetail.model_validate(
        {
            **row,
            # Never described: no configuration to show (not an empty one).
            "deployment_configuration": row["deployment_configuration"] or None,
            "deployments": [Deployment.model_validate(d) for d in deployments],
        }
    )
