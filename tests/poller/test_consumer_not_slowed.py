"""Throttled enrichment never slows or blocks the consumer: SQS, moto and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.config import Settings
from service.roles.consumer import run_consumer
from service.runtime import open_runtime
from tests.consumer.conftest import queue_depth, send_events
from tests.poller.fleet import REGION, Fleet, task_event
from tests.rig.aws_proxy import AwsProxy
from tests.rig.fixtures import SqsQueue


async def _drain(settings: Settings, sqs: SQSClient, queue_url: str) -> float:
    async with open_runtime(settings, pool_size=5) as runtime:
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(run_consumer(runtime, stop))
        try:
            async with asyncio.timeout(60):
                while await queue_depth(sqs, queue_url) > 0:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.1)
            return time.monotonic() - started
        finally:
            stop.set()
            await task


async def test_consumer_drains_while_every_describe_is_throttled(
    settings: Settings,
    engine: AsyncEngine,
    aws_proxy: AwsProxy,
    fleet: Fleet,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
) -> None:
    prefix = fleet.cluster_arn.replace(":cluster/", ":task/")
    arns = [f"{prefix}/{uuid.uuid4().hex}" for _ in range(30)]
    run_settings = settings.model_copy(
        update={
            "aws_endpoint_url": aws_proxy.url,
            "aws_region": REGION,
            "queue_url": sqs_queue.queue_url,
        }
    )
    for operation in ("DescribeTasks", "DescribeServices", "DescribeClusters"):
        aws_proxy.throttle(operation, 1_000_000)
    await send_events(sqs_client, sqs_queue.queue_url, [task_event(fleet, a) for a in arns])
    throttled = await _drain(run_settings, sqs_client, sqs_queue.queue_url)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM tasks WHERE arn = ANY(:arns)"), {"arns": arns}
            )
        ).scalar()
        known = (
            await conn.execute(
                text("SELECT count(*) FROM resource_tags WHERE resource_arn = ANY(:a) AND known"),
                {"a": arns},
            )
        ).scalar()
    assert stored == len(arns)  # every event applied and its message deleted
    assert known == 0  # while enrichment was still being throttled: tags stay unknown
    assert aws_proxy.throttled[("ecs", "DescribeTasks")] >= 1
    # The same drain with AWS answering: measured side by side (docs/performance.md
    # reports the numbers; timings never decide a test).
    # A queue of its own: moto would hand new messages to the first run's abandoned
    # long poll, and they would wait out their visibility timeout.
    aws_proxy.reset()
    second = (await sqs_client.create_queue(QueueName=f"t-{uuid.uuid4().hex[:16]}"))["QueueUrl"]
    more = [f"{prefix}/{uuid.uuid4().hex}" for _ in range(30)]
    await send_events(sqs_client, second, [task_event(fleet, a) for a in more])
    free = await _drain(run_settings.model_copy(update={"queue_url": second}), sqs_client, second)
    await sqs_client.delete_queue(QueueUrl=second)
    print(f"drain of 30 events: throttled enrichment {throttled:.2f} s, unthrottled {free:.2f} s")
