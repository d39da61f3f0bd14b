"""The one backoff schedule and the token buckets, as plain tables (no AWS, no sleeping
beyond a few milliseconds)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from service.aws.backoff import Backoff, backoff_delay
from service.aws.limiter import RATES, Category, Limiter, Rate, TokenBucket, refill, wait_for_token
from service.consumer import loop

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("attempt", "jitter", "rand", "expected"),
    [
        (0, 0.0, 0.9, 0.5),
        (1, 0.0, 0.9, 1.0),
        (5, 0.0, 0.0, 16.0),
        (6, 0.0, 0.0, 30.0),  # capped
        (60, 0.0, 0.0, 30.0),
        (0, 1.0, 0.5, 0.75),
        (6, 1.0, 0.999, 30.0 * 1.999),
        (2, 0.5, 1.0, 3.0),
    ],
)
def test_backoff_delay_table(attempt: int, jitter: float, rand: float, expected: float) -> None:
    delay = backoff_delay(attempt, initial=0.5, cap=30.0, jitter=jitter, rand=rand)
    assert delay == pytest.approx(expected)


def test_backoff_grows_resets_and_stays_within_jitter() -> None:
    values = iter([0.0, 1.0, 0.5, 0.0])
    b = Backoff(initial=1.0, cap=4.0, jitter=1.0, rand=lambda: next(values))
    assert [b.next_delay(), b.next_delay(), b.next_delay()] == [1.0, 4.0, 6.0]
    b.reset()
    assert b.next_delay() == 1.0


def test_consumer_schedules_keep_their_old_shape() -> None:
    """What the consumer's hand-rolled loops did before moving onto Backoff."""
    wait = loop.QUEUE_WAIT_BACKOFF()
    assert [wait.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    receive = loop.RECEIVE_BACKOFF(rand=lambda: 1.0)
    assert [receive.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]
    probe = loop.DATABASE_PROBE_BACKOFF(rand=lambda: 1.0)
    assert [probe.next_delay() for _ in range(7)] == [0.75, 1.5, 3, 6, 12, 22.5, 22.5]
    delete = loop.DELETE_BACKOFF()
    assert [delete.next_delay() for _ in range(3)] == [0.2, 0.4, 0.6]


def test_no_other_backoff_loop_in_the_code_base() -> None:
    """Every sleep whose length grows with a retry count lives in service/aws/backoff.py."""
    offenders = []
    for path in (REPO / "service").rglob("*.py"):
        if path.name == "backoff.py" or "demo" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.AugAssign | ast.Assign):
                text = ast.unparse(node)
                if ("backoff" in text or "delay" in text) and "* 2" in text:
                    offenders.append(f"{path.relative_to(REPO)}: {text}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "random.random":
                offenders.append(f"{path.relative_to(REPO)}: {ast.unparse(node)}")
    assert offenders == []


def test_ecs_rates_are_the_documented_ones() -> None:
    assert RATES[Category.ECS_CLUSTER_READ] == Rate(50, 20)
    assert RATES[Category.ECS_SERVICE_READ] == Rate(100, 20)
    assert RATES[Category.ECS_CLUSTER_RESOURCE_READ] == Rate(100, 20)
    assert RATES[Category.ECS_TASK_DEFINITION_READ] == Rate(50, 20)


@pytest.mark.parametrize(
    ("tokens", "elapsed", "after"),
    [(0.0, 0.5, 10.0), (0.0, 10.0, 50.0), (49.0, 0.01, 49.2), (50.0, 1.0, 50.0)],
)
def test_refill_table(tokens: float, elapsed: float, after: float) -> None:
    assert refill(tokens, Rate(50, 20), elapsed) == pytest.approx(after)


def test_wait_for_token_table() -> None:
    assert wait_for_token(1.0, Rate(50, 20)) == 0.0
    assert wait_for_token(0.0, Rate(50, 20)) == pytest.approx(0.05)
    assert wait_for_token(0.5, Rate(10, 10)) == pytest.approx(0.05)


async def test_bucket_spends_burst_then_paces() -> None:
    now = [0.0]
    bucket = TokenBucket(Rate(burst=3, per_second=1000), clock=lambda: now[0])
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    # Empty: the next token takes 1 ms of (real) sleep; the fake clock must move.
    task = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.01)
    assert not task.done()
    now[0] += 0.002
    async with asyncio.timeout(2):
        assert await task > 0


async def test_pause_stops_every_caller_of_the_category() -> None:
    limiter = Limiter(rates={c: Rate(100, 1000) for c in Category})
    bucket = limiter.bucket("self", "us-east-1", Category.ECS_CLUSTER_RESOURCE_READ)
    other = limiter.bucket("self", "us-east-1", Category.ECS_SERVICE_READ)
    assert limiter.bucket("self", "us-east-1", Category.ECS_CLUSTER_RESOURCE_READ) is bucket
    assert limiter.bucket("other", "us-east-1", Category.ECS_CLUSTER_RESOURCE_READ) is not bucket
    bucket.pause(0.2)
    loop_ = asyncio.get_running_loop()
    start = loop_.time()
    await bucket.acquire()
    assert loop_.time() - start >= 0.15
    start = loop_.time()
    await other.acquire()  # another category is not paused
    assert loop_.time() - start < 0.1
