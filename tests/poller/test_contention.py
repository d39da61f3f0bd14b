"""Describe writes that lose a lock race are run again, whole; a last failure is logged.

The deadlock here is a real one between two PostgreSQL sessions; the other
failures are real PostgreSQL errors raised by the server with the SQLSTATE under
test (a ``RAISE … USING ERRCODE`` in a statement or trigger), never mocks.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.backoff import Backoff
from service.consumer.handler import Handler, Message
from service.db import CONTENTION_ATTEMPTS, retry_on_contention, sqlstate_of
from service.enrich import writes
from service.enrich.describer import Describer, Kind, State
from service.enrich.enricher import Enricher
from service.poller.leader import Job, run_job
from service.poller.reconcile import Reconciler
from service.runtime import Runtime
from tests.poller.deadlocks import provoked_deadlocks
from tests.poller.fleet import Fleet, task_event

FAST = Backoff(initial=0.001, cap=0.001, jitter=0.0)


def _messages(events: list[dict[str, Any]]) -> list[Message]:
    return [Message(message_id=str(uuid.uuid4()), body=json.dumps(e)) for e in events]


def _raise(sqlstate: str) -> Any:
    return text(
        f"DO $$ BEGIN RAISE EXCEPTION 'provoked by the test' USING ERRCODE = '{sqlstate}'; END $$"
    )


def _count(transaction: str, result: str) -> float:
    value: float = telemetry.DB_CONTENTION.labels(transaction, result)._value.get()
    return value


@pytest.fixture
async def describer(proxied_runtime: Runtime) -> AsyncIterator[Describer]:
    scopes = await proxied_runtime.aws_scopes()
    async with Describer(proxied_runtime.sessionmaker, scopes) as d:
        yield d


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


# ---------------------------------------------------------------- the helper


async def test_a_transaction_that_loses_a_lock_race_runs_again_from_the_start(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    attempts: list[int] = []
    before = _count("test", "retried")

    async def work(session: AsyncSession) -> str:
        attempts.append(1)
        # A plain INSERT: were the first attempt's row kept, the second would
        # fail on the primary key instead of succeeding.
        await session.execute(text("INSERT INTO resource_tags (resource_arn) VALUES ('arn:x')"))
        if len(attempts) == 1:
            await session.execute(_raise("40P01"))
        return "done"

    result = await retry_on_contention(sessionmaker, work, name="test", backoff=FAST)
    assert (result, len(attempts)) == ("done", 2)
    assert await _scalar(engine, "SELECT count(*) FROM resource_tags") == 1
    assert _count("test", "retried") - before == 1


async def test_contention_on_every_attempt_is_logged_and_raised(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    attempts: list[int] = []
    before = _count("test", "gave_up")

    async def work(session: AsyncSession) -> None:
        attempts.append(1)
        await session.execute(text("INSERT INTO resource_tags (resource_arn) VALUES ('arn:x')"))
        await session.execute(_raise("40001"))

    with structlog.testing.capture_logs() as logs, pytest.raises(DBAPIError) as raised:
        await retry_on_contention(sessionmaker, work, name="test", backoff=FAST)
    assert sqlstate_of(raised.value) == "40001"
    assert len(attempts) == CONTENTION_ATTEMPTS
    assert await _scalar(engine, "SELECT count(*) FROM resource_tags") == 0
    assert _count("test", "gave_up") - before == 1
    gave_up = [e for e in logs if e["event"] == "transaction_contention_gave_up"]
    assert gave_up == [
        {
            "event": "transaction_contention_gave_up",
            "log_level": "warning",
            "transaction": "test",
            "attempts": CONTENTION_ATTEMPTS,
            "sqlstate": "40001",
        }
    ]


async def test_other_errors_are_not_retried(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    attempts: list[int] = []

    async def work(session: AsyncSession) -> None:
        attempts.append(1)
        await session.execute(_raise("23505"))  # unique_violation: the data, not a race

    with pytest.raises(DBAPIError) as raised:
        await retry_on_contention(sessionmaker, work, name="test", backoff=FAST)
    assert sqlstate_of(raised.value) == "23505"
    assert len(attempts) == 1


# ---------------------------------------------------------------- a real deadlock


async def _wait_until_blocked_by(engine: AsyncEngine, pid: int) -> None:
    """Until another session waits for a lock that session ``pid`` holds."""
    async with asyncio.timeout(10):
        while not await _scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE CAST(:pid AS INT) = ANY(pg_blocking_pids(pid))",
            pid=pid,
        ):
            await asyncio.sleep(0.01)


async def _begin_other(conn: AsyncConnection) -> int:
    """Open the other session's transaction; its pid. As a superuser, it leaves the
    deadlock check to the Describe write alone (which waits first, so checks first
    anyway): the victim is the Describe write whatever the machine's load."""
    await conn.begin()
    if await conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")):
        await conn.execute(text("SET LOCAL deadlock_timeout = '60s'"))
    pid: int = await conn.scalar(text("SELECT pg_backend_pid()"))
    return pid


