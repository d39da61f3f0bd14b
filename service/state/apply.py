"""Apply a batch of normalised events to state in the caller's transaction.

Every write is one conditional upsert (``INSERT … ON CONFLICT … DO UPDATE …
WHERE``), multi-row per batch, never read-then-write:

* raw events are inserted once (unique EventBridge ``id`` with its ``time``, and,
  for versionless types, unique ``natural_key``, claimed in
  ``raw_event_natural_keys``); an event whose raw row already exists is a
  duplicate and changes nothing else;
* tasks and container instances apply only when ``detail.version`` is newer than
  the stored one (full overwrite of the row: ECS sends the whole state each time,
  so the newest version alone decides the final row, whatever the arrival order);
* clusters and services are created on first sight; tags are marked unknown
  until enrichment fetches them.

Deployments are not state's business: :mod:`service.deployments` applies them
after this, in the same transaction (see :mod:`service.consumer.transaction`).
The caller owns the transaction (commit or rollback); this module only flushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import func, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

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
from service.state.bulk import bulk_insert, execute, payload, quote
from service.state.models import (
    Cluster,
    ContainerInstance,
    RawEvent,
    Service,
    Task,
)


class Applied(StrEnum):
    """What became of one event."""

    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"
    STORED = "stored"  # unknown detail-type: kept raw, nothing to apply


@dataclass
class StateResult:
    """What the state writes did with a batch: per event id, its outcome; and the
    events that were new (not duplicates by EventBridge id or natural key)."""

    outcomes: dict[str, Applied] = field(default_factory=dict)
    fresh: list[NormalisedEvent] = field(default_factory=list)

    @property
    def changed(self) -> list[NormalisedEvent]:
        """The new events that changed state (neither stale nor duplicate)."""
        return [
            e
            for e in self.fresh
            if self.outcomes.get(e.envelope.id) not in (Applied.STALE, Applied.DUPLICATE)
        ]

    def count(self, outcome: Applied) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)


async def apply_events(session: AsyncSession, events: Sequence[NormalisedEvent]) -> StateResult:
    """Apply ``events`` (any order, duplicates allowed) in the session's transaction."""
    result = StateResult()
    unique: dict[str, NormalisedEvent] = {}
    for event in events:
        if event.envelope.id in unique:
            result.outcomes.setdefault(event.envelope.id, Applied.DUPLICATE)
        else:
            unique[event.envelope.id] = event
    fresh = await _insert_raw(session, list(unique.values()))
    result.fresh = fresh
    fresh_ids = {e.envelope.id for e in fresh}
    for event_id in unique:
        if event_id not in fresh_ids:
            result.outcomes[event_id] = Applied.DUPLICATE
    if not fresh:
        return result

    await _upsert_clusters(session, fresh)
    tasks = [e for e in fresh if isinstance(e.detail, TaskStateChange)]
    instances = [e for e in fresh if isinstance(e.detail, ContainerInstanceStateChange)]
    result.outcomes.update(await apply_versioned(session, tasks, TASKS))
    result.outcomes.update(await apply_versioned(session, instances, INSTANCES))
    await apply_health(session, fresh)
    await _upsert_services(session, fresh)
    await _insert_services_of_tasks(session, tasks)
    await _mark_tags_unknown(session, fresh)
    for event in fresh:
        if event.envelope.id not in result.outcomes:
            unknown = isinstance(event.detail, UnknownDetail)
            result.outcomes[event.envelope.id] = Applied.STORED if unknown else Applied.APPLIED
    return result


