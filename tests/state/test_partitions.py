"""Raw events partitioned by day still store each event once.

The primary key is ``(id, time)``: a re-delivered event (same document, same
``time``) is a duplicate whichever partition holds it, midnight included. A
versionless event re-sent under a new id, and possibly another ``time`` (the next
day's partition), is a duplicate through ``raw_event_natural_keys``.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.handler import Handler, Message
from service.demo.events import cluster_arn, envelope, service_arn, task_lifecycle
from service.retention import prune

# The last instant of a day, and the first of the next: two partitions.
BEFORE_MIDNIGHT = datetime(2026, 12, 5, 23, 59, 59, 999000, tzinfo=UTC)
AFTER_MIDNIGHT = datetime(2026, 12, 6, 0, 0, 0, 1000, tzinfo=UTC)

_WHERE = (
    "SELECT e.id, e.tableoid::regclass::text AS part FROM raw_events AS e ORDER BY e.time, e.id"
)


async def _add_days(sessionmaker: async_sessionmaker[AsyncSession], *days: str) -> None:
    async with sessionmaker.begin() as session:
        for day in days:
            await session.execute(
                text("SELECT raw_events_add_day(:day)"), {"day": date.fromisoformat(day)}
            )


def _with_time(event: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {**event, "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"}


def _steady_state(at: datetime, created_at: datetime) -> dict[str, Any]:
    svc = service_arn("prod", "web")
    detail = {
        "eventType": "INFO",
        "eventName": "SERVICE_STEADY_STATE",
        "clusterArn": cluster_arn("prod"),
        "createdAt": created_at.isoformat().replace("+00:00", "Z"),
    }
    return _with_time(envelope("ECS Service Action", [svc], detail, at), at)


async def _deliver(handler: Handler, *events: dict[str, Any]) -> dict[str, str]:
    messages = [Message(f"m{i}", json.dumps(e)) for i, e in enumerate(events)]
    result = await handler.handle(messages)
    assert not result.retry
    return result.outcomes


async def test_a_redelivery_across_midnight_is_a_duplicate(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _add_days(sessionmaker, "2026-12-05", "2026-12-06")
    handler = Handler(sessionmaker)
    first, second = task_lifecycle(random.Random(3))[:2]
    late = _with_time(first, BEFORE_MIDNIGHT)
    early = _with_time(second, AFTER_MIDNIGHT)
    assert await _deliver(handler, late) == {"m0": "applied"}
    assert await _deliver(handler, early) == {"m0": "applied"}
    # The same two documents again, in one batch and then each alone.
    assert await _deliver(handler, early, late) == {"m0": "duplicate", "m1": "duplicate"}
    assert await _deliver(handler, late) == {"m0": "duplicate"}
    async with engine.connect() as conn:
        placed = (await conn.execute(text(_WHERE))).all()
    assert [tuple(r) for r in placed] == [
        (late["id"], "raw_events_p20261205"),
        (early["id"], "raw_events_p20261206"),
    ]


async def test_a_versionless_resend_the_next_day_is_a_duplicate(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _add_days(sessionmaker, "2026-12-05", "2026-12-06")
    handler = Handler(sessionmaker)
    created = BEFORE_MIDNIGHT - timedelta(seconds=1)
    original = _steady_state(BEFORE_MIDNIGHT, created)
    # Re-sent under a new id, delivered after midnight: another partition.
    resent = _steady_state(AFTER_MIDNIGHT, created)
    assert original["id"] != resent["id"]
    assert await _deliver(handler, original) == {"m0": "applied"}
    assert await _deliver(handler, resent) == {"m0": "duplicate"}
    # Two re-sends in one batch: neither is stored.
    again = [_steady_state(AFTER_MIDNIGHT, created) for _ in range(2)]
    assert await _deliver(handler, *again) == {"m0": "duplicate", "m1": "duplicate"}
    async with engine.connect() as conn:
        placed = (await conn.execute(text(_WHERE))).all()
        keys = (await conn.execute(text("SELECT id FROM raw_event_natural_keys"))).scalars()
        key_ids = list(keys)
    assert [tuple(r) for r in placed] == [(original["id"], "raw_events_p20261205")]
    assert key_ids == [original["id"]]


async def test_one_batch_keeps_one_event_per_natural_key(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    handler = Handler(sessionmaker)
    created = BEFORE_MIDNIGHT
    a = _steady_state(BEFORE_MIDNIGHT, created)
    b = _steady_state(AFTER_MIDNIGHT, created)
    a["id"], b["id"] = "id-b", "id-a"  # the smaller id wins, whatever its time
    outcomes = await _deliver(handler, a, b)
    assert sorted(outcomes.values()) == ["applied", "duplicate"]
    async with engine.connect() as conn:
        ids = (await conn.execute(text("SELECT id FROM raw_events"))).scalars().all()
    assert ids == ["id-a"]


async def test_an_event_without_a_partition_waits_in_the_default_one(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    handler = Handler(sessionmaker)
    far = datetime(2031, 1, 2, 12, tzinfo=UTC)
    event = _with_time(task_lifecycle(random.Random(5))[0], far)
    assert await _deliver(handler, event) == {"m0": "applied"}
    async with engine.connect() as conn:
        assert [tuple(r) for r in (await conn.execute(text(_WHERE))).all()] == [
            (event["id"], "raw_events_default")
        ]
    # Retention on that day adds the day's partition, and the row moves into it.
    report = await prune(sessionmaker, 30, far)
    assert report.partitions_added == 8
    assert "raw_events" not in report.deleted
    async with engine.connect() as conn:
        assert [tuple(r) for r in (await conn.execute(text(_WHERE))).all()] == [
            (event["id"], "raw_events_p20310102")
        ]
    # Still a duplicate once moved.
    assert await _deliver(handler, event) == {"m0": "duplicate"}
