"""``GET /v1/tasks`` and ``GET /v1/tasks/{task_id}``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import ColumnElement, and_, bindparam, case, func, select

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
    RFC3339,
    AccountParam,
    ClusterParam,
    RegionParam,
    ServiceParam,
    TagJoin,
    TagParam,
    bind_scope,
    bind_tags,
    execute_read,
    fetch_dicts,
    in_scope,
    inline_time,
    is_arn,
    parse_time,
    scope_columns,
    scope_filter,
    service_names_of_arn,
    tags_match_bound,
)
from service.api.schemas import NO_NUL, LaunchType, Task, TaskPage, responses
from service.errors import InvalidInputError, NotFoundError
from service.events.models import StopCode, TaskStatus
from service.state import models

router = APIRouter(prefix="/v1", tags=["tasks"], dependencies=[Depends(require_read)])

# Tasks are ordered by ARN: unique, immutable, and the last column of the
# indexes behind the filters (cluster ARN, cluster + service, service, statuses,
# launch type, stop code), so a filtered page is one ordered index range scan
# with a LIMIT.
KEYSET = Keyset("tasks", ("str",))

T = models.Task
CI = models.ContainerInstance
TAGS = TagJoin(T.arn)
CLUSTER_ARN = (
    select(models.Cluster.arn)
    .where(models.Cluster.name == bindparam("name"))
    .order_by(models.Cluster.arn)
)

# The service ARN, from the task ARN's partition, region and account (tasks record
# their service by name only): arn:…:task/c/id -> arn:…:service/c/<service>.
SERVICE_ARN = case(
    (
        and_(
            T.service_name.is_not(None),
            T.cluster_name.is_not(None),
            T.arn.like("arn:%:task/%"),
        ),
        func.regexp_replace(T.arn, ":task/.*$", ":service/")
        + T.cluster_name
        + "/"
        + T.service_name,
    ),
    else_=None,
).label("service_arn")

_COLUMNS = (
    T.arn,
    T.id,
    T.cluster_name.label("cluster"),
    T.cluster_arn,
    T.service_name.label("service"),
    SERVICE_ARN,
    T.family,
    T.revision,
    T.launch_type,
    T.last_status,
    T.desired_status,
    T.health_status,
    T.stop_code,
    T.stopped_reason,
    T.version,
    T.container_instance_arn,
    T.availability_zone,
    T.containers,
    T.created_at,
    T.started_at,
    T.stopped_at,
    T.updated_at,
    T.task_definition_arn,
    T.cpu,
    T.memory,
    T.gone_at,
    *scope_columns(T.arn),
)


class Shape(NamedTuple):
    """Which filters a /v1/tasks request uses, and in which form.

    Statements are built once per shape, with every value a bound parameter,
    and reused: SQLAlchemy then finds the compiled SQL through the statement's
    memoised cache key instead of walking a fresh statement tree on every
    request (about 1 ms per request for this statement).
    """

    cluster: Literal["name", "arn"] | None
    service: Literal["name", "arn", "cluster_arn"] | None
    family: bool
    last_status: bool
    desired_status: bool
    launch_type: bool
    instance: Literal["arn", "ec2", "id"] | None
    stop_code: bool
    tags: int
    since: bool
    scope: tuple[bool, bool]


def _where(shape: Shape) -> list[ColumnElement[bool]]:
    """The /v1/tasks filters of ``shape``; values are bound at execution."""
    filters: list[ColumnElement[bool]] = []
    if shape.cluster == "name":
        filters.append(T.cluster_name == bindparam("cluster"))
    elif shape.cluster == "arn":
        # (cluster_arn, arn) is indexed: no redundant name predicate (see bind_cluster).
        filters.append(T.cluster_arn == bindparam("cluster"))
    if shape.service is not None:
        # Tasks name their service only; an ARN is compared through its parts.
        filters.append(T.service_name == bindparam("service"))
        if shape.service == "cluster_arn":
            filters.append(T.cluster_name == bindparam("service_cluster"))
    for flag, column in (
        (shape.family, T.family),
        (shape.last_status, T.last_status),
        (shape.desired_status, T.desired_status),
        (shape.launch_type, T.launch_type),
        (shape.stop_code, T.stop_code),
    ):
        if flag:
            filters.append(column == bindparam(column.key))
    if shape.instance == "arn":
        filters.append(T.container_instance_arn == bindparam("instance"))
    elif shape.instance == "ec2":
        by_ec2 = select(CI.arn).where(CI.ec2_instance_id == bindparam("instance"))
        filters.append(T.container_instance_arn.in_(by_ec2.scalar_subquery()))
    elif shape.instance == "id":
        # The bare container instance id (last part of its ARN); container
        # instances are few, so a scan of that table is cheap.
        by_id = select(CI.arn).where(CI.arn.endswith(bindparam("instance")))
        filters.append(T.container_instance_arn.in_(by_id.scalar_subquery()))
    filters += scope_filter(T.arn, shape.scope)
    if shape.tags:
        filters.append(tags_match_bound(T.arn, shape.tags))
    if shape.since:
        filters.append(T.updated_at >= inline_time("since"))
    return filters


LIST = ListRoute(KEYSET, TaskPage, TAGS.select(*_COLUMNS), [(T.arn, False)], _where)


@router.get(
    "/tasks",
    summary="List tasks",
    description=(
        "Tasks ordered by ARN. `cluster` and `service` take a name or an ARN; "
        "`container_instance` an ARN, a container instance id or an EC2 instance id; "
        "`tag=key:value` may repeat (AND); `since` (RFC 3339) keeps tasks whose last "
        "ECS change (`updated_at`, the event's `detail.updatedAt`) is at or after it."
    ),
    response_model=TaskPage,
    responses=responses(TaskPage),
)
async def list_tasks(
    conn: ReadConnection,
    cluster: ClusterParam = None,
    service: ServiceParam = None,
    family: Annotated[
        str | None, Query(description="Task definition family.", max_length=255, pattern=NO_NUL)
    ] = None,
    last_status: Annotated[TaskStatus | None, Query(description="ECS lastStatus.")] = None,
    desired_status: Annotated[TaskStatus | None, Query(description="ECS desiredStatus.")] = None,
    launch_type: Annotated[LaunchType | None, Query(description="Launch type.")] = None,
    container_instance: Annotated[
        str | None,
        Query(
            description="Container instance ARN or id, or EC2 instance id.",
            max_length=2048,
            pattern=NO_NUL,
        ),
    ] = None,
    stop_code: Annotated[StopCode | None, Query(description="ECS stopCode.")] = None,
    tag: TagParam = None,
    since: Annotated[
        RFC3339 | None,
        Query(description="RFC 3339; tasks whose `updated_at` is at or after it."),
    ] = None,
    account_id: AccountParam = None,
    region: RegionParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    since_at = parse_time(since, param="since")
    params: dict[str, Any] = {}
    cluster_form: Literal["name", "arn"] | None = None
    if cluster is not None:
        cluster_form = "arn" if is_arn(cluster) else "name"
        params["cluster"] = cluster
        if cluster_form == "name" and service is None:
            # A task ARN starts with its cluster's name, so an ARN-ordered scan
            # filtered by cluster name walks every other cluster first (seconds
            # on a million tasks). The cluster's ARN turns the filter into a range
            # of ix_tasks_cluster_arn (cluster_arn, arn), already in ARN order.
            # One small extra statement; unknown clusters keep the name filter, and
            # so does a name that clusters of several scopes share (names are unique
            # only within an account and region).
            # (With a service too, ix_tasks_cluster_service serves the names.)
            found = (await execute_read(conn, CLUSTER_ARN, {"name": cluster})).scalars().all()
            arns = [a for a in found if in_scope(a, account_id, region)]
            if len(arns) == 1:
                cluster_form, params["cluster"] = "arn", arns[0]
    service_form: Literal["name", "arn", "cluster_arn"] | None = None
    if service is not None:
        service_form = "name"
        params["service"] = service
        if is_arn(service):
            names = service_names_of_arn(service)
            if names is None:
                raise InvalidInputError(f"not a service ARN: {service!r}", param="service")
            service_form = "arn" if names[0] is None else "cluster_arn"
            params["service_cluster"], params["service"] = names
    for name, value in (
        ("family", family),
        ("last_status", last_status),
        ("desired_status", desired_status),
        ("launch_type", launch_type),
        ("stop_code", stop_code),
    ):
        if value is not None:
            params[name] = value.value if isinstance(value, StrEnum) else value
    instance_form: Literal["arn", "ec2", "id"] | None = None
    if container_instance is not None:
        if is_arn(container_instance):
            instance_form, params["instance"] = "arn", container_instance
        elif container_instance.startswith("i-"):
            instance_form, params["instance"] = "ec2", container_instance
        else:
            instance_form, params["instance"] = "id", "/" + container_instance
    tags = bind_tags(tag, params)
    if since_at is not None:
        params["since"] = since_at.isoformat()
    shape = Shape(
        cluster=cluster_form,
        service=service_form,
        family=family is not None,
        last_status=last_status is not None,
        desired_status=desired_status is not None,
        launch_type=launch_type is not None,
        instance=instance_form,
        stop_code=stop_code is not None,
        tags=tags,
        since=since_at is not None,
        scope=bind_scope(account_id, region, params),
    )
    return await list_page(conn, LIST, shape, params, limit=limit, cursor=cursor)


# By ARN or by id; task ids are UUIDs, but should two accounts ever share one,
# the answer is stable (the first by ARN).
BY_ARN = TAGS.select(*_COLUMNS).where(T.arn == bindparam("ref")).limit(fetch(1))
TASK = Single(Task)
BY_ID = TAGS.select(*_COLUMNS).where(T.id == bindparam("ref")).order_by(T.arn).limit(fetch(1))


@router.get(
    "/tasks/{task_id:path}",
    summary="Get one task",
    description="One task by its id or by its full ARN (URL-encoded).",
    response_model=Task,
    responses=responses(Task, errors=(401, 404)),
)
async def get_task(
    conn: ReadConnection,
    task_id: Annotated[
        str,
        Path(description="Task id, or the URL-encoded task ARN.", max_length=2048, pattern=NO_NUL),
    ],
) -> Response:
    stmt = BY_ARN if is_arn(task_id) else BY_ID
    found = await fetch_dicts(conn, stmt, {"ref": task_id})
    if not found:
        raise NotFoundError(f"no task {task_id!r}")
    return single_response(TASK, found[0])
