"""Apply a batch of normalised events to state in the caller's transaction.

Every write is one conditional upsert (``INSERT … ON CONFLICT … DO UPDATE …
WHERE``), multi-row per batch, never read-then-write:

* raw events are inserted once (unique EventBridge ``id`` and, for versionless
  types, unique ``natural_key``); an event whose raw row already exists is a
  duplicate and changes nothing else;
* tasks and container instances apply only when ``detail.version`` is newer than
  the stored one (full overwrite of the row: ECS sends the whole state each time,
  so the newest version alone decides the final row, whatever the arrival order);
* deployments are ordered by ``updatedAt`` (then by outcome rank on ties);
  rollback targets are sticky, so a late rollback notice still turns a
  completion into ``rolled_back``;
* clusters and services are created on first sight; tags are marked unknown
  until enrichment fetches them.

The caller owns the transaction (commit or rollback); this module only flushes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Table, func, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncSession

from service.alerts.raising import raise_alerts
from service.alerts.rules import AlertDraft, AlertRules
from service.config import ServiceRef
from service.datadog.outbox import write_datadog_rows
from service.db import Base
from service.events.models import (
    ContainerInstanceHealthChange,
    ContainerInstanceStateChange,
    DaemonServiceAction,
    DeploymentStateChange,
    HookStateChange,
    NormalisedEvent,
    ServiceAction,
    TaskStateChange,
    UnknownDetail,
)
from service.state import rows as r
from service.state.codedeploy_groups import group_services
from service.state.models import (
    Cluster,
    ContainerInstance,
    Deployment,
    RawEvent,
    Service,
    Task,
)

# Stop codes that count against the deployment that started the task.
FAILED_STOP_CODES = ("TaskFailedToStart", "EssentialContainerExited")


class Applied(StrEnum):
    """What became of one event."""

    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"
    STORED = "stored"  # unknown detail-type: kept raw, nothing to apply


@dataclass
class BatchResult:
    """Per event id, what the batch did with it."""

    outcomes: dict[str, Applied] = field(default_factory=dict)
    alerts: list[AlertDraft] = field(default_factory=list)  # alerts raised (new ones)

    def count(self, outcome: Applied) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)


# A batch's rows travel as one JSON document, expanded by jsonb_to_recordset into
# an INSERT … SELECT … ON CONFLICT: one prepared statement, one parameter and one
# round trip per step whatever the batch size, and the rows are serialised in C
# (orjson) rather than encoded value by value by the driver. Integer columns are
# read as numeric and cast in SQL, so a value out of the column's range is refused
# by PostgreSQL (a database error: the message is quarantined).
#
# The document is jsonb, not json (issue 12): PostgreSQL then parses it once,
# into jsonb, and hands each jsonb column (an event's detail, a task's containers)
# its part as it is. With json it parsed the document three times: to check the
# parameter, to walk the records, and again each jsonb column's text. Measured
# against binary COPY into a staging table (the fair baseline's way), this leaves
# PostgreSQL ~5 µs more per event, and the driver ~4 µs less Python per event
# (docs/performance.md): a wash, without temporary tables.
_DIALECT = PGDialect()  # type: ignore[no-untyped-call]
_INTEGER_TYPES = ("INTEGER", "BIGINT", "SMALLINT")


def _quote(name: str) -> str:
    return str(_DIALECT.identifier_preparer.quote(name))


def _bulk_insert(model: type[Base], columns: Sequence[str], *, order_by: str | None) -> str:
    """``INSERT INTO <model> (<columns>) SELECT … FROM jsonb_to_recordset($1::jsonb)``."""
    table = model.__table__
    assert isinstance(table, Table)
    definitions: list[str] = []
    selected: list[str] = []
    for name in columns:
        sql_type = str(table.c[name].type.compile(dialect=_DIALECT))
        column = f"s.{_quote(name)}"
        if sql_type in _INTEGER_TYPES:
            definitions.append(f"{_quote(name)} NUMERIC")
            selected.append(f"{column}::{sql_type}")
        else:
            definitions.append(f"{_quote(name)} {sql_type}")
            selected.append(column)
    names = ", ".join(_quote(c) for c in columns)
    order = f" ORDER BY s.{_quote(order_by)}" if order_by else ""
    return (
        f"INSERT INTO {_quote(str(table.name))} ({names}) SELECT {', '.join(selected)}"
        f" FROM jsonb_to_recordset($1::jsonb) AS s({', '.join(definitions)}){order}"
    )


def _payload(rows: Sequence[r.Row]) -> str:
    """The rows as one JSON array for :func:`_bulk_insert` (keys it does not name are
    ignored there)."""
    try:
        return orjson.dumps(rows, default=_orjson_default).decode()
    except TypeError:
        return _payload_slow(rows)


def _orjson_default(value: object) -> Any:
    if isinstance(value, r.JsonText):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _payload_slow(rows: Sequence[r.Row]) -> str:
    """:func:`_payload` by the standard library, for what orjson refuses: integers
    beyond 64 bits (written exactly, for PostgreSQL to accept or refuse) and nesting
    deeper than orjson goes. Pre-serialised documents are spliced in as text, never
    decoded again: a detail nested near the recursion limit stays storable."""
    texts: list[str] = []

    def default(value: object) -> Any:
        if isinstance(value, r.JsonText):
            texts.append(value.text.decode() if isinstance(value.text, bytes) else value.text)
            # NUL never occurs in stored values (validation refuses it), so this
            # placeholder cannot collide with data.
            return f"\x00{len(texts) - 1}"
        if isinstance(value, datetime):
            return value.isoformat()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    encoded = json.dumps(rows, default=default)
    return _PLACEHOLDER.sub(lambda match: texts[int(match[1])], encoded)


_PLACEHOLDER = re.compile(r'"\\u0000([0-9]+)"')


async def _execute(session: AsyncSession, sql: str, *params: Any) -> Any:
    """Run ``sql`` in the session's transaction (errors wrapped like any statement's)."""
    connection = await session.connection()
    return await connection.exec_driver_sql(sql, params)


async def apply_events(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    *,
    codedeploy_groups: dict[str, ServiceRef] | None = None,
    alert_rules: AlertRules | None = None,
    datadog: bool = False,
) -> BatchResult:
    """Apply ``events`` (any order, duplicates allowed) in the session's transaction.

    With ``datadog``, the Datadog facts and outbox rows of the new events are
    written too (:func:`_write_datadog`), last, once the state is final.
    """
    result = BatchResult()
    unique: dict[str, NormalisedEvent] = {}
    for event in events:
        if event.envelope.id in unique:
            result.outcomes.setdefault(event.envelope.id, Applied.DUPLICATE)
        else:
            unique[event.envelope.id] = event
    fresh = await _insert_raw(session, list(unique.values()))
    fresh_ids = {e.envelope.id for e in fresh}
    for event_id in unique:
        if event_id not in fresh_ids:
            result.outcomes[event_id] = Applied.DUPLICATE
    if not fresh:
        return result

    await _upsert_clusters(session, fresh)
    tasks = [e for e in fresh if isinstance(e.detail, TaskStateChange)]
    instances = [e for e in fresh if isinstance(e.detail, ContainerInstanceStateChange)]
    result.outcomes.update(await _apply_versioned(session, tasks, _TASKS))
    result.outcomes.update(await _apply_versioned(session, instances, _INSTANCES))
    await _apply_health(session, fresh)
    await _upsert_services(session, fresh)
    await _insert_services_of_tasks(session, tasks)
    # CodeDeploy groups: the settings' overrides, then the poller's mapping (0007).
    codedeploy_groups = await group_services(session, fresh, codedeploy_groups or {})
    touched = await _apply_deployments(session, fresh, codedeploy_groups, tasks)
    await _mark_tags_unknown(session, fresh)
    # Alerts (issue 10): decided from the state just written, in this transaction.
    # Only events that changed something can change an outcome.
    changed = [
        e
        for e in fresh
        if result.outcomes.get(e.envelope.id) not in (Applied.STALE, Applied.DUPLICATE)
    ]
    result.alerts = await raise_alerts(session, changed, touched, rules=alert_rules or AlertRules())
    for event in fresh:
        if event.envelope.id not in result.outcomes:
            unknown = isinstance(event.detail, UnknownDetail)
            result.outcomes[event.envelope.id] = Applied.STORED if unknown else Applied.APPLIED
    if datadog:
        await _write_datadog(session, fresh, result, codedeploy_groups or {})
    return result


async def _write_datadog(
    session: AsyncSession,
    fresh: list[NormalisedEvent],
    result: BatchResult,
    codedeploy_groups: dict[str, ServiceRef],
) -> None:
    """Datadog counters and events of the batch's new events (service.datadog.outbox)."""
    await write_datadog_rows(session, fresh, result.outcomes, codedeploy_groups=codedeploy_groups)


