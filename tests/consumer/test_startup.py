"""The consumer outlasts a queue that is not there yet at start-up."""

from __future__ import annotations

import asyncio
import random
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.config import Settings
from service.consumer.loop import Consumer
from service.demo.aws import create_queue_with_dlq
from service.demo.events import task_lifecycle
from service.readiness import RoleStatus
from service.roles.supervisor import run_roles
from service.runtime import open_runtime
from tests.consumer.conftest import send_events


def _sibling_queue_url(settings: Settings, name: str) -> str:
    """The URL queue ``name`` has (or will have) beside the test's own queue."""
    assert settings.queue_url is not None
    return settings.queue_url.rsplit("/", 1)[0] + "/" + name


async def test_consumer_waits_for_its_queue_then_consumes(
    aws_settings: Settings, engine: AsyncEngine, sqs_client: SQSClient
) -> None:
    # The queue is created only after the consumer started (say, `ecswatch aws
    # setup` runs second, or SQS blinks at start-up): the role must not fail.
    name = f"late-{uuid.uuid4().hex[:12]}"
    queue_url = _sibling_queue_url(aws_settings, name)
    dlq_url: str | None = None
    events = task_lifecycle(random.Random(5), stop=False)
    async with open_runtime(aws_settings, pool_size=2) as runtime:
        consumer = Consumer(runtime, queue_url, wait_seconds=1)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            await asyncio.sleep(1.5)  # a few failed attempts
            assert not task.done()
            created, dlq_url, _ = await create_queue_with_dlq(sqs_client, name)
            assert created == queue_url
            await send_events(sqs_client, queue_url, events)
            async with asyncio.timeout(30):
                while consumer.processed < len(events):
                    assert not task.done()
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
            if dlq_url is not None:
                await sqs_client.delete_queue(QueueUrl=queue_url)
                await sqs_client.delete_queue(QueueUrl=dlq_url)
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
    assert raw == len(events)


async def test_consumer_stopped_while_waiting_for_its_queue_exits_cleanly(
    aws_settings: Settings,
) -> None:
    queue_url = _sibling_queue_url(aws_settings, f"never-{uuid.uuid4().hex[:12]}")
    async with open_runtime(aws_settings, pool_size=1) as runtime:
        consumer = Consumer(runtime, queue_url, wait_seconds=1)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.sleep(0.8)
        stop.set()
        async with asyncio.timeout(5):
            await task  # returns, does not raise
    assert consumer.processed == 0


async def test_consumer_counts_as_running_for_readyz_only_once_its_queue_answers(
    aws_settings: Settings, engine: AsyncEngine, sqs_client: SQSClient
) -> None:
    name = f"ready-{uuid.uuid4().hex[:12]}"
    queue_url = _sibling_queue_url(aws_settings, name)
    settings = aws_settings.model_copy(update={"queue_url": queue_url})
    status = RoleStatus()
    dlq_url: str | None = None
    async with open_runtime(settings, pool_size=2) as runtime:
        stop = asyncio.Event()
        roles = asyncio.create_task(run_roles(runtime, ("consumer",), stop, status=status))
        try:
            await asyncio.sleep(1.0)
            assert status.snapshot() == {"consumer": "stopped"}  # waiting for its queue
            _, dlq_url, _ = await create_queue_with_dlq(sqs_client, name)
            async with asyncio.timeout(15):
                while not status.all_running():
                    assert not roles.done()
                    await asyncio.sleep(0.1)
            assert status.snapshot() == {"consumer": "running"}
        finally:
            stop.set()
            await roles
            if dlq_url is not None:
                await sqs_client.delete_queue(QueueUrl=queue_url)
                await sqs_client.delete_queue(QueueUrl=dlq_url)
