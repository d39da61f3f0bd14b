"""Real ``ecswatch run --roles consumer`` processes: two at once, and SIGTERM mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
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


class _Consumer:
    """One ``ecswatch run --roles consumer`` process; a thread keeps draining its stderr.

    Draining as it goes means a chatty process can never block on a full pipe.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--roles", "consumer"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr:
            for line in self.popen.stderr:
                self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines (ECSWATCH_LOG_FORMAT=json) whose ``event`` is ``event``."""
        found = []
        for line in self.stderr.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
        return found

    def processed(self) -> int:
        """What the process said it processed, in its one ``consumer_stopped`` line."""
        stopped = self.logged("consumer_stopped")
        assert len(stopped) == 1, self.stderr[-2000:]
        processed = stopped[0]["processed"]
        assert isinstance(processed, int)
        return processed


def _start(env: dict[str, str]) -> _Consumer:
    return _Consumer(env)


def _stop(procs: list[_Consumer]) -> list[int]:
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    codes = [p.popen.wait(timeout=30) for p in procs]
    for p in procs:
        p._reader.join(timeout=10)  # its stderr is complete once the pipe closed
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


async def _wait_empty(sqs: SQSClient, queue_url: str, procs: list[_Consumer]) -> None:
    async with asyncio.timeout(120):
        while await queue_depth(sqs, queue_url) > 0:
            for p in procs:
                if p.popen.poll() is not None:
                    p._reader.join(timeout=10)
                    err = p.stderr[-2000:]
                    raise AssertionError(f"consumer exited {p.popen.returncode}: {err}")
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
    assert codes == [0, 0], [p.stderr[-2000:] for p in procs]
    # No DD_API_KEY: each process says once that Datadog forwarding is off.
    assert [p.stderr.count("datadog_forwarding_off") for p in procs] == [1, 1]
    # Both took part: a process stuck before receiving would leave this a one-process test.
    processed = [p.processed() for p in procs]
    assert all(n > 0 for n in processed), processed
    # Every message deleted once; a duplicate delivery may be processed twice.
    assert sum(processed) >= len(events), (processed, len(events))
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
