"""Stopping past the grace period releases the messages still being worked on
(visibility 0), so another consumer gets them at once instead of after the
queue's visibility timeout."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.config import Settings
from service.consumer.loop import Consumer
from service.demo.events import task_lifecycle
from service.runtime import open_runtime
from tests.consumer.conftest import send_events
from tests.rig.fixtures import SqsQueue

# Long enough that only an explicit release makes a message visible within the test.
_VISIBILITY_S = 60


async def _visible_and_held(sqs: SQSClient, queue_url: str) -> tuple[int, int]:
    attrs = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    values = attrs.get("Attributes", {})
    return (
        int(values.get("ApproximateNumberOfMessages", "0")),
        int(values.get("ApproximateNumberOfMessagesNotVisible", "0")),
    )


async def test_messages_unfinished_at_the_end_of_grace_are_released(
    aws_settings: Settings, engine: AsyncEngine, sqs_client: SQSClient, sqs_queue: SqsQueue
) -> None:
    queue_url = sqs_queue.queue_url
    await sqs_client.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(_VISIBILITY_S)}
    )
    events = task_lifecycle(random.Random(11), stop=False)
    await send_events(sqs_client, queue_url, events)
    async with open_runtime(aws_settings, pool_size=3) as runtime:
        consumer = Consumer(runtime, queue_url, wait_seconds=1, grace_s=0.5, receive_concurrency=1)
        stop = asyncio.Event()
        # Another session holds the raw events table: the batch cannot finish, and
        # is still being worked on when the grace period ends.
        async with engine.connect() as locker:
            await locker.execute(text("BEGIN"))
            await locker.execute(text("LOCK TABLE raw_events IN EXCLUSIVE MODE"))
            try:
                task = asyncio.create_task(consumer.run(stop))
                async with asyncio.timeout(10):
                    while await _visible_and_held(sqs_client, queue_url) != (0, len(events)):
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # the worker is now blocked on the lock
                assert consumer.processed == 0

                stop.set()
                async with asyncio.timeout(10):
                    await task
                # Released: visible again well before the 60 s visibility timeout.
                deadline = asyncio.get_running_loop().time() + 2
                while True:
                    visible, held = await _visible_and_held(sqs_client, queue_url)
                    if (visible, held) == (len(events), 0):
                        break
                    assert asyncio.get_running_loop().time() < deadline, (
                        f"2 s after stopping: {visible} visible, {held} still invisible"
                    )
                    await asyncio.sleep(0.1)
            finally:
                await locker.execute(text("COMMIT"))
    assert consumer.processed == 0
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
    assert raw == 0  # the cancelled batch's transaction was rolled back, not half-applied