_INSERT_RAW = (
    _bulk_insert(RawEvent, r.RAW_EVENT_COLUMNS, order_by="id")
    + " ON CONFLICT DO NOTHING RETURNING id"
)


async def _insert_raw(
    session: AsyncSession, events: list[NormalisedEvent]
) -> list[NormalisedEvent]:
    """Insert raw events; return those that were new (not seen by id or natural key)."""
    if not events:
        return []
    by_id = {e.envelope.id: e for e in events}
    # Ordered keys: replicas inserting the same ids lock them in the same order.
    result = await _execute(session, _INSERT_RAW, _payload([r.raw_event_row(e) for e in events]))
    inserted = set(result.scalars().all())
    return [by_id[i] for i in by_id if i in inserted]


@cache
def _insert_clusters(columns: tuple[str, ...]) -> str:
    # Rows go in the order of the arrays (sorted by ARN), as one statement per row did.
    return _bulk_insert(Cluster, columns, order_by=None) + " ON CONFLICT DO NOTHING"


async def _upsert_clusters(session: AsyncSession, events: list[NormalisedEvent]) -> None:
    rows: dict[str, r.Row] = {}
    for event in events:
        if event.cluster_arn and event.cluster_arn not in rows:
            row = r.cluster_row(event.cluster_arn, event.cluster_name)
            if row is not None:
                rows[event.cluster_arn] = row
    if rows:
        ordered = sorted(rows.values(), key=lambda x: x["arn"])
        columns = tuple(ordered[0])
        await _execute(session, _insert_clusters(columns), _payload(ordered))


