"""Real ``ecswatch run --roles consumer`` processes: two at once, and SIGTERM mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.consumer.handler import Handler, Message
from service.demo.events import deployment_events, task_lifecycle
from service.runtime import Runtime
from tests.conftest import _TABLES
from tests.consumer.conftest import queue_depth, send_events
from tests.rig.fixtures import REGION, SqsQueue

_STATE = (
    "SELECT (SELECT count(*) FROM raw_events),"
    " (SELECT count(*) FROM quarantine),"
    " (SELECT coalesce(jsonb_agg(jsonb_build_array(arn, version, last_status, stop_code,"
    "   containers) ORDER BY arn), '[]') FROM tasks),"
    " (SELECT coalesce(jsonb_agg(jsonb_build_array(id, outcome, rollback_target, failed_tasks,"
    "   last_event_at) ORDER BY id), '[]') FROM deployments)"
)


def _env(database_url: str, queue_url: str, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_", "AWS_"))}
    env.update(
        ECSWATCH_DATABASE_URL=database_url,
        ECSWATCH_QUEUE_URL=queue_url,
        ECSWATCH_LOG_FORMAT="json",
        ECSWATCH_SHUTDOWN_GRACE_S="10",
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    return env


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", "run", "--roles", "consumer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=30) for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    return codes


def _workload(seed: int, tasks: int) -> list[dict[str, Any]]:
    """Mixed task and deployment events, 10% duplicates, shuffled."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(tasks):
        events += task_lifecycle(rng, service=f"svc{n % 4}", fail=n % 5 == 0)
    events += deployment_events(
        cluster="prod",
        service="web",
        deployment_id="ecs-svc/1234567890123456789",
        start=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        outcome="failed",
        rollback_to="ecs-svc/1111111111111111111",
    )
    events += rng.sample(events, len(events) // 10)
    rng.shuffle(events)
    return events


async def _state(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        return tuple((await conn.execute(text(_STATE))).one())


async def _reference(runtime: Runtime, engine: AsyncEngine, events: list[dict[str, Any]]) -> Any:
    """The state one in-process handler reaches with the same events; then reset."""
    handler = Handler(runtime.sessionmaker)
    for i, event in enumerate(events):
        await handler.handle([Message(str(i), json.dumps(event))])
    state = await _state(engine)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    return state


async def _wait_empty(sqs: SQSClient, queue_url: str, procs: list[subprocess.Popen[bytes]]) -> None:
    async with asyncio.timeout(120):
        while await queue_depth(sqs, queue_url) > 0:
            for p in procs:
                if p.poll() is not None:
                    err = (p.stderr.read() if p.stderr else b"").decode()[-2000:]
                    raise AssertionError(f"consumer exited {p.returncode}: {err}")
            await asyncio.sleep(0.3)


async def test_two_consumer_processes_end_as_one(
    database_url: str,
    runtime: Runtime,
    engine: AsyncEngine,
    aws_env: str,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
) -> None:
    events = _workload(11, 30)
    reference = await _reference(runtime, engine, events)
    await send_events(sqs_client, sqs_queue.queue_url, events)
    env = _env(database_url, sqs_queue.queue_url, aws_env)
    procs = [_start(env), _start(env)]
    try:
        await _wait_empty(sqs_client, sqs_queue.queue_url, procs)
    finally:
        codes = _stop(procs)
    assert codes == [0, 0]
    assert await _state(engine) == reference
    assert await queue_depth(sqs_client, sqs_queue.dlq_url) == 0


async def test_sigterm_mid_stream_then_restart_finishes(
    database_url: str,
    runtime: Runtime,
    engine: AsyncEngine,
    aws_env: str,
    sqs_client: SQSClient,
    short_visibility: SqsQueue,
) -> None:
    # A long poll cut short by SIGTERM may still have taken messages: they come back
    # after the visibility timeout, kept short here so the test is quick.
    sqs_queue = short_visibility
    events = _workload(12, 40)
    reference = await _reference(runtime, engine, events)
    await send_events(sqs_client, sqs_queue.queue_url, events)
    env = _env(database_url, sqs_queue.queue_url, aws_env)
    first = _start(env)
    try:
        async with asyncio.timeout(60):
            while True:  # stop it while it is busy: some applied, most not yet
                async with engine.connect() as conn:
                    done = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
                if done and done >= 20:
                    break
                await asyncio.sleep(0.05)
    finally:
        codes = _stop([first])
    assert codes == [0]
    assert await queue_depth(sqs_client, sqs_queue.queue_url) > 0  # work was left over
    second = _start(env)
    try:
        await _wait_empty(sqs_client, sqs_queue.queue_url, [second])
    finally:
        codes = _stop([second])
    assert codes == [0]
    assert await _state(engine) == reference  # nothing lost, nothing doubled
