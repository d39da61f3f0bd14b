"""Datadog outbox rows written by the consumer, in the transaction of the change.

Called last in the consumer's transaction (:mod:`service.consumer.transaction`)
with the events that were new (not duplicates by EventBridge id or natural key)
and the snapshots of the deployments the transaction touched. The facts they
show (:mod:`service.datadog.facts`) are inserted into ``datadog_facts``; only
the facts this transaction inserted are counted, in ONE ``datadog_metrics``
row per transaction (ingestion throughput: no row per event), and each new
fact with an event gets one ``datadog_event`` row. A duplicate event writes
nothing. The caller owns the transaction; this module only executes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.datadog.facts import (
    Derived,
    Fact,
    deployment_facts,
    derive,
    event_payload,
    series_of,
)
from service.datadog.tags import EcsContext
from service.deployments.snapshot import DeploymentSnapshot
from service.events.models import NormalisedEvent
from service.outbox.models import OutboxItem, OutboxKind

_INSERT_FACTS = text(
    "INSERT INTO datadog_facts (key) SELECT k FROM unnest(CAST(:keys AS TEXT[])) AS k"
    " ORDER BY k ON CONFLICT DO NOTHING RETURNING key"
)
_FORGET_FACTS = text("DELETE FROM datadog_facts WHERE key = ANY(CAST(:keys AS TEXT[]))")
# Service tags win over cluster tags; tags not fetched yet (known = false) add nothing.
# Names are unique only within a scope: the service is that of the cluster's ARN when
# the fact knows it.
_TAGS = text(
    "SELECT c.cluster_arn, c.cluster_name, c.service_name,"
    " coalesce(ct.tags, '{}'::jsonb) AS cluster_tags,"
    " coalesce(st.tags, '{}'::jsonb) AS service_tags"
    " FROM unnest(CAST(:clusters AS TEXT[]), CAST(:services AS TEXT[]), CAST(:arns AS TEXT[]))"
    "   AS c(cluster_name, service_name, cluster_arn)"
    " LEFT JOIN services s ON s.cluster_name = c.cluster_name AND s.name = c.service_name"
    "   AND (c.cluster_arn = '' OR s.cluster_arn IS NULL OR s.cluster_arn = c.cluster_arn)"
    " LEFT JOIN resource_tags st ON st.resource_arn = s.arn AND st.known"
    " LEFT JOIN resource_tags ct ON ct.resource_arn = c.cluster_arn AND ct.known"
)


async def resource_tags_of(
    session: AsyncSession, contexts: Sequence[EcsContext]
) -> dict[EcsContext, dict[str, str]]:
    """ECS tags of each context's service (over its cluster's), where fetched."""
    unique = list(dict.fromkeys(c for c in contexts if c.cluster_name or c.cluster_arn))
    if not unique:
        return {}
    result = await session.execute(
        _TAGS,
        {
            "clusters": [c.cluster_name or "" for c in unique],
            "services": [c.service_name or "" for c in unique],
            "arns": [c.cluster_arn or "" for c in unique],
        },
    )
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for arn, cluster, service, cluster_tags, service_tags in result:
        merged = {str(k): str(v) for k, v in {**cluster_tags, **service_tags}.items()}
        found[(arn, cluster, service)] = merged
    return {
        c: found.get((c.cluster_arn or "", c.cluster_name or "", c.service_name or ""), {})
        for c in unique
    }


def _metrics_dedupe_key(keys: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:40]
    return f"dd:facts:{digest}"


async def record_facts(session: AsyncSession, derived: Derived, *, now: datetime) -> list[Fact]:
    """Insert ``derived``'s facts, forget what it forgets, and write the outbox rows
    of the facts that were new. Returns those facts."""
    if derived.forget:
        await session.execute(_FORGET_FACTS, {"keys": sorted(set(derived.forget))})
    by_key: dict[str, Fact] = {}
    for fact in derived.facts:
        by_key.setdefault(fact.key, fact)
    if not by_key:
        return []
    inserted = {row[0] for row in await session.execute(_INSERT_FACTS, {"keys": list(by_key)})}
    new = [fact for key, fact in by_key.items() if key in inserted]
    if not new:
        return []
    tags = await resource_tags_of(session, [f.context for f in new])
    rows: list[dict[str, Any]] = []
    series = series_of([f for f in new if f.contributions], tags)
    if series:
        rows.append(
            {
                "kind": OutboxKind.DATADOG_METRICS.value,
                "dedupe_key": _metrics_dedupe_key([f.key for f in new if f.contributions]),
                "payload": {"series": series, "source": "facts"},
            }
        )
    for fact in new:
        if fact.event is not None:
            rows.append(
                {
                    "kind": OutboxKind.DATADOG_EVENT.value,
                    # Episode facts (draining, impaired) recur: their time tells them apart.
                    "dedupe_key": f"dd:event:{fact.key}@{int(fact.event.at.timestamp())}",
                    "payload": event_payload(fact, tags.get(fact.context, {})),
                }
            )
    if rows:
        # Payloads pass through orjson so datetimes or tuples never reach the driver.
        for row in rows:
            row["payload"] = orjson.loads(orjson.dumps(row["payload"]))
        stmt = (
            pg_insert(OutboxItem).values(rows).on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
        await session.execute(stmt)
    return new


async def write_datadog_rows(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    outcomes: Mapping[str, Any],
    snapshots: Sequence[DeploymentSnapshot],
    *,
    now: datetime | None = None,
) -> list[Fact]:
    """Facts and outbox rows of newly stored ``events`` and of the deployments as
    ``snapshots`` show them (see the module doc)."""
    now = now or datetime.now(UTC)
    applied = {event_id: str(o) == "applied" for event_id, o in outcomes.items()}
    derived = derive(events, applied, now)
    for snapshot in snapshots:
        derived.facts.extend(deployment_facts(snapshot, now))
    return await record_facts(session, derived, now=now)
