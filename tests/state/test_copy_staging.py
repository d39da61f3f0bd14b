"""Raw events and tasks by binary COPY into a staging table (service.state.apply).

Values that need escaping in a text format travel as they are; rows COPY cannot
take go the JSON path, where PostgreSQL accepts or refuses them as before; an
error during COPY is classified like any statement's; and the staging table never
carries rows from one statement (or transaction) into the next.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.handler import Handler, Message, _refuses_this_event
from service.db import sqlstate_of
from service.demo.events import task_lifecycle
from service.state import apply
from service.state.models import Cluster

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
    # 2**63 - 1 fits bigint (COPY); 2**63 does not: that batch's tasks go the JSON
    # path, PostgreSQL refuses the value, and only that event is quarantined.
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


async def test_an_error_during_copy_is_classified_like_a_statement_error(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    columns = ("arn", "name", "account", "region")
    row = {"arn": "arn:aws:ecs:us-east-1:1:cluster/a", "name": "a", "account": "1", "region": "x"}

    async def copy(values: dict[str, Any]) -> None:
        async with sessionmaker() as session, session.begin():
            await apply._copy_insert(
                session, Cluster, columns, [values], order_by="arn", tail="", fallback="unused"
            )

    # PostgreSQL refuses a NUL in text: its SQLSTATE (class 22) blames the event.
    with pytest.raises(DBAPIError) as refused:
        await copy(dict(row, name="a\x00b"))
    assert sqlstate_of(refused.value) == "22021"
    assert _refuses_this_event(refused.value)
    # The driver refuses a lone surrogate before sending it: the event's data too.
    with pytest.raises(DBAPIError) as unsendable:
        await copy(dict(row, name="a\ud800"))
    assert sqlstate_of(unsendable.value) is None
    assert _refuses_this_event(unsendable.value)
    # The connection is usable afterwards, and the staging table empty.
    await copy(row)


async def test_the_staging_table_holds_nothing_over_from_before(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    columns = ("arn", "name")

    def rows(*names: str) -> list[dict[str, Any]]:
        return [{"arn": f"arn:aws:ecs:us-east-1:1:cluster/{n}", "name": n} for n in names]

    async def insert(session: AsyncSession, names: tuple[str, ...]) -> list[str]:
        result = await apply._copy_insert(
            session,
            Cluster,
            columns,
            rows(*names),
            order_by="arn",
            tail=" ON CONFLICT DO NOTHING RETURNING name",
            fallback="unused",
        )
        return sorted(row[0] for row in result)

    # A transaction that created the staging table and rolled back (the table with it).
    async with sessionmaker() as session, session.begin():
        assert await insert(session, ("rolled",)) == ["rolled"]
        await session.rollback()
    async with sessionmaker() as session, session.begin():
        # Two statements through the same staging table in one transaction: each
        # takes its rows out of it.
        assert await insert(session, ("a", "b")) == ["a", "b"]
        stage = apply._staged(
            Cluster, columns, "arn", " ON CONFLICT DO NOTHING RETURNING name"
        ).stage
        left = await session.execute(text(f"SELECT count(*) FROM {stage}"))
        assert left.scalar_one() == 0
        assert await insert(session, ("c",)) == ["c"]
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM clusters ORDER BY name"))).scalars()
        assert list(names) == ["a", "b", "c"]


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