@dataclass(frozen=True)
class _Versioned:
    """How to upsert one version-guarded resource type."""

    model: type[Task] | type[ContainerInstance]
    build: Any
    # Columns that identify the resource and never change: keep the first non-null.
    sticky: tuple[str, ...]
    # Columns this upsert must leave alone (written by other event types).
    untouched: tuple[str, ...] = ()


_TASKS = _Versioned(
    model=Task,
    build=lambda e: r.task_row(e, e.detail),
    sticky=("id", "cluster_arn", "cluster_name"),
)
_INSTANCES = _Versioned(
    model=ContainerInstance,
    build=lambda e: r.container_instance_row(e, e.detail),
    sticky=("ec2_instance_id", "cluster_arn", "cluster_name"),
    untouched=("health_status", "health_checks", "health_updated_at"),
)


def _version_key(row: r.Row) -> tuple[int, int, str]:
    version = row["version"]
    updated = row["updated_at"]
    return (
        0 if version is None else 1,
        version if version is not None else 0,
        updated.isoformat() if updated is not None else "",
    )


_VERSIONED_SQL: dict[tuple[Any, ...], tuple[str, str]] = {}


def _versioned_sql(spec: _Versioned, columns: tuple[str, ...]) -> tuple[str, str]:
    """(the guarded upsert returning applied ARNs, the stored-versions query)."""
    key = (spec.model.__tablename__, spec.sticky, spec.untouched, columns)
    if key not in _VERSIONED_SQL:
        table = _quote(spec.model.__tablename__)
        updates: list[str] = []
        for name in columns:
            if name == "arn" or name in spec.untouched:
                continue
            column = _quote(name)
            value = (
                f"coalesce({table}.{column}, excluded.{column})"
                if name in spec.sticky
                else f"excluded.{column}"
            )
            updates.append(f"{column} = {value}")
        updates.append("seen_at = now()")
        # Newer version wins; versionless events apply only where no versioned
        # state exists yet.
        newer = (
            f"(excluded.version IS NOT NULL AND ({table}.version IS NULL"
            f" OR {table}.version < excluded.version))"
            f" OR (excluded.version IS NULL AND {table}.version IS NULL"
            f" AND ({table}.updated_at IS NULL OR excluded.updated_at IS NULL"
            f" OR {table}.updated_at <= excluded.updated_at))"
        )
        upsert = (
            _bulk_insert(spec.model, columns, order_by="arn")
            + f" ON CONFLICT (arn) DO UPDATE SET {', '.join(updates)} WHERE {newer}"
            + " RETURNING arn"
        )
        stored = f"SELECT arn, version FROM {table} WHERE arn = ANY($1::TEXT[])"
        _VERSIONED_SQL[key] = (upsert, stored)
    return _VERSIONED_SQL[key]


