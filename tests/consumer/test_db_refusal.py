"""The database refusing *us* (read-only, permission denied) is not the event's fault:
the message is kept for redelivery, never quarantined (and so never deleted)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from service.consumer.handler import Handler, HandleResult, Message
from service.db import create_sessionmaker, to_asyncpg_url
from service.demo.events import task_lifecycle


def _good_event() -> dict[str, Any]:
    # The first event of a lifecycle: a task state change that applies on its own.
    return task_lifecycle(random.Random(7), stop=False)[0]


def _message(event: dict[str, Any], message_id: str = "m-refused") -> Message:
    return Message(message_id=message_id, body=json.dumps(event))


async def _handle_on(
    database_url: str, server_settings: dict[str, str], message: Message
) -> HandleResult:
    """Handle ``message`` on an engine whose connections start with ``server_settings``."""
    refusing = create_async_engine(
        to_asyncpg_url(database_url), connect_args={"server_settings": server_settings}
    )
    try:
        handler = Handler(async_sessionmaker(refusing, expire_on_commit=False, autoflush=False))
        return await handler.handle([message])
    finally:
        await refusing.dispose()


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        quarantined = (await conn.execute(text("SELECT count(*) FROM quarantine"))).scalar()
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
        tasks = (await conn.execute(text("SELECT count(*) FROM tasks"))).scalar()
    return quarantined or 0, raw or 0, tasks or 0


def _assert_kept_for_redelivery(result: HandleResult, message: Message) -> None:
    assert result.retry == [message]
    assert result.done == []
    assert result.outcomes == {}


async def test_read_only_database_keeps_the_message_for_redelivery(
    database_url: str, engine: AsyncEngine
) -> None:
    # A failover onto a replica: every write is refused with 25006. (The quarantine
    # write is refused too, so this alone cannot tell "retry" from "tried to
    # quarantine"; the permission test below can.)
    message = _message(_good_event())
    result = await _handle_on(database_url, {"default_transaction_read_only": "on"}, message)
    _assert_kept_for_redelivery(result, message)
    assert await _counts(engine) == (0, 0, 0)


@pytest.fixture
async def role_without_task_writes(engine: AsyncEngine) -> AsyncIterator[str]:
    """A role that may write every table except ``tasks`` (a bad grant); dropped afterwards.

    The quarantine table stays writable, so only the handler's judgement keeps the
    event out of it.
    """
    role = f"ecswatch_norole_{uuid.uuid4().hex[:10]}"
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        await conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        await conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        )
        await conn.execute(
            text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        )
        await conn.execute(text(f'REVOKE INSERT, UPDATE ON tasks FROM "{role}"'))
    try:
        yield role
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP OWNED BY "{role}"'))
            await conn.execute(text(f'DROP ROLE "{role}"'))


async def test_permission_denied_keeps_the_message_out_of_quarantine(
    database_url: str, engine: AsyncEngine, role_without_task_writes: str
) -> None:
    # 42501 insufficient_privilege on tasks, after raw_events was written in the same
    # transaction: nothing of the event is kept, and it is not blamed either.
    message = _message(_good_event())
    result = await _handle_on(database_url, {"role": role_without_task_writes}, message)
    _assert_kept_for_redelivery(result, message)
    assert await _counts(engine) == (0, 0, 0)


async def test_control_same_event_applies_and_a_data_error_is_still_quarantined(
    engine: AsyncEngine,
) -> None:
    # The refusals above are the database's doing, not the event's: on a normal
    # engine the very same event applies. A value PostgreSQL rejects as data
    # (bigint out of range, SQLSTATE class 22) is still the event's fault.
    good = _good_event()
    bad = json.loads(json.dumps(good))
    bad["id"] = f"{good['id']}-too-big"
    bad["detail"]["version"] = 10**20
    handler = Handler(create_sessionmaker(engine))

    applied = await handler.handle([_message(good, "m-good")])
    assert applied.retry == []
    assert applied.outcomes == {"m-good": "applied"}

    quarantined = await handler.handle([_message(bad, "m-bad")])
    assert quarantined.retry == []
    assert [m.message_id for m in quarantined.done] == ["m-bad"]
    assert quarantined.outcomes == {"m-bad": "quarantined"}

    async with engine.connect() as conn:
        error = (await conn.execute(text("SELECT error FROM quarantine"))).scalar_one()
    assert "bigint out of range" in error
    assert await _counts(engine) == (1, 1, 1)


async def test_a_body_that_is_not_utf8_is_quarantined_not_retried(engine: AsyncEngine) -> None:
    # Replay reads files with surrogateescape: bytes that are not UTF-8 become lone
    # surrogates, which PostgreSQL text cannot hold. The quarantine row escapes them
    # instead of failing the write (which left the message neither stored nor kept).
    body = b'{"id": "x", "bad": "\xff\xfe"}'.decode("utf-8", "surrogateescape")
    message_id = b"file-\xff.json:1".decode("utf-8", "surrogateescape")
    result = await Handler(create_sessionmaker(engine)).handle([Message(message_id, body)])
    assert result.retry == []
    assert result.outcomes == {message_id: "quarantined"}
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT body, source_message_id FROM quarantine"))).one()
    assert row.body == '{"id": "x", "bad": "\\udcff\\udcfe"}'
    assert row.source_message_id == "file-\\udcff.json:1"
