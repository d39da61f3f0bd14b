"""The retry schedule as a table: backoff, jitter bounds, Retry-After, the budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.outbox.retry import RetryPolicy, backoff_delay, next_attempt

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(base_s=1.0, cap_s=600.0, budget_s=3600.0)


@pytest.mark.parametrize(
    ("attempts", "jitter", "expected"),
    [
        (1, 0.0, 0.5),
        (1, 0.999, 0.9995),
        (2, 0.0, 1.0),
        (3, 0.5, 3.0),
        (10, 0.0, 256.0),
        (11, 0.0, 300.0),  # 1024 capped at 600, halved by the lowest jitter
        (200, 1.0, 600.0),  # no overflow far past the cap
    ],
)
def test_backoff_delay(attempts: int, jitter: float, expected: float) -> None:
    assert backoff_delay(attempts, POLICY, jitter) == pytest.approx(expected)


@given(st.integers(min_value=1, max_value=500), st.floats(min_value=0, max_value=1))
def test_delay_within_half_and_full_of_nominal(attempts: int, jitter: float) -> None:
    nominal = min(600.0, 2.0 ** min(attempts - 1, 64))
    assert nominal / 2 <= backoff_delay(attempts, POLICY, jitter) <= nominal


def test_retry_after_wins_when_longer_and_is_clamped() -> None:
    got = next_attempt(attempts=1, created_at=T0, now=T0, policy=POLICY, jitter=0.0, retry_after=30)
    assert got.next_attempt_at == T0 + timedelta(seconds=30)
    shorter = next_attempt(
        attempts=5, created_at=T0, now=T0, policy=POLICY, jitter=0.0, retry_after=1
    )
    assert shorter.next_attempt_at == T0 + timedelta(seconds=8)
    huge = next_attempt(
        attempts=1, created_at=T0, now=T0, policy=POLICY, jitter=0.0, retry_after=10**9
    )
    assert huge.next_attempt_at == T0 + timedelta(seconds=3600)


def test_dead_only_after_the_budget() -> None:
    just_before = T0 + timedelta(seconds=3599)
    alive = next_attempt(attempts=14, created_at=T0, now=just_before, policy=POLICY, jitter=0.5)
    assert not alive.dead
    at_budget = T0 + timedelta(seconds=3600)
    assert next_attempt(attempts=15, created_at=T0, now=at_budget, policy=POLICY, jitter=0.5).dead


@given(st.lists(st.floats(min_value=0, max_value=0.9999), min_size=40, max_size=40))
def test_a_failing_row_is_tried_for_at_least_the_budget(jitters: list[float]) -> None:
    """Follow the schedule attempt by attempt: dead only after an hour, in ~15 tries."""
    now, attempts = T0, 0
    while True:
        attempts += 1
        decision = next_attempt(
            attempts=attempts, created_at=T0, now=now, policy=POLICY, jitter=jitters[attempts]
        )
        if decision.dead:
            break
        assert decision.next_attempt_at is not None
        now = decision.next_attempt_at
    assert now - T0 >= timedelta(seconds=3600)
    assert 10 <= attempts <= 25
