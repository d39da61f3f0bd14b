"""Describe results into state, through the same version-guarded upserts as events.

* Tasks and container instances: the Describe output has the shape of the
  matching event's ``detail``, so it goes through the event normaliser and the
  event upserts (:mod:`service.state.apply`): applied only when its ``version``
  is newer than the stored one, so a Describe never overwrites a newer event.
* Services and clusters: their Describe-only columns, guarded by the time of
  the request (``described_at``), so an older answer never overwrites a newer
  one; rows that did not change are left alone (and not counted as drift).
* Tags: ``resource_tags`` with ``known = true``.
* Task definitions: immutable, inserted once; tasks that lack cpu, memory or a
  container's image take them from their task definition.
* Gone: a resource reported MISSING (or no longer describable) gets ``gone_at``.

Each function runs in the caller's transaction. :func:`write_described` is the
one entry point of a Describe call's results; it writes tables in the lock order
of :data:`service.db.WRITE_ORDER` (the consumer's): the resource's own table
(upsert, then gone), then ``resource_tags``; every statement locks its rows in
the order the consumer's statement on that table uses. The caller runs it under
:func:`service.db.retry_on_contention`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import PermanentError
from service.events.arns import parse_arn
from service.events.models import NormalisedEvent
from service.events.normalise import normalise
from service.events.times import iso
from service.logging import get_logger
from service.state import apply as state_apply
from service.state import rows as r
from service.state.bulk import bulk_insert, execute, payload
from service.state.models import Cluster, Service, TaskDefinition

log = get_logger(__name__)


def _jsonable(value: Any) -> Any:
    """A Describe response as plain JSON values (botocore gives datetimes)."""
    return json.loads(json.dumps(value, default=_time))


def _time(value: object) -> str:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _as_event(
    detail_type: str, detail: Mapping[str, Any], now: datetime, arn_key: str
) -> NormalisedEvent | None:
    """The Describe output as the event the normaliser expects (never stored raw); its
    id is ``describe:<ARN>``, so outcomes map back to resources."""
    try:
        return normalise(
            {
                "id": f"describe:{detail.get(arn_key)}",
                "detail-type": detail_type,
                "source": "ecswatch.describe",
                "time": now.isoformat(),
                "detail": _jsonable(dict(detail)),
            },
            received_at=now,
        )
    except PermanentError as exc:
        log.warning("describe_output_refused", detail_type=detail_type, error=exc.detail)
        return None


# ---------------------------------------------------------------- tags

_UPSERT_TAGS = (
    "INSERT INTO resource_tags (resource_arn, tags, known, fetched_at)"
    " SELECT s.arn, s.tags, true, s.fetched_at FROM json_to_recordset($1::json)"
    " AS s(arn TEXT, tags JSONB, fetched_at TIMESTAMPTZ) ORDER BY s.arn"
    " ON CONFLICT (resource_arn) DO UPDATE SET tags = excluded.tags, known = true,"
    " fetched_at = excluded.fetched_at"
    " WHERE resource_tags.fetched_at IS NULL OR resource_tags.fetched_at <= excluded.fetched_at"
)


def tags_of(item: Mapping[str, Any]) -> dict[str, str]:
    """ECS ``tags: [{key, value}]`` as an object."""
    tags: dict[str, str] = {}
    for tag in item.get("tags") or []:
        key = tag.get("key")
        if isinstance(key, str):
            value = tag.get("value")
            tags[key] = value if isinstance(value, str) else ""
    return tags


async def write_tags(
    session: AsyncSession, tags: Mapping[str, dict[str, str]], fetched_at: datetime
) -> None:
    if tags:
        rows = [{"arn": a, "tags": t, "fetched_at": fetched_at} for a, t in sorted(tags.items())]
        await execute(session, _UPSERT_TAGS, payload(rows))


# ---------------------------------------------------------------- tasks and instances


async def write_tasks(
    session: AsyncSession, tasks: Sequence[Mapping[str, Any]], now: datetime
) -> set[str]:
    """Upsert described tasks (version-guarded); return the ARNs applied."""
    events = [
        e for t in tasks if (e := _as_event("ECS Task State Change", t, now, "taskArn")) is not None
    ]
    if not events:
        return set()
    ids = [e.envelope.id for e in events]
    before = await _state(session, "tasks", _TASK_STATE, ids)
    outcomes = await state_apply.apply_versioned(session, events, _DESCRIBED_TASKS)
    back = await _back(session, "tasks", ids)
    return await _changed(session, "tasks", _TASK_STATE, _applied_arns(outcomes), before) | back


async def _back(session: AsyncSession, table: str, ids: Sequence[str]) -> set[str]:
    """ECS describes them again: no longer gone (a Describe that failed for a moment)."""
    arns = [i.removeprefix("describe:") for i in ids]
    result = await execute(
        session,
        f"UPDATE {table} SET gone_at = NULL WHERE arn = ANY($1::TEXT[]) AND gone_at IS NOT NULL"
        " RETURNING arn",
        sorted(arns),
    )
    return {row[0] for row in result}


# A Describe without cpu or memory (they come from the task definition) keeps them.
_DESCRIBED_TASKS = dataclasses.replace(
    state_apply.TASKS, sticky=(*state_apply.TASKS.sticky, "cpu", "memory")
)
# What counts as a change (drift) when a Describe re-applies a versionless row.
_TASK_STATE = (
    "version",
    "last_status",
    "desired_status",
    "health_status",
    "stop_code",
    "container_instance_arn",
)
_INSTANCE_STATE = (
    "version",
    "status",
    "agent_connected",
    "running_tasks_count",
    "pending_tasks_count",
)


async def _state(
    session: AsyncSession, table: str, columns: Sequence[str], ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    arns = [i.removeprefix("describe:") for i in ids]
    result = await execute(
        session,
        f"SELECT arn, {', '.join(columns)} FROM {table} WHERE arn = ANY($1::TEXT[])",
        arns,
    )
    return {row[0]: tuple(row[1:]) for row in result}


async def _changed(
    session: AsyncSession,
    table: str,
    columns: Sequence[str],
    applied: set[str],
    before: dict[str, tuple[Any, ...]],
) -> set[str]:
    """The applied rows whose state differs from before (for counting drift only)."""
    if not applied:
        return set()
    after = await _state(session, table, columns, sorted(applied))
    return {arn for arn in applied if before.get(arn) != after.get(arn)}


def _applied_arns(outcomes: Mapping[str, state_apply.Applied]) -> set[str]:
    return {
        event_id.removeprefix("describe:")
        for event_id, outcome in outcomes.items()
        if outcome is state_apply.Applied.APPLIED
    }


async def write_container_instances(
    session: AsyncSession, instances: Sequence[Mapping[str, Any]], now: datetime
) -> set[str]:
    """Upsert described container instances (version-guarded) and their health."""
    events = [
        e
        for i in instances
        if (e := _as_event("ECS Container Instance State Change", i, now, _CI_ARN)) is not None
    ]
    health = [
        e
        for i in instances
        if isinstance(i.get("healthStatus"), dict)
        and (
            e := _as_event("ECS Container Instance Health Change", _health_detail(i), now, _CI_ARN)
        )
        is not None
    ]
    applied: set[str] = set()
    if events:
        ids = [e.envelope.id for e in events]
        before = await _state(session, "container_instances", _INSTANCE_STATE, ids)
        outcomes = await state_apply.apply_versioned(session, events, state_apply.INSTANCES)
        applied = await _changed(
            session, "container_instances", _INSTANCE_STATE, _applied_arns(outcomes), before
        ) | await _back(session, "container_instances", ids)
    if health:
        await state_apply.apply_health(session, health)
    return applied


_CI_ARN = "containerInstanceArn"


def _health_detail(instance: Mapping[str, Any]) -> dict[str, Any]:
    status = instance.get("healthStatus") or {}
    return {
        "containerInstanceArn": instance.get("containerInstanceArn"),
        "ec2InstanceId": instance.get("ec2InstanceId"),
        "overallStatus": status.get("overallStatus"),
        "healthChecks": status.get("details") or [],
    }


# ---------------------------------------------------------------- services


def _deployment_configuration(configuration: Mapping[str, Any]) -> dict[str, Any]:
    breaker = configuration.get("deploymentCircuitBreaker") or {}
    alarms = configuration.get("alarms") or {}
    return {
        "circuit_breaker": {"enable": breaker.get("enable"), "rollback": breaker.get("rollback")}
        if breaker
        else None,
        "alarms": {
            "names": list(alarms.get("alarmNames") or []),
            "enable": alarms.get("enable"),
            "rollback": alarms.get("rollback"),
        }
        if alarms
        else None,
        "maximum_percent": configuration.get("maximumPercent"),
        "minimum_healthy_percent": configuration.get("minimumHealthyPercent"),
        "strategy": configuration.get("strategy"),
    }


def _current_deployment(deployment: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": deployment.get("id"),
        "status": deployment.get("status"),
        "task_definition": deployment.get("taskDefinition"),
        "desired_count": deployment.get("desiredCount"),
        "running_count": deployment.get("runningCount"),
        "pending_count": deployment.get("pendingCount"),
        "failed_tasks": deployment.get("failedTasks"),
        "rollout_state": deployment.get("rolloutState"),
        "rollout_state_reason": deployment.get("rolloutStateReason"),
        "launch_type": deployment.get("launchType"),
        "created_at": deployment.get("createdAt"),
        "updated_at": deployment.get("updatedAt"),
    }


def _load_balancer(lb: Mapping[str, Any]) -> dict[str, Any]:
    advanced = lb.get("advancedConfiguration") or {}
    return {
        "target_group_arn": lb.get("targetGroupArn"),
        "load_balancer_name": lb.get("loadBalancerName"),
        "container_name": lb.get("containerName"),
        "container_port": lb.get("containerPort"),
        # ECS native blue/green: the other colour's target group.
        "alternate_target_group_arn": advanced.get("alternateTargetGroupArn"),
    }


def service_row_of_describe(service: Mapping[str, Any], described_at: datetime) -> r.Row | None:
    """The columns DescribeServices owns, for one service (pure)."""
    data = _jsonable(dict(service))
    arn = data.get("serviceArn")
    if not isinstance(arn, str):
        return None
    cluster_arn = data.get("clusterArn")
    cluster_name = cluster_arn.rpartition("/")[2] if isinstance(cluster_arn, str) else None
    controller = (data.get("deploymentController") or {}).get("type")
    return {
        "arn": arn,
        "name": data.get("serviceName") or arn.rpartition("/")[2],
        "cluster_arn": cluster_arn,
        "cluster_name": cluster_name,
        "status": data.get("status"),
        "desired_count": data.get("desiredCount"),
        "running_count": data.get("runningCount"),
        "pending_count": data.get("pendingCount"),
        "launch_type": data.get("launchType"),
        "task_definition": data.get("taskDefinition"),
        "deployment_controller": controller or "ECS",
        "capacity_provider_strategy": [
            {
                "capacity_provider": s.get("capacityProvider"),
                "weight": s.get("weight"),
                "base": s.get("base"),
            }
            for s in data.get("capacityProviderStrategy") or []
        ],
        "deployment_configuration": _deployment_configuration(
            data.get("deploymentConfiguration") or {}
        ),
        "current_deployments": [_current_deployment(d) for d in data.get("deployments") or []],
        "load_balancers": [_load_balancer(lb) for lb in data.get("loadBalancers") or []],
        "described_at": described_at,
    }


_SERVICE_STATE = (
    "status",
    "desired_count",
    "running_count",
    "pending_count",
    "launch_type",
    "task_definition",
    "deployment_controller",
    "capacity_provider_strategy",
    "deployment_configuration",
    "current_deployments",
    "load_balancers",
)
_SERVICE_COLUMNS = ("arn", "name", "cluster_arn", "cluster_name", *_SERVICE_STATE, "described_at")


def _described_upsert(table: str, state: Sequence[str], sticky: Sequence[str]) -> str:
    sets = [f"{c} = excluded.{c}" for c in state]
    sets += [f"{c} = coalesce({table}.{c}, excluded.{c})" for c in sticky]
    sets += ["described_at = excluded.described_at", "updated_at = now()", "gone_at = NULL"]
    current = ", ".join(f"{table}.{c}" for c in state)
    new = ", ".join(f"excluded.{c}" for c in state)
    return (
        f" ON CONFLICT (arn) DO UPDATE SET {', '.join(sets)}"
        f" WHERE ({table}.described_at IS NULL OR {table}.described_at <= excluded.described_at)"
        f" AND (({current}) IS DISTINCT FROM ({new}) OR {table}.gone_at IS NOT NULL"
        f" OR {table}.described_at IS NULL)"
        " RETURNING arn"
    )


# Rows go in the order of the array, sorted by ARN in Python as the consumer's
# service and cluster upserts send them (byte order, whatever the collation).
_UPSERT_SERVICES = bulk_insert(Service, _SERVICE_COLUMNS, order_by=None) + _described_upsert(
    "services", _SERVICE_STATE, ("cluster_arn", "cluster_name")
)


async def write_services(
    session: AsyncSession, services: Sequence[Mapping[str, Any]], described_at: datetime
) -> set[str]:
    """Upsert described services; return the rows that changed."""
    rows = [row for s in services if (row := service_row_of_describe(s, described_at))]
    if not rows:
        return set()
    rows.sort(key=lambda row: str(row["arn"]))
    result = await execute(session, _UPSERT_SERVICES, payload(rows))
    return {row[0] for row in result}


# ---------------------------------------------------------------- clusters


def cluster_row_of_describe(cluster: Mapping[str, Any], described_at: datetime) -> r.Row | None:
    """The columns DescribeClusters owns, for one cluster (pure)."""
    data = _jsonable(dict(cluster))
    arn = data.get("clusterArn")
    if not isinstance(arn, str):
        return None
    parsed = parse_arn(arn)
    region, account = (parsed.region or None, parsed.account or None) if parsed else (None, None)
    settings = [
        {"name": s.get("name"), "value": s.get("value")} for s in data.get("settings") or []
    ]
    insights = next((s["value"] for s in settings if s["name"] == "containerInsights"), None)
    return {
        "arn": arn,
        "name": data.get("clusterName") or arn.rpartition("/")[2],
        "account": account,
        "region": region,
        "status": data.get("status"),
        "active_services_count": data.get("activeServicesCount"),
        "running_tasks_count": data.get("runningTasksCount"),
        "pending_tasks_count": data.get("pendingTasksCount"),
        "registered_container_instances_count": data.get("registeredContainerInstancesCount"),
        "container_insights": insights,
        "settings": settings,
        "described_at": described_at,
    }


_CLUSTER_STATE = (
    "status",
    "active_services_count",
    "running_tasks_count",
    "pending_tasks_count",
    "registered_container_instances_count",
    "container_insights",
    "settings",
)
_CLUSTER_COLUMNS = ("arn", "name", "account", "region", *_CLUSTER_STATE, "described_at")
_UPSERT_CLUSTERS = bulk_insert(Cluster, _CLUSTER_COLUMNS, order_by=None) + _described_upsert(
    "clusters", _CLUSTER_STATE, ("account", "region")
)


async def write_clusters(
    session: AsyncSession, clusters: Sequence[Mapping[str, Any]], described_at: datetime
) -> set[str]:
    rows = [row for c in clusters if (row := cluster_row_of_describe(c, described_at))]
    if not rows:
        return set()
    rows.sort(key=lambda row: str(row["arn"]))
    result = await execute(session, _UPSERT_CLUSTERS, payload(rows))
    return {row[0] for row in result}


# ---------------------------------------------------------------- one Describe call

# The key order of each table's statements in the consumer: tasks and container
# instances by the database's collation (SQL ORDER BY), services and clusters by
# byte order (sorted in Python).
_KEY_ORDER = {
    "tasks": "arn",
    "container_instances": "arn",
    "services": 'arn COLLATE "C"',
    "clusters": 'arn COLLATE "C"',
}
_LOCK_ROWS = {
    table: f"SELECT arn FROM {table} WHERE arn = ANY($1::TEXT[]) ORDER BY {order} FOR UPDATE"
    for table, order in _KEY_ORDER.items()
}

_ARN_KEYS = {
    "tasks": "taskArn",
    "container_instances": "containerInstanceArn",
    "services": "serviceArn",
    "clusters": "clusterArn",
}


async def write_described(
    session: AsyncSession,
    kind: str,
    items: Sequence[Mapping[str, Any]],
    missing: Sequence[str],
    now: datetime,
) -> tuple[set[str], set[str]]:
    """Write one Describe call's results: the ``items`` ECS returned and the
    ``missing`` ARNs it no longer knows. Returns (ARNs whose row changed, ARNs
    marked gone).

    Tables in :data:`service.db.WRITE_ORDER`: the resource's own table first
    (its upsert, then gone), then ``resource_tags`` last, as the consumer does.
    When both found and missing rows are written, the table's existing rows are
    locked first in one sorted pass, not by two statements each sorted alone.
    """
    key = _ARN_KEYS[kind]
    tags = {i[key]: tags_of(i) for i in items if isinstance(i.get(key), str) and i[key]}
    if tags and missing:
        await execute(session, _LOCK_ROWS[kind], sorted({*tags, *missing}))
    changed: set[str] = set()
    if items:
        if kind == "tasks":
            changed = await write_tasks(session, items, now)
        elif kind == "container_instances":
            changed = await write_container_instances(session, items, now)
        elif kind == "services":
            changed = await write_services(session, items, now)
        elif kind == "clusters":
            changed = await write_clusters(session, items, now)
        else:
            raise ValueError(f"cannot write {kind!r}")
    gone = await mark_gone(session, kind, missing, now)
    await write_tags(session, tags, now)
    return changed, gone


# ---------------------------------------------------------------- gone


def _gone_sql(table: str, stamp: str) -> str:
    # The rows are locked by a sorted SELECT … FOR UPDATE first: an UPDATE alone
    # locks them in whatever order its plan visits them.
    return (
        f"UPDATE {table} AS t SET gone_at = $2, {stamp} = now()"
        f" FROM (SELECT arn FROM {table} WHERE arn = ANY($1::TEXT[]) AND gone_at IS NULL"
        f" ORDER BY {_KEY_ORDER[table]} FOR UPDATE) AS locked WHERE t.arn = locked.arn"
        " RETURNING t.arn"
    )


_GONE = {
    "tasks": _gone_sql("tasks", "seen_at"),
    "container_instances": _gone_sql("container_instances", "seen_at"),
    "services": _gone_sql("services", "updated_at"),
    "clusters": _gone_sql("clusters", "updated_at"),
}


async def mark_gone(
    session: AsyncSession, kind: str, arns: Sequence[str], at: datetime
) -> set[str]:
    """Mark resources ECS no longer knows (never delete them); return the ARNs marked."""
    if not arns:
        return set()
    result = await execute(session, _GONE[kind], sorted(set(arns)), at)
    return {row[0] for row in result}


_NEVER_DESCRIBED = {
    "services": "SELECT arn FROM services WHERE arn = ANY($1::TEXT[]) AND described_at IS NULL",
    "clusters": "SELECT arn FROM clusters WHERE arn = ANY($1::TEXT[]) AND described_at IS NULL",
}


async def never_described(session: AsyncSession, kind: str, arns: Sequence[str]) -> set[str]:
    """Which of ``arns`` (services or clusters) no Describe has written yet (or no row)."""
    if not arns:
        return set()
    result = await execute(session, _NEVER_DESCRIBED[kind], sorted(set(arns)))
    known = {row[0] for row in result}
    exists = await execute(
        session, _NEVER_DESCRIBED[kind].replace(" AND described_at IS NULL", ""), sorted(set(arns))
    )
    rows = {row[0] for row in exists}
    return known | (set(arns) - rows)


# ---------------------------------------------------------------- task definitions


def task_definition_row(definition: Mapping[str, Any], fetched_at: datetime) -> r.Row | None:
    data = _jsonable(dict(definition))
    arn = data.get("taskDefinitionArn")
    if not isinstance(arn, str):
        return None
    return {
        "arn": arn,
        "family": data.get("family"),
        "revision": data.get("revision"),
        "cpu": _text(data.get("cpu")),
        "memory": _text(data.get("memory")),
        "network_mode": data.get("networkMode"),
        "requires_compatibilities": list(data.get("requiresCompatibilities") or []),
        "containers": [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "cpu": c.get("cpu"),
                "memory": c.get("memory"),
                "essential": c.get("essential"),
            }
            for c in data.get("containerDefinitions") or []
        ],
        "fetched_at": fetched_at,
    }


def _text(value: object) -> str | None:
    return None if value is None else str(value)


_TD_COLUMNS = (
    "arn",
    "family",
    "revision",
    "cpu",
    "memory",
    "network_mode",
    "requires_compatibilities",
    "containers",
    "fetched_at",
)
_INSERT_TASK_DEFINITIONS = (
    bulk_insert(TaskDefinition, _TD_COLUMNS, order_by="arn") + " ON CONFLICT DO NOTHING"
)

# Tasks take what their (immutable) task definition says where they lack it:
# cpu and memory, and each container's image by container name. The tasks are
# locked in ARN order first (``locked``), as the consumer's task upserts lock them.
_FILL_TASKS_FROM_DEFINITIONS = """
UPDATE tasks AS t SET
  cpu = coalesce(t.cpu, td.cpu),
  memory = coalesce(t.memory, td.memory),
  containers = CASE WHEN EXISTS (
      SELECT 1 FROM jsonb_array_elements(t.containers) AS c(v) WHERE c.v->>'image' IS NULL
    ) THEN (
      SELECT coalesce(jsonb_agg(
        CASE WHEN c.v->>'image' IS NULL THEN c.v || jsonb_build_object('image', (
          SELECT d.v->>'image' FROM jsonb_array_elements(td.containers) AS d(v)
          WHERE d.v->>'name' = c.v->>'name' LIMIT 1))
        ELSE c.v END ORDER BY c.n), '[]'::jsonb)
      FROM jsonb_array_elements(t.containers) WITH ORDINALITY AS c(v, n)
    ) ELSE t.containers END
