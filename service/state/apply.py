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

import json
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Table,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import ServiceRef
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
from service.state.models import (
    Cluster,
    ContainerInstance,
    Deployment,
    RawEvent,
    ResourceTags,
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

    def count(self, outcome: Applied) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)


# Bulk rows travel by COPY into a per-connection temporary table, then one
# INSERT … SELECT … ON CONFLICT applies them: several times faster than
# multi-row VALUES for the large batches (raw events, tasks, tags).
_STAGED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_STAGE_TABLES: dict[str, Table] = {}


def _stage_table(model: type[Base]) -> Table:
    source = model.__table__
    assert isinstance(source, Table)
    name = f"ecswatch_stage_{source.name}"
    if name not in _STAGE_TABLES:
        _STAGE_TABLES[name] = Table(
            name, MetaData(), *(Column(c.name, c.type) for c in source.columns)
        )
    return _STAGE_TABLES[name]


def _copy_value(value: Any) -> Any:
    # asyncpg's COPY takes jsonb as text.
    return json.dumps(value) if isinstance(value, dict | list) else value


async def _stage(session: AsyncSession, model: type[Base], rows: Sequence[r.Row]) -> Table:
    """COPY ``rows`` into the model's staging table (emptied first); return that table."""
    stage = _stage_table(model)
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    staged = _STAGED.setdefault(raw, set())
    if stage.name not in staged:
        await raw.execute(
            f'CREATE TEMPORARY TABLE IF NOT EXISTS "{stage.name}" '
            f'(LIKE "{model.__tablename__}" INCLUDING DEFAULTS)'
        )
        staged.add(stage.name)
    # The COPY may run before SQLAlchemy has opened its transaction on this
    # connection, so rows are kept across commits and cleared here; TRUNCATE
    # rather than DELETE because autovacuum never visits temporary tables.
    await raw.execute(f'TRUNCATE "{stage.name}"')
    columns = list(rows[0])
    records = [tuple(_copy_value(row[c]) for c in columns) for row in rows]
    await raw.copy_records_to_table(stage.name, records=records, columns=columns)
    return stage


def _from_stage(model: type[Base], stage: Table, columns: Sequence[str], key: str) -> Any:
    return pg_insert(model).from_select(
        list(columns), select(*(stage.c[c] for c in columns)).order_by(stage.c[key])
    )


async def apply_events(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    *,
    codedeploy_groups: dict[str, ServiceRef] | None = None,
) -> BatchResult:
    """Apply ``events`` (any order, duplicates allowed) in the session's transaction."""
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
    await _apply_deployments(session, fresh, codedeploy_groups or {}, tasks)
    await _mark_tags_unknown(session, fresh)
    for event in fresh:
        if event.envelope.id not in result.outcomes:
            unknown = isinstance(event.detail, UnknownDetail)
            result.outcomes[event.envelope.id] = Applied.STORED if unknown else Applied.APPLIED
    return result


async def _insert_raw(
    session: AsyncSession, events: list[NormalisedEvent]
) -> list[NormalisedEvent]:
    """Insert raw events; return those that were new (not seen by id or natural key)."""
    if not events:
        return []
    inserted: set[str] = set()
    by_id = {e.envelope.id: e for e in events}
    rows = [r.raw_event_row(e) for e in events]
    stage = await _stage(session, RawEvent, rows)
    # Ordered keys: replicas inserting the same ids lock them in the same order.
    stmt = _from_stage(RawEvent, stage, list(rows[0]), "id")
    stmt = stmt.on_conflict_do_nothing().returning(RawEvent.id)
    inserted.update((await session.execute(stmt)).scalars())
    return [by_id[i] for i in by_id if i in inserted]


async def _upsert_clusters(session: AsyncSession, events: list[NormalisedEvent]) -> None:
    rows: dict[str, r.Row] = {}
    for event in events:
        if event.cluster_arn and event.cluster_arn not in rows:
            row = r.cluster_row(event.cluster_arn, event.cluster_name)
            if row is not None:
                rows[event.cluster_arn] = row
    if rows:
        ordered = sorted(rows.values(), key=lambda x: x["arn"])
        await session.execute(pg_insert(Cluster).on_conflict_do_nothing(), ordered)


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


