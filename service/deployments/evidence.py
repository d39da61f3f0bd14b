"""Gather what the database holds about deployments, for their cause and their detail.

Read-only: four statements for up to :data:`MAX_DEPLOYMENTS` deployments, each
served by an index (docs/api.md, "Indexes"):

* the deployments by their keys (:class:`~service.deployments.snapshot.DeploymentKey`:
  scope and id; the primary key), each with its service of its own scope, with the
  service's load balancers and deployment alarms (``ix_services_cluster_name_name``);
* their tasks: those each started (``startedBy``, ``ix_tasks_deployment_id``) whose
  ARN is in its scope;
* their events: each one's own (primary key), its tasks' (the GIN index on
  ``raw_events.resources``; only when asked for, as the detail's timeline is:
  the cause reads none of them) and its service's Service Action events during
  the rollout (``ix_raw_events_detail_type_time``);
* the ALB points of each one's service, read in the service's own scope
  (account and region), during the rollout and ten minutes after
  (``ix_metric_points_cluster_service_time``).

A statement that reads per deployment does so in a ``LATERAL`` subquery over the
parameter arrays, with its own ``LIMIT``: every deployment gets its own bounded
share, and the limit keeps PostgreSQL from flattening the subquery into a join
(whose generic plan, what a prepared statement settles on, could scan every
partition). Each statement is built once in two forms by the same code
(:func:`_statements`): :data:`MANY`, whose per-deployment parameters are arrays,
and :data:`ONE`, for one deployment (the API's detail, most batches' causes),
whose array of one value is written into the SQL so that PostgreSQL can settle
on a generic plan instead of planning every execution. They are executed by a
:data:`Reader`, so the API runs them on its own read path. Everything is bounded
per deployment: at most :data:`MAX_TASKS` tasks, :data:`MAX_EVENTS` events and
:data:`MAX_POINTS` points.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    Text,
    and_,
    any_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import ColumnElement, Executable
from sqlalchemy.types import TypeEngine

from service.deployments.cause import (
    AlarmFact,
    CodeDeployFact,
    ContainerFact,
    DeploymentFacts,
    HookFact,
    ServiceActionFact,
    TargetHealthPoint,
    TaskFact,
    is_failed,
)
from service.deployments.outcome import TERMINAL, DeploymentKind, Outcome
from service.deployments.snapshot import FAILED_OUTCOMES, DeploymentKey
from service.state import models

#: Executes a statement with bound values; the rows as dicts keyed by column label.
Reader = Callable[[Executable, Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]

MAX_TASKS = 200
MAX_EVENTS = 500
MAX_POINTS = 2000
MAX_EVENT_IDS = 200
#: Deployments gathered by one set of statements (more take more sets).
MAX_DEPLOYMENTS = 50
#: ALB points and Service Action events are read until this long after the deployment ends.
AFTER_END = timedelta(minutes=10)
#: The Service Action events read start this long before the deployment does.
BEFORE_START = timedelta(minutes=1)
ALB = "AWS/ApplicationELB"
SERVICE_ACTION_TYPES = ("ECS Service Action", "ECS Daemon Service Action")


# Core columns of the mapped tables: the statements are Core statements, compiled
# and executed without the ORM's per-statement context.
D = models.Deployment.__table__.c
S = models.Service.__table__.c
T = models.Task.__table__.c
P = models.MetricPoint.__table__.c

_SERVICE = (
    select(S.arn, S.load_balancers, S.deployment_configuration)
    .where(
        S.cluster_name == D.cluster_name,
        S.name == D.service_name,
        # Names are unique only within a scope: the service of the deployment's cluster,
        # in the deployment's account and region.
        or_(D.cluster_arn.is_(None), S.cluster_arn.is_(None), S.cluster_arn == D.cluster_arn),
        or_(
            D.account_id == "",
            and_(
                func.split_part(S.arn, ":", 5) == D.account_id,
                func.split_part(S.arn, ":", 4) == D.region,
            ),
        ),
    )
    .order_by((S.arn == D.service_arn).desc(), S.gone_at.desc().nulls_first())
    .limit(1)
    .lateral("svc")
)


def _per_deployment(name: str, item: TypeEngine[Any], one: bool) -> ColumnElement[Any]:
    """The parameter ``name``: an array with a value per deployment or, in the form for
    one deployment, that one value in an ``ARRAY[…]`` written into the SQL. PostgreSQL
    then knows the array's length even in a generic plan, and reuses one; a parameter
    array's length it guesses (several elements), so it would plan every execution."""
    if one:
        return array([bindparam(name, type_=item)])
    return bindparam(name, type_=ARRAY(item))


