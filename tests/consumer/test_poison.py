"""Bad messages are quarantined with their reason and deleted; neighbours still apply."""

from __future__ import annotations

import json
import random

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.consumer.handler import Handler, Message
from service.demo.events import task_lifecycle
from service.runtime import Runtime
from service.telemetry import REGISTRY
from tests.consumer.conftest import consume_until_empty, queue_depth, send_events
from tests.rig.fixtures import SqsQueue


async def test_poison_is_quarantined_and_neighbours_apply(
    aws_runtime: Runtime, sqs_client: SQSClient, sqs_queue: SqsQueue, engine: AsyncEngine
) -> None:
    good = task_lifecycle(random.Random(1), stop=False)
    broken_detail = dict(good[0], id="broken-1", detail={"lastStatus": "RUNNING"})
    bodies: list[object] = [
        "this is not json",
        json.dumps([1, 2, 3]),
        json.dumps({"hello": "world"}),
        broken_detail,
        *good,
    ]
    await send_events(sqs_client, sqs_queue.queue_url, bodies)
    consumer = await consume_until_empty(aws_runtime, sqs_client, sqs_queue.queue_url)
    assert consumer.processed == len(bodies)
    assert await queue_depth(sqs_client, sqs_queue.dlq_url) == 0
    async with engine.connect() as conn:
        errors = sorted(
            r[0] for r in (await conn.execute(text("SELECT error FROM quarantine"))).all()
        )
        task = (await conn.execute(text("SELECT last_status, version FROM tasks"))).one()
    assert errors == sorted(
        [
            "body is not JSON: Expecting value at line 1 column 1",
            "not an event: body is an array, not an object",
            "not an event: missing 'id', 'detail-type', 'source', 'detail'",
            "ECS Task State Change: detail.taskArn missing",
        ]
    )
    assert task.last_status == "RUNNING"
    assert task.version == good[-1]["detail"]["version"]


async def test_a_message_the_database_rejects_is_quarantined_alone(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    events = task_lifecycle(random.Random(2), stop=False)
    # A version beyond bigint parses fine but PostgreSQL refuses it at insert time.
    events[1]["detail"]["version"] = 10**20
    messages = [Message(message_id=f"m{i}", body=json.dumps(e)) for i, e in enumerate(events)]
    result = await Handler(runtime.sessionmaker).handle(messages)
    assert not result.retry
    assert len(result.done) == len(messages)
    assert result.outcomes["m1"] == "quarantined"
    assert {result.outcomes[f"m{i}"] for i in (0, 2, 3)} == {"applied"}
    async with engine.connect() as conn:
        error = (await conn.execute(text("SELECT error, count FROM quarantine"))).one()
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
    assert error.error.startswith("ECS Task State Change: cannot be stored (")
    assert "bigint out of range" in error.error
    assert error.count == 1
    assert raw == 3


async def test_quarantine_counts_repeats(runtime: Runtime, engine: AsyncEngine) -> None:
    handler = Handler(runtime.sessionmaker)
    for _ in range(3):
        await handler.handle([Message(message_id="x", body="{oops")])
    async with engine.connect() as conn:
        query = text("SELECT count, first_seen <= last_seen FROM quarantine")
        row = (await conn.execute(query)).one()
    assert tuple(row) == (3, True)


async def test_raw_detail_is_stored_exactly_whichever_serialiser_writes_it(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    # The batch is written as one JSON document: orjson for ordinary events, the
    # standard library when orjson cannot (an integer beyond 64 bits). Either way
    # the stored detail is the detail received, digit for digit and character for
    # character.
    plain, wide, escaped, deep = task_lifecycle(random.Random(3), stop=True)[:4]
    wide["detail"]["extraCounter"] = 2**70 + 1
    escaped["detail"]["note"] = 'quote " backslash \\ tab \t snowman \u2603 nul-free'
    nested: object = "leaf"
    for _ in range(600):  # deeper than orjson writes, well within what json reads
        nested = [nested]
    deep["detail"]["nested"] = nested
    events = (plain, wide, escaped, deep)
    messages = [Message(message_id=f"m{i}", body=json.dumps(e)) for i, e in enumerate(events)]
    result = await Handler(runtime.sessionmaker).handle(messages)
    assert not result.retry
    assert "quarantined" not in result.outcomes.values()
    async with engine.connect() as conn:
        stored = dict((await conn.execute(text("SELECT id, detail::text FROM raw_events"))).all())
    assert len(stored) == len(events)
    for event in events:
        assert json.loads(stored[event["id"]]) == event["detail"]
    assert str(2**70 + 1) in stored[wide["id"]]


async def test_a_source_ecswatch_does_not_accept_is_quarantined_with_its_reason(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    good = task_lifecycle(random.Random(3), stop=False)[0]
    forged = [
        dict(good, id="forged-1", source="my.app"),
        dict(good, id="forged-2", source="aws.s3"),
        dict(good, id="forged-3", source="aws.ecs.fake\n<!channel>"),
    ]
    messages = [Message(message_id=e["id"], body=json.dumps(e)) for e in [*forged, good]]
    result = await Handler(runtime.sessionmaker).handle(messages)
    assert not result.retry
    assert {result.outcomes[e["id"]] for e in forged} == {"quarantined"}
    assert result.outcomes[good["id"]] == "applied"
    async with engine.connect() as conn:
        errors = sorted(r[0] for r in (await conn.execute(text("SELECT error FROM quarantine"))))
        stored = (await conn.execute(text("SELECT id FROM raw_events"))).scalars().all()
    assert errors == [
        "source 'aws.ecs.fake <!channel>' is not one ecswatch accepts",
        "source 'aws.s3' is not one ecswatch accepts",
        "source 'my.app' is not one ecswatch accepts",
    ]
    assert stored == [good["id"]]


async def test_a_heartbeat_is_acknowledged_and_never_stored(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    heartbeat = {
        "id": "hb-1",
        "detail-type": "ecswatch heartbeat",
        "source": "ecswatch.heartbeat",
        "time": "2026-01-01T00:00:00Z",
        "detail": {"sent_at": "2026-01-01T00:00:00Z"},
    }
    good = task_lifecycle(random.Random(4), stop=False)[0]
    messages = [
        Message(message_id="hb", body=json.dumps(heartbeat)),
        Message(message_id="ev", body=json.dumps(good)),
    ]
    counted = {"detail_type": "ecswatch heartbeat"}
    before = REGISTRY.get_sample_value("ecswatch_events_received_total", counted) or 0.0
    result = await Handler(runtime.sessionmaker).handle(messages)
    after = REGISTRY.get_sample_value("ecswatch_events_received_total", counted)
    assert after == before + 1
    assert not result.retry
    assert sorted(m.message_id for m in result.done) == ["ev", "hb"]
    assert result.outcomes == {"hb": "heartbeat", "ev": "applied"}
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT id FROM raw_events"))).scalars().all()
        quarantined = (await conn.execute(text("SELECT count(*) FROM quarantine"))).scalar()
    assert stored == [good["id"]]
    assert quarantined == 0