async def _apply_versioned(
    session: AsyncSession, events: list[NormalisedEvent], spec: _Versioned
) -> dict[str, Applied]:
    """Version-guarded upsert; classify each event as applied, stale or duplicate."""
    if not events:
        return {}
    built = [(e, spec.build(e)) for e in events]
    # One row per ARN in a statement (ON CONFLICT cannot touch a row twice): the
    # newest version in the batch stands for the others, which are older or equal.
    best: dict[str, r.Row] = {}
    for _, row in built:
        current = best.get(row["arn"])
        if current is None or _version_key(row) > _version_key(current):
            best[row["arn"]] = row
    table = spec.model.__table__
    applied: set[str] = set()
    ordered = list(best.values())
    if ordered:
        stage = await _stage(session, spec.model, ordered)
        stmt = _from_stage(spec.model, stage, list(ordered[0]), "arn")
        ex = stmt.excluded
        stored = table.c
        updates: dict[str, Any] = {}
        for name in ordered[0]:
            if name == "arn" or name in spec.untouched:
                continue
            updates[name] = (
                func.coalesce(stored[name], ex[name]) if name in spec.sticky else ex[name]
            )
        updates["seen_at"] = func.now()
        newer: ColumnElement[bool] = or_(
            and_(
                ex.version.is_not(None),
                or_(stored.version.is_(None), stored.version < ex.version),
            ),
            # Versionless events apply only where no versioned state exists yet.
            and_(
                ex.version.is_(None),
                stored.version.is_(None),
                or_(
                    stored.updated_at.is_(None),
                    ex.updated_at.is_(None),
                    stored.updated_at <= ex.updated_at,
                ),
            ),
        )
        stmt = stmt.on_conflict_do_update(index_elements=["arn"], set_=updates, where=newer)
        applied.update((await session.execute(stmt.returning(table.c.arn))).scalars())
    unapplied = [arn for arn in best if arn not in applied]
    stored_versions: dict[str, int | None] = {}
    if unapplied:
        rows = await session.execute(
            select(table.c.arn, table.c.version).where(table.c.arn.in_(unapplied))
        )
        stored_versions = {row[0]: row[1] for row in rows}
    outcomes: dict[str, Applied] = {}
    for event, row in built:
        arn = row["arn"]
        winner = best[arn]
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
    table = Service.__table__
    if rows:
        stmt = pg_insert(Service)
        ex = stmt.excluded
        newer = and_(
            ex.last_event_at.is_not(None),
            or_(table.c.last_event_at.is_(None), table.c.last_event_at < ex.last_event_at),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["arn"],
            set_={
                "cluster_arn": func.coalesce(table.c.cluster_arn, ex.cluster_arn),
                "cluster_name": func.coalesce(table.c.cluster_name, ex.cluster_name),
                "last_event_name": case((newer, ex.last_event_name), else_=table.c.last_event_name),
                "last_event_at": case((newer, ex.last_event_at), else_=table.c.last_event_at),
                "updated_at": func.now(),
            },
        )
        await session.execute(stmt, sorted(rows.values(), key=lambda x: x["arn"]))


def _rank(outcome: ColumnElement[Any]) -> ColumnElement[int]:
    return case(
        (outcome == "in_progress", 0),
        (outcome == "failed", 1),
        (or_(outcome == "succeeded", outcome == "stopped"), 2),
        else_=3,
    )


