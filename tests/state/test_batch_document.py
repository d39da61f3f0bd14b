"""A batch's rows as one jsonb document (service.state.apply), end to end.

Text and documents that need escaping are stored exactly (jsonb refuses a
``\\u0000`` escape, which a literal backslash-u0000 in text must not become);
integers at the edge of bigint apply or are refused by PostgreSQL, quarantining
that event alone; a malformed message in a batch longer than the stretch parsed
between two yields to the event loop is quarantined with its reason while the
rest apply.
"""

from __future__ import annotations

import json
import random
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.handler import Handler, Message
from service.demo.events import task_lifecycle

AWKWARD = 'quote " backslash \\ tab \t newline \n snowman \u2603 emoji \U0001f600 \\u0000 as text'


def _messages(events: list[dict[str, Any]]) -> list[Message]:
    return [Message(message_id=f"m{i}", body=json.dumps(e)) for i, e in enumerate(events)]


async def test_text_and_documents_needing_escapes_are_stored_exactly(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    events = task_lifecycle(random.Random(11), stop=True)
    last = events[-1]
    last["detail"]["stoppedReason"] = AWKWARD
    last["detail"]["containers"][0]["reason"] = AWKWARD
    last["detail"]["containers"][0]["name"] = "web'\"\\"
    last["detail"]["hugeCounter"] = 2**70 + 3  # beyond 64 bits: exact in the raw detail
    last["detail"]["negative"] = -(2**64) - 5
    last["detail"]["float"] = 0.1
    result = await Handler(sessionmaker).handle(_messages(events))
    assert not result.retry
    assert set(result.outcomes.values()) <= {"applied", "stale"}
    async with engine.connect() as conn:
        raw = (
            await conn.execute(
                text("SELECT detail::text FROM raw_events WHERE id = :id"), {"id": last["id"]}
            )
        ).scalar_one()
        task = (await conn.execute(text("SELECT stopped_reason, containers FROM tasks"))).one()
    assert json.loads(raw) == last["detail"]
    assert str(2**70 + 3) in raw
    assert str(-(2**64) - 5) in raw
    assert task.stopped_reason == AWKWARD
    assert task.containers[0]["reason"] == AWKWARD
    assert task.containers[0]["name"] == "web'\"\\"


async def test_versions_at_the_edge_of_bigint_apply_or_are_quarantined(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    # 2**63 - 1 fits bigint; 2**63 does not (orjson still writes it, as a u64):
    # PostgreSQL refuses the value, and only that event is quarantined.
    fits = task_lifecycle(random.Random(12), stop=False)[0]
    fits["detail"]["version"] = 2**63 - 1
    too_big = task_lifecycle(random.Random(13), stop=False)[0]
    too_big["detail"]["version"] = 2**63
    result = await Handler(sessionmaker).handle(_messages([fits, too_big]))
    assert not result.retry
    assert result.outcomes == {"m0": "applied", "m1": "quarantined"}
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version FROM tasks"))).scalars().all()
        error = (await conn.execute(text("SELECT error FROM quarantine"))).scalar_one()
    assert versions == [2**63 - 1]
    assert "bigint out of range" in error


async def test_a_malformed_message_in_a_long_batch_is_quarantined_and_the_rest_apply(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    # Longer than the stretch parsed between two yields to the event loop.
    events: list[Any] = []
    for seed in range(6):
        events += task_lifecycle(random.Random(100 + seed), stop=True)
    bodies = [json.dumps(e) for e in events]
    bodies.insert(13, '{"id": "x", "detail-type": "ECS Task State Change"')
    bodies.insert(17, json.dumps(dict(events[0], id="no-arn", detail={"lastStatus": "RUNNING"})))
    messages = [Message(message_id=f"m{i}", body=b) for i, b in enumerate(bodies)]
    result = await Handler(sessionmaker).handle(messages)
    assert not result.retry
    assert len(result.done) == len(messages)
    assert result.outcomes["m13"] == result.outcomes["m17"] == "quarantined"
    async with engine.connect() as conn:
        errors = sorted((await conn.execute(text("SELECT error FROM quarantine"))).scalars())
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar_one()
        tasks = (await conn.execute(text("SELECT count(*) FROM tasks"))).scalar_one()
    assert errors == [
        "ECS Task State Change: detail.taskArn missing",
        "body is not JSON: Expecting ',' delimiter at line 1 column 51",
    ]
    assert raw == len(events)
    assert tasks == 6
