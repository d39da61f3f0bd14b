"""The Describe writes lock tables in the consumer's order (service.db.WRITE_ORDER).

Every write statement of a transaction is recorded as it reaches PostgreSQL, so
the order checked is the order the locks are taken, not what the code intends:
the consumer applies every documented sample event (Datadog on, so every table
it writes is covered), and each kind of Describe write runs over rows the
consumer created.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.transaction import commit_events
from service.db import WRITE_ORDER
from service.enrich import writes
from service.events.normalise import parse_message

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

_WRITE = re.compile(r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)')
# A SELECT that locks rows, and waits for them (SKIP LOCKED never waits).
_LOCK = re.compile(r"^\s*SELECT\b.*?\bFROM\s+(\w+)\b(?!.*SKIP LOCKED).*\bFOR UPDATE\b", re.S)


@contextmanager
def tables_written(engine: AsyncEngine) -> Iterator[list[str]]:
    """The table of every INSERT, UPDATE, DELETE and SELECT … FOR UPDATE sent while the
    block runs, in order."""
    written: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        match = _WRITE.match(statement) or _LOCK.match(statement)
        if match:
            written.append(match.group(1))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield written
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def _inversions(first: list[str], second: list[str]) -> set[tuple[str, str]]:
    """Pairs (a, b) that ``first`` writes a-then-b and ``second`` b-then-a: the pairs
    of tables on which the two transactions could each hold what the other waits for."""
    ab = {(a, b) for i, a in enumerate(first) for b in first[i + 1 :] if a != b}
    ba = {(a, b) for i, b in enumerate(second) for a in second[i + 1 :] if a != b}
    return ab & ba


def _rank_order(sequence: list[str]) -> list[str]:
    """``sequence`` without repeats of the table just before (one table's statements)."""
    return [t for i, t in enumerate(sequence) if i == 0 or sequence[i - 1] != t]


async def _consumer_writes(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> list[str]:
    events = []
    for path in sorted(SAMPLES.glob("*.json")):
        if path.name.startswith("sns_"):
            continue  # plain text, quarantined before any state is written
        events.append(parse_message(path.read_text(), received_at=NOW))
    with tables_written(engine) as written:
        async with sessionmaker() as session, session.begin():
            await commit_events(session, events, datadog=True)
    return list(written)


async def _describe_writes(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> dict[str, list[str]]:
    """Each kind of Describe write, over rows the consumer wrote (found and missing)."""
    async with engine.connect() as conn:
        arns = {
            table: [row[0] for row in await conn.execute(text(f"SELECT arn FROM {table}"))]
            for table in ("tasks", "container_instances", "services", "clusters")
        }
    tags = [{"key": "team", "value": "web"}]
    task = {
        "taskArn": arns["tasks"][0],
        "clusterArn": arns["clusters"][0],
        "taskDefinitionArn": "arn:aws:ecs:us-west-2:111122223333:task-definition/web:1",
        "lastStatus": "RUNNING",
        "desiredStatus": "RUNNING",
        "version": 99,
        "containers": [{"name": "app", "lastStatus": "RUNNING"}],
        "tags": tags,
    }
    instance = {
        "containerInstanceArn": arns["container_instances"][0],
        "ec2InstanceId": "i-0123",
        "status": "ACTIVE",
        "agentConnected": True,
        "version": 99,
        "healthStatus": {"overallStatus": "OK", "details": []},
        "tags": tags,
    }
    service = {
        "serviceArn": arns["services"][0],
        "clusterArn": arns["clusters"][0],
        "status": "ACTIVE",
        "desiredCount": 2,
        "tags": tags,
    }
    cluster = {"clusterArn": arns["clusters"][0], "status": "ACTIVE", "tags": tags}
    described = {
        "tasks": ([task], arns["tasks"][1:]),
        "container_instances": ([instance], arns["container_instances"][1:]),
        "services": ([service], arns["services"][1:]),
        "clusters": ([cluster], arns["clusters"][1:]),
    }
    sequences: dict[str, list[str]] = {}
    for kind, (items, missing) in described.items():
        assert missing, f"the samples give more than one {kind} row"
        with tables_written(engine) as written:
            async with sessionmaker() as session, session.begin():
                await writes.write_described(session, kind, items, missing, NOW)
        sequences[kind] = list(written)
    definition = {
        "taskDefinitionArn": task["taskDefinitionArn"],
        "family": "web",
        "revision": 1,
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "nginx"}],
    }
    with tables_written(engine) as written:
        async with sessionmaker() as session, session.begin():
            await writes.write_task_definitions(session, [definition], NOW)
    sequences["task_definitions"] = list(written)
    return sequences


async def test_describe_writes_lock_tables_in_the_consumers_order(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    consumer = await _consumer_writes(engine, sessionmaker)
    describe = await _describe_writes(engine, sessionmaker)

    # The documented order is the consumer's: each table first written in that order.
    first = list(dict.fromkeys(consumer))
    assert set(first) <= set(WRITE_ORDER), set(first) - set(WRITE_ORDER)
    assert first == sorted(first, key=WRITE_ORDER.index)

    expected = {
        "tasks": ["tasks", "resource_tags"],
        "container_instances": ["container_instances", "resource_tags"],
        "services": ["services", "resource_tags"],
        "clusters": ["clusters", "resource_tags"],
        "task_definitions": ["task_definitions", "tasks"],
    }
    for kind, written in describe.items():
        # Each Describe write follows the documented order, each table's statements together...
        assert _rank_order(written) == expected[kind], (kind, written)
        assert written == sorted(written, key=WRITE_ORDER.index), (kind, written)
        # ...so no two tables are taken in the opposite order from the consumer's.
        assert _inversions(written, consumer) == set(), (kind, written, consumer)


def test_inversions_finds_tables_taken_in_opposite_orders() -> None:
    # The check above can fail: the order the Describe writes had before (tags first).
    old_tasks = ["resource_tags", "tasks", "tasks", "tasks"]
    consumer = ["raw_events", "clusters", "tasks", "services", "resource_tags"]
    assert _inversions(old_tasks, consumer) == {("resource_tags", "tasks")}
    assert _inversions(["tasks", "resource_tags"], consumer) == set()