async def _apply_deployments(
    session: AsyncSession,
    events: list[NormalisedEvent],
    codedeploy_groups: dict[str, ServiceRef],
    task_events: list[NormalisedEvent],
) -> None:
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
    table = Deployment.__table__
    d = table.c
    for round_rows in rounds:
        values = [
            {k: v for k, v in row.items() if k != "rank"}
            for row in sorted(round_rows, key=lambda x: x["id"])
        ]
        if values:
            stmt = pg_insert(Deployment)
            ex = stmt.excluded
            newer = tuple_(ex.last_event_at, _rank(ex.outcome)) > tuple_(
                func.coalesce(d.last_event_at, literal("-infinity").cast(d.last_event_at.type)),
                _rank(d.outcome),
            )
            rollback = func.coalesce(d.rollback_target, ex.rollback_target)
            winner = case((newer, ex.outcome), else_=d.outcome)
            stmt = stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={
                    "cluster_arn": func.coalesce(d.cluster_arn, ex.cluster_arn),
                    "cluster_name": func.coalesce(d.cluster_name, ex.cluster_name),
                    "service_arn": func.coalesce(d.service_arn, ex.service_arn),
                    "service_name": func.coalesce(d.service_name, ex.service_name),
                    "codedeploy_application": func.coalesce(
                        d.codedeploy_application, ex.codedeploy_application
                    ),
                    "codedeploy_group": func.coalesce(d.codedeploy_group, ex.codedeploy_group),
                    "task_definition": func.coalesce(d.task_definition, ex.task_definition),
                    "rollback_target": rollback,
                    "outcome": case(
                        (and_(winner == "succeeded", rollback.is_not(None)), "rolled_back"),
                        else_=winner,
                    ),
                    "reason": case((newer, ex.reason), else_=d.reason),
                    "lifecycle_stage": case((newer, ex.lifecycle_stage), else_=d.lifecycle_stage),
                    "last_event_at": case((newer, ex.last_event_at), else_=d.last_event_at),
                    "last_event_name": case((newer, ex.last_event_name), else_=d.last_event_name),
                    "finished_at": case((newer, ex.finished_at), else_=d.finished_at),
                    "event_ids": case(
                        (d.event_ids.contains(ex.event_ids), d.event_ids),
                        else_=d.event_ids.concat(ex.event_ids),
                    ),
                    "started_at": func.least(d.started_at, ex.started_at),
                    "updated_at": func.greatest(d.updated_at, ex.updated_at),
                },
            )
            await session.execute(stmt, values)

    task_rows: dict[str, r.Row] = {}
    for event in task_events:
        assert isinstance(event.detail, TaskStateChange)
        row = r.task_deployment_row(event.detail, event.envelope.time)
        if row is not None and row["id"] not in task_rows:
            task_rows[row["id"]] = row
    if task_rows:
        stmt = pg_insert(Deployment)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "task_definition": func.coalesce(d.task_definition, ex.task_definition),
                "cluster_arn": func.coalesce(d.cluster_arn, ex.cluster_arn),
                "cluster_name": func.coalesce(d.cluster_name, ex.cluster_name),
                "service_name": func.coalesce(d.service_name, ex.service_name),
                "started_at": func.least(d.started_at, ex.started_at),
            },
        )
        await session.execute(stmt, sorted(task_rows.values(), key=lambda x: x["id"]))

    touched = sorted(set(by_id) | set(task_rows))
    if touched:
        # A circuit-breaker rollback ends when the restored deployment completes.
        await session.execute(
            text(
                "UPDATE deployments AS d SET outcome = 'rolled_back', "
                "finished_at = COALESCE(d.finished_at, x.last_event_at) "
                "FROM deployments AS x "
                "WHERE d.rollback_target = x.id AND d.outcome = 'failed' "
                "AND x.outcome = 'succeeded' AND x.last_event_at >= d.last_event_at "
                "AND (d.id = ANY(:ids) OR x.id = ANY(:ids))"
            ),
            {"ids": touched},
        )
    if task_rows:
        await session.execute(
            text(
                "UPDATE deployments AS d SET failed_tasks = sub.n FROM ("
                " SELECT deployment_id, count(*) AS n FROM tasks"
                " WHERE deployment_id = ANY(:ids) AND last_status = 'STOPPED'"
                " AND stop_code = ANY(:codes) GROUP BY deployment_id"
                ") AS sub WHERE d.id = sub.deployment_id AND d.failed_tasks <> sub.n"
            ),
            {"ids": sorted(task_rows), "codes": list(FAILED_STOP_CODES)},
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
    rows = [{"resource_arn": arn} for arn in arns]
    if rows:
        stage = await _stage(session, ResourceTags, rows)
        stmt = _from_stage(ResourceTags, stage, ["resource_arn"], "resource_arn")
        await session.execute(stmt.on_conflict_do_nothing())