FROM task_definitions AS td, (
  SELECT l.arn FROM tasks AS l
  WHERE l.task_definition_arn = ANY($1::TEXT[])
    AND (l.cpu IS NULL OR l.memory IS NULL OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(l.containers) AS c(v) WHERE c.v->>'image' IS NULL))
  ORDER BY l.arn FOR UPDATE
) AS locked
WHERE t.arn = locked.arn AND td.arn = t.task_definition_arn AND td.arn = ANY($1::TEXT[])
  AND (t.cpu IS NULL OR t.memory IS NULL OR EXISTS (
      SELECT 1 FROM jsonb_array_elements(t.containers) AS c(v) WHERE c.v->>'image' IS NULL))
"""


async def write_task_definitions(
    session: AsyncSession, definitions: Sequence[Mapping[str, Any]], fetched_at: datetime
) -> int:
    rows = [row for d in definitions if (row := task_definition_row(d, fetched_at))]
    if not rows:
        return 0
    await execute(session, _INSERT_TASK_DEFINITIONS, payload(rows))
    return await fill_tasks_from_definitions(session, [row["arn"] for row in rows])


async def fill_tasks_from_definitions(session: AsyncSession, definition_arns: Sequence[str]) -> int:
    result = await execute(session, _FILL_TASKS_FROM_DEFINITIONS, sorted(set(definition_arns)))
    return int(getattr(result, "rowcount", 0) or 0)


async def stored_definitions(session: AsyncSession, arns: Sequence[str]) -> set[str]:
    result = await execute(
        session, "SELECT arn FROM task_definitions WHERE arn = ANY($1::TEXT[])", list(arns)
    )
    return {row[0] for row in result}