async def _apply_versioned(
    session: AsyncSession, events: list[NormalisedEvent], spec: _Versioned
) -> dict[str, Applied]:
    """Version-guarded upsert; classify each event as applied, stale or duplicate."""
    if not events:
        return {}
    built = [(e, spec.build(e)) for e in events]
    # One row per ARN in a statement (ON CONFLICT cannot touch a row twice): the
    # newest version in the batch stands for the others, which are older or equal.
    best: dict[str, tuple[tuple[int, int, str], r.Row]] = {}
    for _, row in built:
        key = _version_key(row)
        current = best.get(row["arn"])
        if current is None or key > current[0]:
            best[row["arn"]] = (key, row)
    applied: set[str] = set()
    ordered = [row for _, row in best.values()]
    columns = tuple(ordered[0])
    upsert, stored_query = _versioned_sql(spec, columns)
    result = await _execute(session, upsert, _payload(ordered))
    applied.update(result.scalars().all())
    unapplied = [arn for arn in best if arn not in applied]
    stored_versions: dict[str, int | None] = {}
    if unapplied:
        rows = await _execute(session, stored_query, unapplied)
        stored_versions = {row[0]: row[1] for row in rows}
    outcomes: dict[str, Applied] = {}
    for event, row in built:
        arn = row["arn"]
        winner = best[arn][1]
        if row is winner and arn in applied:
            outcomes[event.envelope.id] = Applied.APPLIED
            continue
        # Equal to a version already stored or applied in this batch: a duplicate.
        seen = {stored_versions.get(arn)}
        if row is not winner:
            seen.add(winner["version"])
        same = row["version"] is not None and row["version"] in seen
        outcomes[event.envelope.id] = Applied.DUPLICATE if same else Applied.STALE
    return outcomes


async def _apply_health(session: AsyncSession, events: list[NormalisedEvent]) -> None:
    latest: dict[str, r.Row] = {}
    for event in events:
        if isinstance(event.detail, ContainerInstanceHealthChange):
            row = r.health_row(event.detail)
            current = latest.get(row["arn"])
            if current is None or row["health_updated_at"] > current["health_updated_at"]:
                latest[row["arn"]] = row
    table = ContainerInstance.__table__
    if latest:
        stmt = pg_insert(ContainerInstance)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["arn"],
            set_={
                "health_status": ex.health_status,
                "health_checks": ex.health_checks,
                "health_updated_at": ex.health_updated_at,
                "ec2_instance_id": func.coalesce(table.c.ec2_instance_id, ex.ec2_instance_id),
                "cluster_arn": func.coalesce(table.c.cluster_arn, ex.cluster_arn),
                "cluster_name": func.coalesce(table.c.cluster_name, ex.cluster_name),
            },
            where=or_(
                table.c.health_updated_at.is_(None),
                table.c.health_updated_at < ex.health_updated_at,
            ),
        )
        await session.execute(stmt, sorted(latest.values(), key=lambda x: x["arn"]))