#: The parameters naming the deployments (:class:`DeploymentKey`), in its order.
_KEY_PARAMETERS = ("accounts", "regions", "ids")


def _keys_match(one: bool) -> tuple[ColumnElement[bool], ...]:
    """Whether a deployment is one of those asked: for one, its key's three columns
    (the primary key); for several, its id among theirs (``ix_deployments_id``) and its
    key among the three arrays' rows."""
    if one:
        return tuple(
            column == bindparam(name, type_=Text())
            for column, name in zip((D.account_id, D.region, D.id), _KEY_PARAMETERS, strict=True)
        )
    keys = (
        func.unnest(*(bindparam(name, type_=ARRAY(Text())) for name in _KEY_PARAMETERS))
        .table_valued("account", "region", "id")
        .render_derived("key")
    )
    return (
        D.id == any_(bindparam("ids", type_=ARRAY(Text()))),
        tuple_(D.account_id, D.region, D.id).in_(select(keys.c.account, keys.c.region, keys.c.id)),
    )


@dataclass(frozen=True, slots=True)
class Statements:
    """The four statements of a gathering, in one of two forms (:func:`_statements`)."""

    deployments: Executable
    tasks: Executable
    events: Executable
    points: Executable


def _statements(one: bool) -> Statements:
    """The statements, for one deployment (``one``: each per-deployment parameter a
    single value) or for several (arrays); the same SQL otherwise."""
    deployments = (
        select(
            D.account_id,
            D.region,
            D.id,
            D.cluster_name.label("cluster"),
            D.cluster_arn,
            D.service_name.label("service"),
            func.coalesce(D.service_arn, _SERVICE.c.arn).label("service_arn"),
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
            D.lifecycle_stage,
            D.last_event_at,
            D.event_ids,
            D.codedeploy_application,
            D.codedeploy_group,
            D.strategy,
            D.triggered_alarms,
            _SERVICE.c.load_balancers,
            _SERVICE.c.deployment_configuration,
        )
        .outerjoin(_SERVICE, true())
        .where(*_keys_match(one))
    )

    # The deployments asked about, numbered from 1 in the order of the arrays.
    asked = (
        func.unnest(*(_per_deployment(name, Text(), one) for name in _KEY_PARAMETERS))
        .table_valued("account", "region", "id", with_ordinality="n")
        .render_derived("asked")
    )
    tasks_of = (
        select(*_TASK_COLUMNS)
        .where(
            T.deployment_id == asked.c.id,
            # The deployment's own tasks: those whose ARN is in its scope.
            or_(
                asked.c.account == "",
                and_(
                    func.split_part(T.arn, ":", 5) == asked.c.account,
                    func.split_part(T.arn, ":", 4) == asked.c.region,
                ),
            ),
        )
        .order_by(T.created_at, T.arn)
        # Written into the SQL: a bound LIMIT leaves a generic plan guessing its size.
        .limit(literal_column(str(MAX_TASKS)))
        .lateral("task")
    )
    tasks = (
        select(asked.c.n, *tasks_of.c)
        .select_from(asked)
        .join(tasks_of, true())
        .order_by(asked.c.n, tasks_of.c.created_at, tasks_of.c.arn)
    )

    if one:
        # The parameters are the one deployment's: no per-deployment rows to join.
        source, own, arns = "(SELECT 1 AS n) AS w", "CAST(:event_ids AS TEXT[])", "a"
        tasks_of_it = "unnest(CAST(:task_arns AS TEXT[])) AS a"
        start_at, end_at = "CAST(:starts AS TIMESTAMPTZ)", "CAST(:ends AS TIMESTAMPTZ)"
        service_arn = "CAST(:service_arns AS TEXT)"
    else:
        source = (
            "unnest(CAST(:service_arns AS TEXT[]), CAST(:starts AS TIMESTAMPTZ[]),"
            " CAST(:ends AS TIMESTAMPTZ[])) WITH ORDINALITY AS w(service_arn, start_at, end_at, n)"
        )
        own = (
            "ARRAY(SELECT o.id FROM unnest(CAST(:event_ids AS TEXT[]),"
            " CAST(:event_owners AS BIGINT[])) AS o(id, n) WHERE o.n = w.n)"
        )
        arns = "o.arn"
        tasks_of_it = (
            "unnest(CAST(:task_arns AS TEXT[]), CAST(:task_owners AS BIGINT[])) AS o(arn, n)"
            " WHERE o.n = w.n"
        )
        start_at, end_at, service_arn = "w.start_at", "w.end_at", "w.service_arn"
    events = text(
        f"SELECT w.n, ev.* FROM {source}"
        f" CROSS JOIN LATERAL (SELECT * FROM (SELECT {_EVENT_FIELDS} FROM raw_events AS e"
        f" WHERE e.id = ANY({own})"
        # The tasks' events in one GIN lookup per partition: `@> ANY` of an array the
        # executor builds from the parameter. A join over unnest() of the parameter
        # instead lets the prepared statement's generic plan scan every partition.
        f" UNION ALL SELECT {_EVENT_FIELDS} FROM raw_events AS e"
        f" WHERE e.resources @> ANY(ARRAY(SELECT jsonb_build_array({arns}) FROM {tasks_of_it}))"
        f" UNION ALL SELECT {_EVENT_FIELDS} FROM raw_events AS e"
        " WHERE e.detail_type = ANY(CAST(:action_types AS TEXT[]))"
        f" AND e.time >= {start_at} AND e.time <= {end_at}"
        f" AND e.resources @> jsonb_build_array({service_arn})"
        f") AS all_events ORDER BY time, id LIMIT {MAX_EVENTS}) AS ev"
        " ORDER BY w.n, ev.time, ev.id"
    ).columns(*_EVENT_COLUMNS)

    # The services whose ALB points are read, numbered from 1, in their scope and window.
    services = (
        func.unnest(
            *(
                _per_deployment(name, item, one)
                for name, item in zip(_POINTS_PARAMETERS, _POINTS_TYPES, strict=True)
            )
        )
        .table_valued(
            "cluster", "service", "account", "region", "start_at", "end_at", with_ordinality="n"
        )
        .render_derived("asked")
    )
    points_of = (
        select(
            func.coalesce(P.dimensions["TargetGroup"].astext, "").label("target_group"),
            P.name,
            P.statistic,
            P.timestamp,
            P.value,
            P.id,
        )
        .where(
            P.cluster_name == services.c.cluster,
            P.service_name == services.c.service,
            P.account_id == services.c.account,
            P.region == services.c.region,
            P.timestamp >= services.c.start_at,
            P.timestamp <= services.c.end_at,
            P.namespace == ALB,
        )
        .order_by(P.timestamp, P.name, P.statistic, P.id)
        .limit(literal_column(str(MAX_POINTS)))
        .lateral("point")
    )
    points = (
        select(
            services.c.n,
            points_of.c.target_group,
            points_of.c.name,
            points_of.c.statistic,
            points_of.c.timestamp,
            points_of.c.value,
        )
        .select_from(services)
        .join(points_of, true())
        .order_by(
            services.c.n,
            points_of.c.timestamp,
            points_of.c.name,
            points_of.c.statistic,
            points_of.c.id,
        )
    )
    return Statements(deployments, tasks, events, points)