# A partitioned table enforces uniqueness only with its partition key, so the
# statement claims each natural key in raw_event_natural_keys first (the smallest
# id wins a key two events of the batch share); an event whose key another event
# holds is not inserted. The (id, time) primary key catches a re-delivered event.
INSERT_RAW = (
    # The batch's JSON is parsed once, for both inserts.
    "WITH batch AS MATERIALIZED (SELECT $1::jsonb AS rows),"
    " claimed AS (INSERT INTO raw_event_natural_keys (natural_key, id, time)"
    " SELECT k.natural_key, k.id, k.time FROM batch, jsonb_to_recordset(batch.rows)"
    " AS k(natural_key TEXT, id TEXT, time TIMESTAMP WITH TIME ZONE)"
    " WHERE k.natural_key IS NOT NULL ORDER BY k.natural_key, k.id"
    " ON CONFLICT DO NOTHING RETURNING id) "
    + bulk_insert(RawEvent, r.RAW_EVENT_COLUMNS, order_by=None).replace(
        "jsonb_to_recordset($1::jsonb)", "jsonb_to_recordset((SELECT rows FROM batch))"
    )
    + ' WHERE s.natural_key IS NULL OR s.id IN (SELECT id FROM claimed) ORDER BY s."id"'
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
    result = await execute(session, INSERT_RAW, payload([r.raw_event_row(e) for e in events]))
    inserted = set(result.scalars().all())
    return [by_id[i] for i in by_id if i in inserted]


@cache
def _insert_clusters(columns: tuple[str, ...]) -> str:
    # Rows go in the order of the arrays (sorted by ARN), as one statement per row did.
    return bulk_insert(Cluster, columns, order_by=None) + " ON CONFLICT DO NOTHING"


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
        await execute(session, _insert_clusters(columns), payload(ordered))


@dataclass(frozen=True)
class Versioned:
    """How to upsert one version-guarded resource type."""

    model: type[Task] | type[ContainerInstance]
    build: Any
    # Columns that identify the resource and never change: keep the first non-null.
    sticky: tuple[str, ...]
    # Columns this upsert must leave alone (written by other event types).
    untouched: tuple[str, ...] = ()


TASKS = Versioned(
    model=Task,
    build=lambda e: r.task_row(e, e.detail),
    sticky=("id", "cluster_arn", "cluster_name"),
)
INSTANCES = Versioned(
    model=ContainerInstance,
    build=lambda e: r.container_instance_row(e, e.detail),
    sticky=("ec2_instance_id", "cluster_arn", "cluster_name"),
    untouched=("health_status", "health_checks", "health_updated_at"),
)


def version_key(row: r.Row) -> tuple[int, int, str]:
    version = row["version"]
    updated = row["updated_at"]
    return (
        0 if version is None else 1,
        version if version is not None else 0,
        updated.isoformat() if updated is not None else "",
    )


_VERSIONED_SQL: dict[tuple[Any, ...], tuple[str, str]] = {}


def versioned_sql(spec: Versioned, columns: tuple[str, ...]) -> tuple[str, str]:
    """(the guarded upsert returning applied ARNs, the stored-versions query)."""
    key = (spec.model.__tablename__, spec.sticky, spec.untouched, columns)
    if key not in _VERSIONED_SQL:
        table = quote(spec.model.__tablename__)
        updates: list[str] = []
        for name in columns:
            if name == "arn" or name in spec.untouched:
                continue
            column = quote(name)
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
            bulk_insert(spec.model, columns, order_by="arn")
            + f" ON CONFLICT (arn) DO UPDATE SET {', '.join(updates)} WHERE {newer}"
            + " RETURNING arn"
        )
        stored = f"SELECT arn, version FROM {table} WHERE arn = ANY($1::TEXT[])"
        _VERSIONED_SQL[key] = (upsert, stored)
    return _VERSIONED_SQL[key]


async def apply_versioned(
    session: AsyncSession, events: list[NormalisedEvent], spec: Versioned
) -> dict[str, Applied]:
    """Version-guarded upsert; classify each event as applied, stale or duplicate."""
    if not events:
        return {}
    built = [(e, spec.build(e)) for e in events]
    # One row per ARN in a statement (ON CONFLICT cannot touch a row twice): the
    # newest version in the batch stands for the others, which are older or equal.
    best: dict[str, tuple[tuple[int, int, str], r.Row]] = {}
    for _, row in built:
        key = version_key(row)
        current = best.get(row["arn"])
        if current is None or key > current[0]:
            best[row["arn"]] = (key, row)
    applied: set[str] = set()
    ordered = [row for _, row in best.values()]
    columns = tuple(ordered[0])
    upsert, stored_query = versioned_sql(spec, columns)
    result = await execute(session, upsert, payload(ordered))
    applied.update(result.scalars().all())
    unapplied = [arn for arn in best if arn not in applied]
    stored_versions: dict[str, int | None] = {}
    if unapplied:
        rows = await execute(session, stored_query, unapplied)
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


async def apply_health(session: AsyncSession, events: list[NormalisedEvent]) -> None:
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
        await execute(session, _upsert_services_sql(columns), payload(ordered))


_SERVICE_NEWER = (
    "excluded.last_event_at IS NOT NULL AND (services.last_event_at IS NULL"
    " OR services.last_event_at < excluded.last_event_at)"
)


@cache
def _upsert_services_sql(columns: tuple[str, ...]) -> str:
    # Rows go in the order of the arrays (sorted by ARN), as one statement per row did.
    return bulk_insert(Service, columns, order_by=None) + SERVICES_ON_CONFLICT


SERVICES_ON_CONFLICT = (
    " ON CONFLICT (arn) DO UPDATE SET"
    " cluster_arn = coalesce(services.cluster_arn, excluded.cluster_arn),"
    " cluster_name = coalesce(services.cluster_name, excluded.cluster_name),"
    f" last_event_name = CASE WHEN ({_SERVICE_NEWER}) THEN excluded.last_event_name"
    " ELSE services.last_event_name END,"
    f" last_event_at = CASE WHEN ({_SERVICE_NEWER}) THEN excluded.last_event_at"
    " ELSE services.last_event_at END,"
    " updated_at = now()"
)


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
        await execute(session, _INSERT_TAGS, list(arns))


# ---- services named only by their tasks' group

INSERT_SERVICES_OF_TASKS = (
    bulk_insert(Service, ("arn", "name", "cluster_arn", "cluster_name"), order_by="arn")
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
        created = await execute(session, INSERT_SERVICES_OF_TASKS, payload(ordered))
        new = [row[0] for row in created]
        if new:
            await execute(session, _INSERT_TAGS, new)
