"""Fixtures for the consumer: a runtime wired to moto's SQS and the test database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.config import Settings
from service.consumer.loop import Consumer
from service.runtime import Runtime, open_runtime
from tests.rig.fixtures import REGION, SqsQueue


@pytest.fixture
async def short_visibility(sqs_client: SQSClient, sqs_queue: SqsQueue) -> SqsQueue:
    """The per-test queue with a 2 s visibility timeout, so redelivery is quick."""
    await sqs_client.set_queue_attributes(
        QueueUrl=sqs_queue.queue_url, Attributes={"VisibilityTimeout": "2"}
    )
    return sqs_queue


@pytest.fixture
def aws_settings(settings: Settings, aws_env: str, sqs_queue: SqsQueue) -> Settings:
    return settings.model_copy(
        update={"aws_endpoint_url": aws_env, "aws_region": REGION, "queue_url": sqs_queue.queue_url}
    )


@pytest.fixture
async def aws_runtime(aws_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Runtime]:
    async with open_runtime(aws_settings, pool_size=5) as rt:
        yield rt


async def send_events(sqs: SQSClient, queue_url: str, bodies: Sequence[Any]) -> None:
    """Send each body (a dict is JSON-encoded, a str is sent as is), ten at a time."""
    encoded = [b if isinstance(b, str) else json.dumps(b) for b in bodies]
    for start in range(0, len(encoded), 10):
        chunk = encoded[start : start + 10]
        await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )


async def queue_depth(sqs: SQSClient, queue_url: str) -> int:
    attrs = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    values = attrs.get("Attributes", {})
    return int(values.get("ApproximateNumberOfMessages", "0")) + int(
        values.get("ApproximateNumberOfMessagesNotVisible", "0")
    )


async def consume_until_empty(
    runtime: Runtime, sqs: SQSClient, queue_url: str, *, within: float = 60, **kwargs: Any
) -> Consumer:
    """Run a consumer until the queue is empty (nothing visible or in flight)."""
    consumer = Consumer(runtime, queue_url, wait_seconds=1, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(within):
            while await queue_depth(sqs, queue_url) > 0:
                if task.done():
                    task.result()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    return consumer