async def _upsert_services(session: AsyncSession, events: list[NormalisedEvent]) -> None:
    rows: dict[str, r.Row] = {}
    for event in events:
        detail = event.detail
        last_name, last_at = None, None
        if isinstance(detail, ServiceAction):
            arn, name = detail.service_arn, detail.service_name
            last_name, last_at = detail.event_name, detail.created_at or event.envelope.time
        elif isinstance(detail, DeploymentStateChange | HookStateChange):
            arn, name = detail.service_arn, detail.service_name
        elif isinstance(detail, DaemonServiceAction):
            arn, name = detail.daemon_arn, detail.daemon_name
            last_name, last_at = detail.event_name, detail.created_at or event.envelope.time
        else:
            continue
        if not arn:
            continue
        row = r.service_row(arn, name, detail.cluster_arn, detail.cluster_name)
        if row is None:
            continue
        row["last_event_name"], row["last_event_at"] = last_name, last_at
        current = rows.get(arn)
        if current is None or (
            last_at is not None
            and (current["last_event_at"] is None or last_at > current["last_event_at"])
        ):
            rows[arn] = row
    if rows:
        ordered = sorted(rows.values(), key=lambda x: x["arn"])
        columns = tuple(ordered[0])
        await _execute(session, _upsert_services_sql(columns), _payload(ordered))


_SERVICE_NEWER = (
    "excluded.last_event_at IS NOT NULL AND (services.last_event_at IS NULL"
    " OR services.last_event_at < excluded.last_event_at)"
)


@cache
def _upsert_services_sql(columns: tuple[str, ...]) -> str:
    # Rows go in the order of the arrays (sorted by ARN), as one statement per row did.
    return _bulk_insert(Service, columns, order_by=None) + _SERVICES_ON_CONFLICT


_SERVICES_ON_CONFLICT = (
    " ON CONFLICT (arn) DO UPDATE SET"
    " cluster_arn = coalesce(services.cluster_arn, excluded.cluster_arn),"
    " cluster_name = coalesce(services.cluster_name, excluded.cluster_name),"
    f" last_event_name = CASE WHEN ({_SERVICE_NEWER}) THEN excluded.last_event_name"
    " ELSE services.last_event_name END,"
    f" last_event_at = CASE WHEN ({_SERVICE_NEWER}) THEN excluded.last_event_at"
    " ELSE services.last_event_at END,"
    " updated_at = now()"
)


def _rank(outcome: str) -> str:
    return (
        f"CASE WHEN {outcome} = 'in_progress' THEN 0 WHEN {outcome} = 'failed' THEN 1"
        f" WHEN {outcome} = 'succeeded' OR {outcome} = 'stopped' THEN 2 ELSE 3 END"
    )


# Deployment events are ordered by (updatedAt, outcome rank, finished): on a full
# tie the finishing event wins, so the arrival order never decides (outcome.merge).
_DEPLOYMENT_NEWER = (
    f"(excluded.last_event_at, {_rank('excluded.outcome')}, excluded.finished_at IS NOT NULL)"
    " > (coalesce(deployments.last_event_at, CAST('-infinity' AS TIMESTAMP WITH TIME ZONE)),"
    f" {_rank('deployments.outcome')}, deployments.finished_at IS NOT NULL)"
)
_DEPLOYMENT_ROLLBACK = "coalesce(deployments.rollback_target, excluded.rollback_target)"
_DEPLOYMENT_WINNER = (
    f"CASE WHEN ({_DEPLOYMENT_NEWER}) THEN excluded.outcome ELSE deployments.outcome END"
)


def _if_newer(column: str) -> str:
    return (
        f"{column} = CASE WHEN ({_DEPLOYMENT_NEWER}) THEN excluded.{column}"
        f" ELSE deployments.{column} END"
    )


def _first_known(column: str) -> str:
    return f"{column} = coalesce(deployments.{column}, excluded.{column})"


