"""Events of a scope ecswatch holds no credentials for, with enrichment off: the
consumer role still counts them by account and lists the scope in ``GET
/v1/accounts`` as not monitored, with one write for the batch (SQS and STS on moto,
PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service import telemetry
from service.api.app import create_app
from service.config import Settings, load_settings
from service.roles.consumer import run_consumer
from service.runtime import open_runtime
from tests.consumer.conftest import queue_depth, send_events
from tests.rig.fixtures import REGION, SqsQueue

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
READ_TOKEN = "read-token-0123456789abcdef"
#: moto's own account: the credentials' account, the one scope watched by default.
OWN = "123456789012"
OTHER = "111122223333"


def _task(account: str, n: int) -> dict[str, Any]:
    """The documented task sample, moved to ``account`` (its ARNs too)."""
    raw = (SAMPLES / "task_state_change_ec2_running_2016.json").read_text()
    sample: dict[str, Any] = json.loads(raw.replace("111122223333", account))
    sample["id"] = str(uuid.uuid4())
    sample["region"] = REGION
    sample["detail"]["taskArn"] += f"{n}"
    return sample


@contextmanager
def scope_writes(engine: AsyncEngine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("INSERT INTO scopes"):
            sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_unwatched_events_are_counted_and_listed_with_enrichment_off(
    settings: Settings,
    aws_env: str,
    sqs_queue: SqsQueue,
    sqs_client: SQSClient,
    engine: AsyncEngine,
) -> None:
    configured = settings.model_copy(
        update={
            "aws_endpoint_url": aws_env,
            "aws_region": REGION,
            "queue_url": sqs_queue.queue_url,
            "enrich": False,
            "api_tokens": load_settings(api_tokens=f"read:{READ_TOKEN}").api_tokens,
        }
    )
    before = {a: telemetry.UNMONITORED_EVENTS.labels(a)._value.get() for a in (OWN, OTHER)}
    await send_events(
        sqs_client,
        sqs_queue.queue_url,
        [_task(OTHER, n) for n in range(3)] + [_task(OWN, n) for n in range(2)],
    )
    async with open_runtime(configured, pool_size=5) as runtime:
        with scope_writes(runtime.engine) as writes:
            stop = asyncio.Event()
            task = asyncio.create_task(run_consumer(runtime, stop))
            try:
                async with asyncio.timeout(60):
                    while await queue_depth(sqs_client, sqs_queue.queue_url) > 0:
                        if task.done():
                            task.result()
                        await asyncio.sleep(0.1)
            finally:
                stop.set()
                await task
        transport = httpx.ASGITransport(app=create_app(runtime))
        headers = {"Authorization": f"Bearer {READ_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as api:
            answer = await api.get("/v1/accounts")
    assert telemetry.UNMONITORED_EVENTS.labels(OTHER)._value.get() == before[OTHER] + 3
    assert telemetry.UNMONITORED_EVENTS.labels(OWN)._value.get() == before[OWN]
    # One statement for the scope, however many of its events and batches came.
    assert len(writes) == 1
    assert answer.status_code == 200, answer.text
    listed = {(r["account_id"], r["region"]): r["monitored"] for r in answer.json()["items"]}
    assert listed == {(OTHER, REGION): False}
