"""A database outage mid-stream loses nothing and applies nothing twice."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.config import Settings
from service.consumer.loop import Consumer
from service.demo.events import task_lifecycle
from service.runtime import Runtime, open_runtime
from tests.consumer.conftest import queue_depth, send_events
from tests.rig.fixtures import SqsQueue
from tests.rig.tcp_proxy import TcpProxy


async def test_database_outage_mid_stream(
    aws_settings: Settings,
    database_url: str,
    db_proxy: TcpProxy,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    short_visibility: SqsQueue,
) -> None:
    rng = random.Random(7)
    events = [e for n in range(12) for e in task_lifecycle(rng, service=f"s{n % 3}")]
    proxied = make_url(database_url).set(host="127.0.0.1", port=db_proxy.port)
    settings = aws_settings.model_copy(
        update={"database_url": proxied.render_as_string(hide_password=False)}
    )
    queue_url = short_visibility.queue_url
    # Two waves: the second is sent while the database is gone, so the consumer
    # certainly has work to do during the outage (the pipeline outruns moto's
    # deletes, so a cut timed against progress alone can fall between batches).
    first, second = events[:40], events[40:]
    await send_events(sqs_client, queue_url, first)
    runtime: Runtime
    async with open_runtime(settings, pool_size=3) as runtime:
        consumer = Consumer(runtime, queue_url, wait_seconds=1)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            async with asyncio.timeout(60):
                while consumer.processed < 20:
                    await asyncio.sleep(0.05)
                db_proxy.cut()  # the database goes away mid-stream ...
                await send_events(sqs_client, queue_url, second)
                await asyncio.sleep(3)
                db_proxy.restore()  # ... and comes back
                while await queue_depth(sqs_client, queue_url) > 0:
                    assert not task.done()
                    await asyncio.sleep(0.2)
        finally:
            stop.set()
            await task
    # The outage was really met: the consumer went for the database while it was
    # gone (and then recovered by itself, as the state below shows).
    assert db_proxy.refused > 0
    assert await queue_depth(sqs_client, short_visibility.dlq_url) == 0
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
        tasks = (await conn.execute(text("SELECT arn, version FROM tasks"))).all()
        quarantined = (await conn.execute(text("SELECT count(*) FROM quarantine"))).scalar()
    assert raw == len(events)  # every event stored once: none lost, none doubled
    assert quarantined == 0
    final = {e["detail"]["taskArn"]: e["detail"]["version"] for e in events}
    assert dict((arn, version) for arn, version in tasks) == final