_DEPLOYMENTS_ON_CONFLICT = " ON CONFLICT (id) DO UPDATE SET " + ", ".join(
    [
        _first_known("cluster_arn"),
        _first_known("cluster_name"),
        _first_known("service_arn"),
        _first_known("service_name"),
        _first_known("codedeploy_application"),
        _first_known("codedeploy_group"),
        _first_known("task_definition"),
        f"rollback_target = {_DEPLOYMENT_ROLLBACK}",
        # Rollback targets are sticky: a late rollback notice still turns a
        # completion into rolled_back.
        f"outcome = CASE WHEN ({_DEPLOYMENT_WINNER} = 'succeeded'"
        f" AND {_DEPLOYMENT_ROLLBACK} IS NOT NULL) THEN 'rolled_back'"
        f" ELSE {_DEPLOYMENT_WINNER} END",
        _if_newer("reason"),
        _if_newer("lifecycle_stage"),
        _if_newer("last_event_at"),
        _if_newer("last_event_name"),
        _if_newer("finished_at"),
        "event_ids = CASE WHEN (deployments.event_ids @> excluded.event_ids)"
        " THEN deployments.event_ids ELSE deployments.event_ids || excluded.event_ids END",
        "started_at = least(deployments.started_at, excluded.started_at)",
        "updated_at = greatest(deployments.updated_at, excluded.updated_at)",
    ]
)

_TASK_DEPLOYMENTS_ON_CONFLICT = " ON CONFLICT (id) DO UPDATE SET " + ", ".join(
    [
        _first_known("task_definition"),
        _first_known("cluster_arn"),
        _first_known("cluster_name"),
        _first_known("service_name"),
        "started_at = least(deployments.started_at, excluded.started_at)",
    ]
)


@cache
def _upsert_deployments_sql(columns: tuple[str, ...], on_conflict: str) -> str:
    # Rows go in the order of the arrays (sorted by id), as one statement per row did.
    return _bulk_insert(Deployment, columns, order_by=None) + on_conflict


# A circuit-breaker rollback ends when the restored deployment completes after
# the failed one began (its earlier completion is not the restore). Comparing with
# the failed deployment's start, not its latest event, lets a FAILED stamped after
# the restore still end in rolled_back (outcome.settle is the specification).
_END_ROLLBACKS = (
    "UPDATE deployments AS d SET outcome = 'rolled_back', "
    "finished_at = COALESCE(d.finished_at, x.last_event_at) "
    "FROM deployments AS x "
    "WHERE d.rollback_target = x.id AND d.outcome = 'failed' "
    "AND x.outcome = 'succeeded' AND x.last_event_at >= d.started_at "
    "AND (d.id = ANY($1::TEXT[]) OR x.id = ANY($1::TEXT[]))"
)
_COUNT_FAILED_TASKS = (
    "UPDATE deployments AS d SET failed_tasks = sub.n FROM ("
    " SELECT deployment_id, count(*) AS n FROM tasks"
    " WHERE deployment_id = ANY($1::TEXT[]) AND last_status = 'STOPPED'"
    " AND stop_code = ANY($2::TEXT[]) GROUP BY deployment_id"
    ") AS sub WHERE d.id = sub.deployment_id AND d.failed_tasks <> sub.n"
)


async def _apply_deployments(
    session: AsyncSession,
    events: list[NormalisedEvent],
    codedeploy_groups: dict[str, ServiceRef],
    task_events: list[NormalisedEvent],
) -> list[str]:
    """Upsert deployments; the ids of those this batch touched."""
    by_id: dict[str, list[r.Row]] = defaultdict(list)
    for event in events:
        row = r.deployment_row(event, codedeploy_groups)
        if row is not None:
            by_id[row["id"]].append(row)
    # ON CONFLICT cannot touch one row twice per statement: one event per id a round.
    rounds: list[list[r.Row]] = []
    for rows in by_id.values():
        for index, row in enumerate(rows):
            if index == len(rounds):
                rounds.append([])
            rounds[index].append(row)
    for round_rows in rounds:
        if round_rows:
            ordered = sorted(round_rows, key=lambda x: x["id"])
            # ``rank`` is no column: the statement ranks outcomes itself.
            columns = tuple(c for c in ordered[0] if c != "rank")
            await _execute(
                session,
                _upsert_deployments_sql(columns, _DEPLOYMENTS_ON_CONFLICT),
                _payload(ordered),
            )

    task_rows: dict[str, r.Row] = {}
    for event in task_events:
        assert isinstance(event.detail, TaskStateChange)
        row = r.task_deployment_row(event.detail, event.envelope.time)
        if row is not None and row["id"] not in task_rows:
            task_rows[row["id"]] = row
    if task_rows:
        ordered = sorted(task_rows.values(), key=lambda x: x["id"])
        columns = tuple(ordered[0])
        await _execute(
            session,
            _upsert_deployments_sql(columns, _TASK_DEPLOYMENTS_ON_CONFLICT),
            _payload(ordered),
        )

    touched = sorted(set(by_id) | set(task_rows))
    if touched:
        await _execute(session, _END_ROLLBACKS, touched)
    if task_rows:
        await _execute(session, _COUNT_FAILED_TASKS, sorted(task_rows), list(FAILED_STOP_CODES))
    return touched