_TASK_COLUMNS = (
    T.arn,
    T.last_status,
    T.stop_code,
    T.stopped_reason,
    T.containers,
    func.coalesce(T.stopped_at, T.updated_at).label("stopped_at"),
    T.created_at,
)

_EVENT_FIELDS = (
    "e.id, e.detail_type, e.time,"
    " e.detail->>'eventName' AS event_name, e.detail->>'reason' AS reason,"
    " e.detail->>'taskArn' AS task_arn, e.detail->>'lastStatus' AS last_status,"
    " e.detail->>'desiredStatus' AS desired_status, e.detail->>'stopCode' AS stop_code,"
    " e.detail->>'stoppedReason' AS stopped_reason,"
    " e.detail->>'lifecycleStage' AS lifecycle_stage, e.detail->>'hookType' AS hook_type,"
    " e.detail->>'state' AS state, e.detail->>'createdAt' AS created_at"
)
_EVENT_COLUMNS: tuple[ColumnElement[Any], ...] = (
    literal_column("n", BigInteger),
    literal_column("id", Text),
    literal_column("detail_type", Text),
    literal_column("time", DateTime(timezone=True)),
    *(
        literal_column(name, Text)
        for name in (
            "event_name",
            "reason",
            "task_arn",
            "last_status",
            "desired_status",
            "stop_code",
            "stopped_reason",
            "lifecycle_stage",
            "hook_type",
            "state",
            "created_at",
        )
    ),
)

