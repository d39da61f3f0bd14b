"""Order and duplicates do not matter: any delivery ends in the in-order state.

Property tests (hypothesis) against the real database: a task's events (and
several tasks' events interleaved, and a deployment's events) are delivered in
an arbitrary permutation, with duplicates and re-sends under new EventBridge
ids, in batches of arbitrary sizes; the final rows must equal those of in-order
delivery.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.handler import Handler, Message
from service.demo.events import deployment_events, task_lifecycle
from tests.conftest import _TABLES

_TASK_STATE = (
    "SELECT arn, id, cluster_name, service_name, family, revision, launch_type, last_status,"
    " desired_status, stop_code, stopped_reason, version, availability_zone, containers,"
    " created_at, started_at, stopping_at, stopped_at, updated_at, deployment_id"
    " FROM tasks ORDER BY arn"
)
_DEPLOYMENT_STATE = (
    "SELECT id, kind, outcome, reason, rollback_target, last_event_at, started_at,"
    " finished_at, failed_tasks, service_name FROM deployments ORDER BY id"
)

_FIXED = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _reset(engine: AsyncEngine) -> None:
    # DELETE beats TRUNCATE on tables this small, and these tests reset a lot.
    async with engine.begin() as conn:
        for table in _TABLES.split(", "):
            await conn.execute(text(f"DELETE FROM {table}"))


async def _deliver(handler: Handler, events: list[dict[str, Any]], batch_sizes: list[int]) -> None:
    messages = [Message(message_id=str(i), body=json.dumps(e)) for i, e in enumerate(events)]
    sizes = iter(batch_sizes or [len(messages)])
    start = 0
    while start < len(messages):
        size = max(1, next(sizes, len(messages)))
        result = await handler.handle(messages[start : start + size])
        assert not result.retry
        start += size


async def _state(engine: AsyncEngine, query: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(query))).all()]


def _with_duplicates(events: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Add exact re-deliveries and re-sends of the same change under a new id."""
    extra = []
    for event in events:
        roll = rng.random()
        if roll < 0.2:
            extra.append(copy.deepcopy(event))
        elif roll < 0.35:
            resent = copy.deepcopy(event)
            resent["id"] = str(uuid.UUID(int=rng.getrandbits(128)))
            extra.append(resent)
    return events + extra


async def _in_order_vs_shuffled(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    events: list[dict[str, Any]],
    seed: int,
    batch_sizes: list[int],
    query: str,
) -> None:
    handler = Handler(sessionmaker)
    await _reset(engine)
    # The oracle: one event per transaction, in order ([1] alone would mean "the
    # first event alone, then all the rest in one batch").
    await _deliver(handler, events, [1] * len(events))
    expected = await _state(engine, query)
    async with engine.connect() as conn:
        raw_in_order = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
    rng = random.Random(seed)
    shuffled = _with_duplicates(events, rng)
    rng.shuffle(shuffled)
    await _reset(engine)
    await _deliver(handler, shuffled, batch_sizes)
    assert await _state(engine, query) == expected
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
    # Nothing lost, and an exact re-delivery (same id) never stored twice.
    assert raw_in_order is not None
    assert raw is not None
    assert raw_in_order <= raw <= len({e["id"] for e in shuffled})


@_FIXED
@given(
    seed=st.integers(0, 2**32),
    batch_sizes=st.lists(st.integers(1, 12), max_size=8),
    fail=st.booleans(),
)
async def test_one_task_any_order(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    seed: int,
    batch_sizes: list[int],
    fail: bool,
) -> None:
    events = task_lifecycle(random.Random(seed), fail=fail)
    await _in_order_vs_shuffled(engine, sessionmaker, events, seed, batch_sizes, _TASK_STATE)


@_FIXED
@given(seed=st.integers(0, 2**32), batch_sizes=st.lists(st.integers(1, 25), max_size=8))
async def test_interleaved_tasks_any_order(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    seed: int,
    batch_sizes: list[int],
) -> None:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(4):
        events += task_lifecycle(rng, service=f"svc{n % 2}", fail=n == 3, stop=n != 1)
    await _in_order_vs_shuffled(engine, sessionmaker, events, seed, batch_sizes, _TASK_STATE)


@_FIXED
@given(
    seed=st.integers(0, 2**32),
    batch_sizes=st.lists(st.integers(1, 6), max_size=6),
    outcome=st.sampled_from(["completed", "failed", "rollback"]),
)
async def test_deployment_any_order(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    seed: int,
    batch_sizes: list[int],
    outcome: str,
) -> None:
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    events = deployment_events(
        cluster="prod",
        service="web",
        deployment_id="ecs-svc/2",
        start=start,
        outcome="failed" if outcome != "completed" else "completed",
        rollback_to="ecs-svc/1" if outcome == "rollback" else None,
    )
    rng = random.Random(seed)
    events += task_lifecycle(rng, deployment_id="ecs-svc/2", fail=True, start=start)
    await _in_order_vs_shuffled(engine, sessionmaker, events, seed, batch_sizes, _DEPLOYMENT_STATE)