_INSERT_TAGS = (
    "INSERT INTO resource_tags (resource_arn)"
    " SELECT s.arn FROM unnest($1::TEXT[]) AS s(arn) ORDER BY s.arn ON CONFLICT DO NOTHING"
)


async def _mark_tags_unknown(session: AsyncSession, events: list[NormalisedEvent]) -> None:
    arns: set[str] = set()
    for event in events:
        detail = event.detail
        if event.cluster_arn:
            arns.add(event.cluster_arn)
        if isinstance(detail, TaskStateChange):
            arns.add(detail.task_arn)
        elif isinstance(detail, ContainerInstanceStateChange):
            arns.add(detail.container_instance_arn)
        elif isinstance(detail, ServiceAction | DeploymentStateChange) and detail.service_arn:
            arns.add(detail.service_arn)
    if arns:
        await _execute(session, _INSERT_TAGS, list(arns))


# ---- services named only by their tasks' group (issue 9)

_INSERT_SERVICES_OF_TASKS = (
    _bulk_insert(Service, ("arn", "name", "cluster_arn", "cluster_name"), order_by="arn")
    + " ON CONFLICT DO NOTHING RETURNING arn"
)


async def _insert_services_of_tasks(session: AsyncSession, tasks: list[NormalisedEvent]) -> None:
    """Create, on first sight, the services that task events name by ``group``
    (``service:NAME``); their tags stay unknown until enrichment describes them."""
    rows: dict[str, r.Row] = {}
    for event in tasks:
        assert isinstance(event.detail, TaskStateChange)
        row = r.service_row_of_task(event.detail)
        if row is not None:
            rows.setdefault(row["arn"], row)
    if rows:
        ordered = sorted(rows.values(), key=lambda x: x["arn"])
        created = await _execute(session, _INSERT_SERVICES_OF_TASKS, _payload(ordered))
        new = [row[0] for row in created]
        if new:
            await _execute(session, _INSERT_TAGS, new)


# ---- deployment states found by polling (issue 10 with issue 9)


async def apply_deployment_rows(
    session: AsyncSession, rows: Sequence[r.Row], *, alert_rules: AlertRules | None = None
) -> list[AlertDraft]:
    """Apply deployment rows that no event carried (the poller's BatchGetDeployments
    check builds them with :func:`service.state.rows.codedeploy_deployment_row`)
    through the same ordered upsert as the events, then raise their alerts. Only
    flushes: the caller owns the transaction. The new alerts."""
    latest: dict[str, r.Row] = {}
    for row in rows:
        latest.setdefault(row["id"], row)  # one row per deployment a statement
    if not latest:
        return []
    ordered = sorted(latest.values(), key=lambda x: x["id"])
    columns = tuple(c for c in ordered[0] if c != "rank")
    await _execute(
        session, _upsert_deployments_sql(columns, _DEPLOYMENTS_ON_CONFLICT), _payload(ordered)
    )
    ids = sorted(latest)
    await _execute(session, _END_ROLLBACKS, ids)
    return await raise_alerts(session, [], ids, rules=alert_rules or AlertRules())