#: The per-deployment parameters of the ALB points' statement, in the order of its
#: ``unnest``, and their element types.
_POINTS_PARAMETERS = ("clusters", "services", "accounts", "regions", "starts", "ends")
_POINTS_TYPES: tuple[TypeEngine[Any], ...] = (
    Text(),
    Text(),
    Text(),
    Text(),
    DateTime(timezone=True),
    DateTime(timezone=True),
)

#: For several deployments: ``ids`` and the other per-deployment parameters are arrays.
#: Each row of ``tasks``, ``events`` and ``points`` carries its deployment's number ``n``
#: (from 1, in the order of the arrays); ``event_ids``/``event_owners`` and
#: ``task_arns``/``task_owners`` pair each id or ARN with its deployment's number.
MANY = _statements(one=False)
#: For one deployment: its per-deployment parameters are single values.
ONE = _statements(one=True)


def connection_reader(conn: AsyncConnection) -> Reader:
    """A :data:`Reader` over one connection (SQLAlchemy's execution path)."""

    async def read(stmt: Executable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = await conn.execute(stmt, dict(params))
        keys = list(result.keys())
        return [dict(zip(keys, row, strict=True)) for row in result]

    return read


def session_reader(session: AsyncSession) -> Reader:
    """A :data:`Reader` inside a session's transaction: it sees the transaction's
    own writes (the alerts' cause is gathered before they commit)."""

    async def read(stmt: Executable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        # The session's connection runs Core statements without the ORM's execution
        # context: the same transaction, a fixed cost less per statement.
        conn = await session.connection()
        result = await conn.execute(stmt, dict(params))
        keys = list(result.keys())
        return [dict(zip(keys, row, strict=True)) for row in result]

    return read


@dataclass(frozen=True, slots=True)
class Gathered:
    """What the database holds about one deployment."""

    deployment: dict[str, Any]
    tasks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    points: list[dict[str, Any]]
    facts: DeploymentFacts

    @property
    def needs_cause(self) -> bool:
        """Failed, rolled back, failed to roll back, or stuck."""
        return bool(self.deployment["stuck"]) or self.deployment["outcome"] in FAILED_OUTCOMES


async def gather(
    read: Reader, key: DeploymentKey, *, now: datetime | None = None
) -> Gathered | None:
    """Everything about the deployment ``key`` (its tasks' events included), or None
    if no such deployment is known."""
    found = await gather_many(read, [key], now=now, task_events=True)
    return found.get(key)


async def gather_many(
    read: Reader,
    keys: Sequence[DeploymentKey],
    *,
    now: datetime | None = None,
    task_events: bool = True,
) -> dict[DeploymentKey, Gathered]:
    """Everything about each of the deployments ``keys`` that is known: four
    statements for every :data:`MAX_DEPLOYMENTS` of them, however many there are.

    Without ``task_events`` the events are the deployments' own and their
    services' Service Action events only, for the cause: the facts
    (:func:`build_facts`) read no task's events (a task's stop is read from its
    row), and skipping them saves a GIN lookup per task ARN, each of which scans
    the index's pending list of recent inserts.
    """
    ids = list(dict.fromkeys(keys))
    gathered: dict[DeploymentKey, Gathered] = {}
    for start in range(0, len(ids), MAX_DEPLOYMENTS):
        chunk = ids[start : start + MAX_DEPLOYMENTS]
        gathered.update(await _gather_chunk(read, chunk, now or datetime.now(UTC), task_events))
    return gathered


async def _gather_chunk(
    read: Reader, keys: list[DeploymentKey], now: datetime, task_events: bool
) -> dict[DeploymentKey, Gathered]:
    deployments = await read(_form(len(keys) == 1).deployments, _key_values(keys))
    if not deployments:
        return {}
    # Numbered from 1 in this order, as the statements' WITH ORDINALITY numbers them.
    found = [DeploymentKey(d["account_id"], d["region"], d["id"]) for d in deployments]
    tasks: dict[int, list[dict[str, Any]]] = {n: [] for n in range(1, len(found) + 1)}
    one = len(found) == 1
    for row in await read(_form(one).tasks, _key_values(found)):
        tasks[row.pop("n")].append(row)
    windows = [window(d, now) for d in deployments]
    event_ids: list[str] = []
    event_owners: list[int] = []
    task_arns: list[str] = []
    task_owners: list[int] = []
    for n, d in enumerate(deployments, 1):
        own = [str(e) for e in (d["event_ids"] or [])][:MAX_EVENT_IDS]
        event_ids += own
        event_owners += [n] * len(own)
        if task_events:
            task_arns += [t["arn"] for t in tasks[n]]
            task_owners += [n] * len(tasks[n])
    events: dict[int, list[dict[str, Any]]] = {n: [] for n in tasks}
    per_deployment: dict[str, list[Any]] = {
        "service_arns": [d["service_arn"] or "" for d in deployments],
        "starts": [(start or end) - BEFORE_START for start, end in windows],
        "ends": [end + AFTER_END for _, end in windows],
    }
    rows = await read(
        _form(one).events,
        _bound(per_deployment, one)
        | {
            "event_ids": event_ids,
            "event_owners": event_owners,
            "task_arns": task_arns,
            "task_owners": task_owners,
            "action_types": list(SERVICE_ACTION_TYPES),
        },
    )
    for row in rows:
        events[row.pop("n")].append(row)
    # ALB points, for the deployments with a service, a scope and a start: the
    # statement numbers them from 1 in the order of these lists.
    asked: dict[str, list[Any]] = {k: [] for k in _POINTS_PARAMETERS}
    numbers: list[int] = []
    for n, (d, (start, end)) in enumerate(zip(deployments, windows, strict=True), 1):
        scope = (d["account_id"], d["region"]) if d["account_id"] and d["region"] else None
        scope = scope or scope_of(d["service_arn"] or d["cluster_arn"])
        if d["cluster"] and d["service"] and start is not None and scope:
            numbers.append(n)
            for name, value in zip(
                asked, (d["cluster"], d["service"], *scope, start, end + AFTER_END), strict=True
            ):
                asked[name].append(value)
    points: dict[int, list[dict[str, Any]]] = {n: [] for n in tasks}
    if numbers:
        one = len(numbers) == 1
        for row in await read(_form(one).points, _bound(asked, one)):
            points[numbers[row.pop("n") - 1]].append(row)
    gathered: dict[DeploymentKey, Gathered] = {}
    for n, (key, d) in enumerate(zip(found, deployments, strict=True), 1):
        unique = _unique(events[n])
        facts = build_facts(d, tasks[n], unique, points[n])
        gathered[key] = Gathered(d, tasks[n], unique, points[n], facts)
    return gathered


def _key_values(keys: Sequence[DeploymentKey]) -> dict[str, Any]:
    """The :data:`_KEY_PARAMETERS` of ``keys`` in the form of :func:`_form`."""
    columns = {"accounts": [k.account_id for k in keys], "regions": [k.region for k in keys]}
    return _bound(columns | {"ids": [k.id for k in keys]}, len(keys) == 1)


def _form(one: bool) -> Statements:
    """:data:`ONE` for one deployment, else :data:`MANY`."""
    return ONE if one else MANY


def _bound(values: Mapping[str, Sequence[Any]], one: bool) -> dict[str, Any]:
    """Per-deployment parameter values in the form of :func:`_form`: the arrays, or
    for one deployment (``one``) its values."""
    return {k: v[0] if one else list(v) for k, v in values.items()}


def scope_of(arn: str | None) -> tuple[str, str] | None:
    """(account, region) of an ARN (``arn:partition:service:region:account:...``);
    None without one. Names are unique only within it: the points of a service are
    those read in its own scope."""
    parts = (arn or "").split(":", 5)
    if len(parts) < 6 or parts[0] != "arn" or not parts[3] or not parts[4]:
        return None
    return parts[4], parts[3]


def window(deployment: Mapping[str, Any], now: datetime) -> tuple[datetime | None, datetime]:
    """(start, end) of a deployment's rollout: its start, and its end (finished, or the
    last event of one that is over, or now while it is in progress)."""
    start = deployment.get("started_at")
    end = deployment.get("finished_at")
    if end is None:
        over = deployment.get("outcome") in TERMINAL or deployment.get("outcome") == Outcome.FAILED
        stamps = [t for t in (deployment.get("last_event_at"), deployment.get("updated_at")) if t]
        end = max(stamps) if over and stamps else now
    if start is not None and end < start:
        end = start
    return start, end


def _unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            unique.append(event)
    return unique


# ---------------------------------------------------------------- facts (pure)


def containers_of(value: Any) -> tuple[ContainerFact, ...]:
    """The stored ``tasks.containers`` JSON as container facts (unexpected shapes skipped)."""
    found: list[ContainerFact] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        code = item.get("exit_code", item.get("exitCode"))
        name, reason = item.get("name"), item.get("reason")
        found.append(
            ContainerFact(
                name=name if isinstance(name, str) else None,
                exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                reason=reason if isinstance(reason, str) else None,
            )
        )
    return tuple(found)


def task_fact(row: Mapping[str, Any]) -> TaskFact:
    return TaskFact(
        arn=row["arn"],
        at=row["stopped_at"],
        stop_code=row["stop_code"],
        stopped_reason=row["stopped_reason"],
        containers=containers_of(row["containers"]),
    )


def failed_task_rows(tasks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The stopped tasks that count as failures (replaced tasks left out)."""
    return [t for t in tasks if t["last_status"] == "STOPPED" and is_failed(task_fact(t))]


_ALARM = re.compile(r"\balarms?\b", re.IGNORECASE)
_CODEDEPLOY_ERROR = re.compile(r"\(BatchGetDeployments\): (?:([A-Z][A-Z0-9_]+): )?(.*)$", re.DOTALL)


def configured_alarms(deployment_configuration: Any) -> tuple[str, ...]:
    """The CloudWatch alarm names of a service's deployment configuration."""
    config = deployment_configuration if isinstance(deployment_configuration, dict) else {}
    alarms = config.get("alarms")
    names = alarms.get("alarmNames", alarms.get("alarm_names")) if isinstance(alarms, dict) else []
    return tuple(n for n in (names if isinstance(names, list) else []) if isinstance(n, str))


#: The reason of an alarm fact that ECS's service deployment record gives.
TRIGGERED = "triggered, as ECS's service deployment reports (DescribeServiceDeployments)"


def triggered_alarm_names(value: Any) -> tuple[str, ...]:
    """The stored ``deployments.triggered_alarms`` JSON as alarm names."""
    return tuple(n for n in (value if isinstance(value, list) else []) if isinstance(n, str))


def build_facts(
    deployment: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    points: Sequence[Mapping[str, Any]],
) -> DeploymentFacts:
    """The classifier's input from the gathered rows (pure)."""
    own = {str(e) for e in (deployment.get("event_ids") or [])}
    actions: list[ServiceActionFact] = []
    hooks: list[HookFact] = []
    alarms: list[AlarmFact] = []
    configured = configured_alarms(deployment.get("deployment_configuration"))
    for event in events:
        name = event["event_name"] or ""
        if event["detail_type"] in SERVICE_ACTION_TYPES and event["id"] not in own:
            actions.append(ServiceActionFact(event["time"], name, event["reason"]))
        elif event["detail_type"] == "ECS Hook State Change" and name:
            stage, hook_type = event["lifecycle_stage"], event["hook_type"]
            hooks.append(HookFact(event["time"], name, stage, hook_type))
        elif event["detail_type"] == "ECS Deployment State Change" and _ALARM.search(
            event["reason"] or ""
        ):
            alarms.append(_alarm(event["time"], event["reason"], configured))
    reason = deployment.get("reason")
    triggered = triggered_alarm_names(deployment.get("triggered_alarms"))
    if triggered:
        # ECS's service deployment names the alarms that triggered: they replace the
        # names guessed from the configured ones.
        alarms = [AlarmFact(deployment.get("last_event_at"), triggered, TRIGGERED)]
    if not alarms and reason and _ALARM.search(reason) and deployment.get("kind") != "codedeploy":
        alarms.append(_alarm(deployment.get("last_event_at"), reason, configured))
    codedeploy: list[CodeDeployFact] = []
    if deployment.get("kind") == DeploymentKind.CODEDEPLOY and reason:
        match = _CODEDEPLOY_ERROR.search(reason)
        if match:
            codedeploy.append(CodeDeployFact(deployment.get("last_event_at"), *match.groups()))
    return DeploymentFacts(
        tasks=tuple(task_fact(t) for t in tasks if t["last_status"] == "STOPPED"),
        service_actions=tuple(actions),
        hooks=tuple(hooks),
        alarms=tuple(alarms),
        target_health=tuple(
            TargetHealthPoint(
                p["target_group"] or "", p["name"], p["statistic"], p["timestamp"], p["value"]
            )
            for p in points
        ),
        codedeploy=tuple(codedeploy),
        stuck=bool(deployment.get("stuck")),
        reason=reason,
    )


def _alarm(at: datetime | None, reason: str | None, configured: tuple[str, ...]) -> AlarmFact:
    named = tuple(n for n in configured if n in (reason or ""))
    return AlarmFact(at, named or configured, reason)


# ---------------------------------------------------------------- timeline (pure)

TIMELINE_KINDS: dict[str, str] = {
    "ECS Task State Change": "task",
    "ECS Deployment State Change": "deployment",
    "ECS Daemon Deployment State Change": "deployment",
    "ECS Service Action": "service_action",
    "ECS Daemon Service Action": "service_action",
    "ECS Hook State Change": "hook",
    "CodeDeploy Deployment State-change Notification": "codedeploy",
}


def timeline_entry(event: Mapping[str, Any]) -> dict[str, Any]:
    """``{at, kind, summary, event_id}`` of one gathered event."""
    kind = TIMELINE_KINDS.get(event["detail_type"], "event")
    return {
        "at": event["time"],
        "kind": kind,
        "summary": _summary(kind, event)[:500],
        "event_id": event["id"],
    }


def _summary(kind: str, e: Mapping[str, Any]) -> str:
    if kind == "task":
        task = (e["task_arn"] or "").rsplit("/", 1)[-1] or "a task"
        said = f"task {task} {e['last_status'] or '?'}"
        if e["desired_status"] and e["desired_status"] != e["last_status"]:
            said += f" (desired {e['desired_status']})"
        stop = ": ".join(p for p in (e["stop_code"], e["stopped_reason"]) if p)
        return f"{said}: {stop}" if stop else said
    if kind == "hook":
        stage = f" at {e['lifecycle_stage']}" if e["lifecycle_stage"] else ""
        return f"{e['event_name'] or 'hook'}{stage}"
    if kind == "codedeploy":
        return f"CodeDeploy {e['state'] or 'state change'}"
    name = e["event_name"] or e["detail_type"]
    return f"{name}: {e['reason']}" if e["reason"] else name
