"""The one jittered exponential backoff of ecswatch.

Every retry loop (AWS throttling, the consumer's receive, its database probe and
its wait for the queue at start-up) takes its delays from :class:`Backoff`, so
the policy (initial delay, growth, cap, jitter) lives in one place. The schedule
itself is the pure :func:`backoff_delay`; the class only keeps the attempt count.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    cap: float,
    factor: float = 2.0,
    jitter: float = 1.0,
    rand: float = 0.0,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based).

    The base delay grows as ``initial * factor**attempt`` up to ``cap``; the jitter
    stretches it by up to ``jitter`` times itself (``rand`` in [0, 1)), so waiters
    that failed together do not retry together.
    """
    base = min(cap, initial * factor ** min(attempt, 64))
    return base * (1.0 + jitter * rand)


@dataclass
class Backoff:
    """A retry schedule in progress: :meth:`next_delay` grows it, :meth:`reset` restarts it."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 1.0
    rand: Callable[[], float] = field(default=random.random, repr=False)
    attempt: int = 0

    def next_delay(self) -> float:
        delay = backoff_delay(
            self.attempt,
            initial=self.initial,
            cap=self.cap,
            factor=self.factor,
            jitter=self.jitter,
            rand=self.rand() if self.jitter else 0.0,
        )
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self, stop: asyncio.Event | None = None) -> float:
        """Wait the next delay (returning early if ``stop`` is set); return the delay."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return delay