async def test_a_describe_write_deadlocked_by_another_session_is_retried_and_lands(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet
) -> None:
    engine = proxied_runtime.engine
    await Handler(proxied_runtime.sessionmaker).handle(
        _messages([task_event(fleet, arn) for arn in fleet.task_arns])
    )
    first = fleet.task_arns[0]
    before = _count("describe_tasks", "retried")
    async with engine.connect() as other:
        pid = await _begin_other(other)
        # The other session takes a tag row first, then the task's row: the
        # opposite of the lock order (tasks, then resource_tags).
        await other.execute(
            text("UPDATE resource_tags SET known = known WHERE resource_arn = :arn"), {"arn": first}
        )
        describing = asyncio.create_task(
            describer.describe(Kind.TASKS, fleet.cluster, fleet.task_arns)
        )
        # The Describe write holds the task rows and waits for the tag row...
        await _wait_until_blocked_by(engine, pid)
        # ...and now waits for what waits for it: PostgreSQL aborts the Describe
        # write (40P01), which releases the task row this statement waits for.
        await other.execute(
            text("UPDATE tasks SET seen_at = now() WHERE arn = :arn"), {"arn": first}
        )
        await other.commit()
    lookups = await describing
    assert {arn: lookup.state for arn, lookup in lookups.items()} == {
        arn: State.FOUND for arn in fleet.task_arns
    }
    assert _count("describe_tasks", "retried") - before == 1
    # The second attempt wrote everything the first had written and lost.
    assert await _scalar(
        engine,
        "SELECT count(*) FROM resource_tags WHERE resource_arn = ANY(:arns)"
        " AND known AND tags->>'owner' = 'web-team'",
        arns=fleet.task_arns,
    ) == len(fleet.task_arns)


def _task_event(arn: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "time": "2026-12-01T10:00:00Z",
        "detail": {
            "taskArn": arn,
            "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/prod",
            "lastStatus": "RUNNING",
            "version": 2,
        },
    }


async def test_found_and_missing_rows_are_locked_in_one_sorted_pass(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """A Describe that finds task b and reports task a missing locks a, then b, as the
    consumer would: it waits for a session holding a, and holds nothing that session
    then needs. (Upserting b, then marking a gone, took them in the opposite order.)"""
    a, b = "arn:aws:ecs:us-east-1:1:task/prod/a", "arn:aws:ecs:us-east-1:1:task/prod/b"
    await Handler(sessionmaker).handle(_messages([_task_event(a), _task_event(b)]))
    described = {"taskArn": b, "lastStatus": "RUNNING", "version": 1, "tags": []}
    retried = _count("describe_tasks", "retried")
    now = datetime.now(UTC)

    async def work(session: AsyncSession) -> tuple[set[str], set[str]]:
        return await writes.write_described(session, "tasks", [described], [a], now)

    async with engine.connect() as other:
        pid = await _begin_other(other)
        await other.execute(text("UPDATE tasks SET seen_at = now() WHERE arn = :arn"), {"arn": a})
        describing = asyncio.create_task(
            retry_on_contention(sessionmaker, work, name="describe_tasks")
        )
        await _wait_until_blocked_by(engine, pid)
        # b is free: the Describe write waits for a and holds nothing yet.
        await other.execute(text("UPDATE tasks SET seen_at = now() WHERE arn = :arn"), {"arn": b})
        await other.commit()
    _, gone = await describing
    assert gone == {a}
    assert _count("describe_tasks", "retried") == retried  # no deadlock to retry
    assert await _scalar(engine, "SELECT count(*) FROM resource_tags WHERE known") == 1


# ---------------------------------------------------------------- through the roles


async def test_reconcile_completes_after_a_deadlock(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet
) -> None:
    retried = _count("describe_clusters", "retried")
    scopes = await proxied_runtime.aws_scopes()
    reconciler = Reconciler(proxied_runtime.sessionmaker, scopes, describer)
    # The first tags a Describe writes (``known``) meet a deadlock.
    async with provoked_deadlocks(proxied_runtime.engine, "resource_tags", "NEW.known", 1):
        report = await reconciler.reconcile_one(fleet.cluster)
    assert report.described["tasks"] == len(fleet.task_arns)
    assert await _scalar(
        proxied_runtime.engine,
        "SELECT count(*) FROM resource_tags WHERE resource_arn = ANY(:arns) AND known",
        arns=fleet.task_arns,
    ) == len(fleet.task_arns)
    # The cluster, described first, met the deadlock; its write ran again.
    assert _count("describe_clusters", "retried") - retried == 1
    assert await _scalar(
        proxied_runtime.engine,
        "SELECT known FROM resource_tags WHERE resource_arn = :arn",
        arn=fleet.cluster_arn,
    )


async def test_a_last_failure_is_logged_and_neither_role_fails(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet
) -> None:
    dropped = telemetry.ENRICH_DROPPED.labels("error")._value.get()
    gave_up = _count("describe_tasks", "gave_up")
    enricher = Enricher(describer)
    handler = Handler(proxied_runtime.sessionmaker, after_commit=enricher.submit)
    scopes = await proxied_runtime.aws_scopes()
    reconciler = Reconciler(proxied_runtime.sessionmaker, scopes, describer)
    # Every tag write of a Describe meets a deadlock.
    always = provoked_deadlocks(proxied_runtime.engine, "resource_tags", "NEW.known", 10**6)
    with structlog.testing.capture_logs() as logs:
        async with always:
            # The consumer commits its batch whatever enrichment meets afterwards.
            result = await handler.handle(_messages([task_event(fleet, fleet.task_arns[0])]))
            assert len(result.done) == 1
            async with asyncio.timeout(10):
                while not any(e["event"] == "enrich_failed" for e in logs):
                    await asyncio.sleep(0.05)
            # The scope's reconcile fails this run, logged, and the poller carries on.
            await run_job(Job("reconcile", 600, reconciler.reconcile_all))
    failed = [e for e in logs if e["event"] == "enrich_failed"]
    assert failed
    assert "provoked by the test" in failed[0]["error"]
    assert any(e["event"] == "scope_failed" and e["job"] == "reconcile" for e in logs)
    assert telemetry.ENRICH_DROPPED.labels("error")._value.get() - dropped >= 1
    assert _count("describe_tasks", "gave_up") - gave_up == 1
    assert (
        await _scalar(
            proxied_runtime.engine,
            "SELECT count(*) FROM tasks WHERE arn = :a",
            a=fleet.task_arns[0],
        )
        == 1
    )
