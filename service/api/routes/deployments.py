"""``GET /v1/deployments`` (newest start first) and ``GET /v1/deployments/{deployment_id}``
(one deployment with its cause, timeline, failed tasks and target health)."""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select

from service.api.deps import ReadConnection, require_read
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    Single,
    fetch,
    list_page,
    single_response,
)
from service.api.queries import (
    MAX_NAMESAKES,
    AccountParam,
    ClusterForm,
    ClusterParam,
    RegionParam,
    ServiceForm,
    ServiceParam,
    bind_cluster,
    bind_scope,
    bind_service,
    cluster_filter,
    fetch_dicts,
    one_scope,
    service_filter,
)
from service.api.schemas import NO_NUL, DeploymentDetail, DeploymentPage, responses
from service.deployments import evidence
from service.deployments.cause import classify
from service.deployments.outcome import Outcome as DeploymentOutcome
from service.deployments.snapshot import DeploymentKey
from service.errors import NotFoundError
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
    D.strategy,
    # A deployment's scope: that of its events ('' where it was not known).
    func.nullif(D.account_id, "").label("account_id"),
    func.nullif(D.region, "").label("region"),
)

# DESC NULLS FIRST is the order of ix_deployments_service (started_at DESC).
ORDER = (D.started_at.desc().nulls_first(), D.id.desc())


def recent_deployments(limit: int) -> Select[*tuple[Any, ...]]:
    """The newest ``limit`` deployments of one service (served by ix_deployments_service).

    Binds ``cluster`` and ``service`` (names), ``service_arn`` and ``cluster_arn``
    of the service, and its ``account_id`` and ``region``: a deployment that records
    another ARN, or of another scope, is of a service of the same names in another
    scope.
    """
    return (
        select(*COLUMNS)
        .where(
            D.cluster_name == bindparam("cluster"),
            D.service_name == bindparam("service"),
            or_(
                D.account_id == "",
                and_(D.account_id == bindparam("account_id"), D.region == bindparam("region")),
            ),
            func.coalesce(D.service_arn, bindparam("service_arn")) == bindparam("service_arn"),
            func.coalesce(D.cluster_arn, bindparam("cluster_arn")) == bindparam("cluster_arn"),
        )
        .order_by(*ORDER)
        .limit(fetch(limit))
    )


class Shape(NamedTuple):
    """Which filters a /v1/deployments request uses (see ListRoute)."""

    cluster: ClusterForm | None
    service: ServiceForm | None
    outcome: bool
    scope: tuple[bool, bool]


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
    # Served by ix_deployments_account_id_started_at_id and _region_started_at_id.
    if shape.scope[0]:
        filters.append(D.account_id == bindparam("account_id"))
    if shape.scope[1]:
        filters.append(D.region == bindparam("region"))
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
    account_id: AccountParam = None,
    region: RegionParam = None,
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
        scope=bind_scope(account_id, region, params),
    )
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor)


DETAIL = Single(DeploymentDetail)
#: The scopes that hold a deployment of one id (ids are unique only within a scope;
#: served by ix_deployments_id).
SCOPES = (
    select(D.account_id, D.region, D.service_arn)
    .where(D.id == bindparam("id"))
    .order_by(D.account_id, D.region)
    .limit(MAX_NAMESAKES)
)
_DETAIL_FIELDS = (
    "id",
    "cluster",
    "cluster_arn",
    "service",
    "service_arn",
    "kind",
    "outcome",
    "reason",
    "task_definition",
    "rollback_target",
    "started_at",
    "updated_at",
    "finished_at",
    "stuck",
    "strategy",
)


@router.get(
    "/deployments/{deployment_id:path}",
    summary="Get one deployment, and why it failed",
    description=(
        "One deployment by its id as `/v1/deployments` lists it (slashes allowed, e.g. "
        "`ecs-svc/123…` or a service deployment ARN), with `cause` (failed, rolled back "
        "or stuck deployments), its `timeline`, its `failed_tasks` with their containers' "
        "exit codes, and the `target_health` of its service's target groups. Deployment "
        "ids are unique only within an account and region: `account_id` and `region` "
        "pick the scope, and an id of deployments in several scopes answers 409, "
        "listing them."
    ),
    response_model=DeploymentDetail,
    responses=responses(DeploymentDetail, errors=(401, 404, 409)),
)
async def get_deployment(
    conn: ReadConnection,
    deployment_id: Annotated[
        str,
        Path(
            description="The deployment id as listed (URL-encoded or with its slashes).",
            max_length=2048,
            pattern=NO_NUL,
        ),
    ],
    account_id: AccountParam = None,
    region: RegionParam = None,
) -> Response:
    async def read(stmt: Any, params: Any) -> list[dict[str, Any]]:
        return await fetch_dicts(conn, stmt, params)

    scopes = [
        r
        for r in await read(SCOPES, {"id": deployment_id})
        if account_id in (None, r["account_id"]) and region in (None, r["region"])
    ]
    one = one_scope(scopes, what=f"deployment {deployment_id!r}", arn_key="service_arn")
    found = None
    if one is not None:
        key = DeploymentKey(one["account_id"], one["region"], deployment_id)
        found = await evidence.gather(read, key)
    if found is None:
        raise NotFoundError(f"no deployment {deployment_id!r}")
    item = {name: found.deployment[name] for name in _DETAIL_FIELDS}
    scope = (one["account_id"], one["region"]) if one and one["account_id"] else None
    scope = scope or evidence.scope_of(item["service_arn"] or item["cluster_arn"])
    item["account_id"], item["region"] = scope or (None, None)
    failed = evidence.failed_task_rows(found.tasks)
    item["cause"] = classify(found.facts).as_dict() if found.needs_cause else None
    item["timeline"] = [evidence.timeline_entry(e) for e in found.events]
    item["failed_tasks"] = [
        {
            "arn": t["arn"],
            "stop_code": t["stop_code"],
            "stopped_reason": t["stopped_reason"],
            "containers": [
                {"name": c.name, "exit_code": c.exit_code, "reason": c.reason}
                for c in evidence.containers_of(t["containers"])
            ],
        }
        for t in failed
    ]
    item["failed_tasks_count"] = len(failed)
    item["target_health"] = found.points
    return single_response(DETAIL, item)
