"""Gather what the database holds about one deployment, for its cause and its detail.

Read-only: a handful of statements, each served by an index (docs/api.md,
"Indexes"):

* the deployment (primary key) with its service's load balancers and deployment
  alarms (``ix_services_cluster_name_name``);
* its tasks: those it started (``startedBy``, ``ix_tasks_deployment_id``);
* its events: its own (primary key), each task's (the GIN index on
  ``raw_events.resources``) and the service's Service Action events during the
  rollout (``ix_raw_events_detail_type_time``);
* the ALB points of its service, read in the service's own scope (account and
  region), during the rollout and ten minutes after
  (``ix_metric_points_cluster_service_time``).

Statements are built once and executed by a :data:`Reader`, so the API runs them
on its own read path. Everything is bounded: at most :data:`MAX_TASKS` tasks,
:data:`MAX_EVENTS` events and :data:`MAX_POINTS` points.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Executable

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
#: ALB points and Service Action events are read until this long after the deployment ends.
AFTER_END = timedelta(minutes=10)
#: The Service Action events read start this long before the deployment does.
BEFORE_START = timedelta(minutes=1)
ALB = "AWS/ApplicationELB"
SERVICE_ACTION_TYPES = ("ECS Service Action", "ECS Daemon Service Action")


D = models.Deployment
S = models.Service
T = models.Task
P = models.MetricPoint

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

#: The deployment with the columns of /v1/deployments, plus what gathering needs.
DEPLOYMENT = (
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
    .where(
        D.account_id == bindparam("account_id"),
        D.region == bindparam("region"),
        D.id == bindparam("id"),
    )
)

_TASK_COLUMNS = (
    T.arn,
    T.last_status,
    T.stop_code,
    T.stopped_reason,
    T.containers,
    func.coalesce(T.stopped_at, T.updated_at).label("stopped_at"),
    T.created_at,
)

#: Tasks started by the deployment (ECS ``startedBy``) in its scope.
TASKS = (
    select(*_TASK_COLUMNS)
    .where(
        T.deployment_id == bindparam("id"),
        or_(
            cast(bindparam("account_id"), Text) == "",
            and_(
                func.split_part(T.arn, ":", 5) == bindparam("account_id"),
                func.split_part(T.arn, ":", 4) == bindparam("region"),
            ),
        ),
    )
    .order_by(T.created_at, T.arn)
    .limit(MAX_TASKS)
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

#: The deployment's own events, its tasks' events and the service's Service Action
#: events during the rollout, oldest first.
EVENTS = text(
    f"SELECT * FROM (SELECT {_EVENT_FIELDS} FROM raw_events AS e"
    " WHERE e.id = ANY(CAST(:event_ids AS TEXT[]))"
    # The tasks' events in one GIN lookup per partition: `@> ANY` of an array the
    # executor builds from the parameter. A join over unnest() of the parameter
    # instead lets the prepared statement's generic plan scan every partition.
    f" UNION ALL SELECT {_EVENT_FIELDS} FROM raw_events AS e"
    " WHERE e.resources @> ANY(ARRAY(SELECT jsonb_build_array(a)"
    " FROM unnest(CAST(:task_arns AS TEXT[])) AS a))"
    f" UNION ALL SELECT {_EVENT_FIELDS} FROM raw_events AS e"
    " WHERE e.detail_type = ANY(CAST(:action_types AS TEXT[]))"
    " AND e.time >= CAST(:start AS TIMESTAMPTZ) AND e.time <= CAST(:end AS TIMESTAMPTZ)"
    " AND e.resources @> jsonb_build_array(CAST(:service_arn AS TEXT))"
    f") AS all_events ORDER BY time, id LIMIT {MAX_EVENTS}"
).columns(
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

#: ALB points of the service's target groups in a time window.
POINTS = (
    select(
        func.coalesce(P.dimensions["TargetGroup"].astext, "").label("target_group"),
        P.name,
        P.statistic,
        P.timestamp,
        P.value,
    )
    .where(
        P.cluster_name == bindparam("cluster"),
        P.service_name == bindparam("service"),
        P.account_id == bindparam("account"),
        P.region == bindparam("region"),
        P.timestamp >= bindparam("start", type_=DateTime(timezone=True)),
        P.timestamp <= bindparam("end", type_=DateTime(timezone=True)),
        P.namespace == ALB,
    )
    .order_by(P.timestamp, P.name, P.statistic, P.id)
    .limit(MAX_POINTS)
)


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
        result = await session.execute(stmt, dict(params))
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
    """Everything about the deployment ``key``, or None if no such deployment is known."""
    found = await read(DEPLOYMENT, key._asdict())
    if not found:
        return None
    deployment = found[0]
    start, end = window(deployment, now or datetime.now(UTC))
    tasks = await read(TASKS, key._asdict())
    event_ids = [str(e) for e in (deployment["event_ids"] or [])][:MAX_EVENT_IDS]
    window_start = (start or end) - BEFORE_START
    events = await read(
        EVENTS,
        {
            "event_ids": event_ids,
            "task_arns": [t["arn"] for t in tasks],
            "action_types": list(SERVICE_ACTION_TYPES),
            "start": window_start,
            "end": end + AFTER_END,
            "service_arn": deployment["service_arn"] or "",
        },
    )
    events = _unique(events)
    points: list[dict[str, Any]] = []
    scope = (key.account_id, key.region) if key.account_id and key.region else None
    scope = scope or scope_of(deployment["service_arn"] or deployment["cluster_arn"])
    if deployment["cluster"] and deployment["service"] and start is not None and scope:
        points = await read(
            POINTS,
            {
                "cluster": deployment["cluster"],
                "service": deployment["service"],
                "account": scope[0],
                "region": scope[1],
                "start": start,
                "end": end + AFTER_END,
            },
        )
    facts = build_facts(deployment, tasks, events, points)
    return Gathered(deployment, tasks, events, points, facts)


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
