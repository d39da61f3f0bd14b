"""The outbox retry schedule: exponential backoff with jitter, then dead. Pure.

A row is retried after ``base * 2**attempts`` seconds (capped at ``cap``), scaled
by a jitter factor in [0.5, 1.0) ("equal jitter": never sooner than half the
nominal delay, so a burst of failures spreads out without retrying at once).
A receiver's own wish (Retry-After, X-RateLimit-Reset) is honoured when it asks
for longer. The budget is time, not a count: a row is dead only once an attempt
fails at least ``budget`` after the row was written, so every row is tried for
at least that long. With the defaults (1 s doubling to a 10 min cap, one hour)
that is about 15 attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from service.aws.backoff import backoff_delay as shared_backoff_delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff parameters; the defaults are production's, tests pass shorter ones."""

    base_s: float = 1.0
    cap_s: float = 600.0
    budget_s: float = 3600.0
    # A Retry-After beyond this is clamped: a receiver cannot park a row for days.
    max_retry_after_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``next_attempt_at`` when to try again, or None when the row is dead."""

    next_attempt_at: datetime | None

    @property
    def dead(self) -> bool:
        return self.next_attempt_at is None


def backoff_delay(attempts: int, policy: RetryPolicy, jitter: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 = the first).

    ``jitter`` is a number in [0, 1) (the caller's random draw).
    """
    # The growth and cap are the one backoff's; the jitter is "equal jitter".
    nominal = shared_backoff_delay(
        max(0, attempts - 1), initial=policy.base_s, cap=policy.cap_s, jitter=0.0
    )
    return nominal * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def next_attempt(
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    jitter: float,
    retry_after: float | None = None,
) -> RetryDecision:
    """When to try a row again after its ``attempts``-th failure, or dead.

    ``attempts`` counts the attempt that just failed.
    """
    if now - created_at >= timedelta(seconds=policy.budget_s):
        return RetryDecision(None)
    delay = backoff_delay(attempts, policy, jitter)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, policy.max_retry_after_s)
    return RetryDecision(now + timedelta(seconds=delay))
