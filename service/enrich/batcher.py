"""The coalescing batcher: callers await a future per ARN, one task makes the calls.

Requests are grouped by (kind, cluster). A group is sent as soon as it holds the
API's batch limit, or when its oldest request has waited ``window_s``; one
Describe call then resolves every future of the batch. The same ARN asked twice
while pending shares one slot. Callers never see the batching.

The number of pending requests is bounded: :meth:`CoalescingBatcher.submit`
refuses (returns ``None``) rather than grow without limit, and the caller counts
the drop (reconciliation fills it in later).

At most ``concurrency`` calls are in flight per slot: ``slot_of(key)`` names a
group's slot (the describer's is the group's scope, so a scope whose calls wait
out a throttling backoff holds only its own slots, never another scope's turn);
without it every group shares one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.logging import get_logger

log = get_logger(__name__)

#: ``fetch(kind, cluster, arns)`` -> a result per ARN (absent keys resolve to None).
Fetch = Callable[[str, str, list[str]], Awaitable[Mapping[str, Any]]]
#: ``slot_of((kind, group))`` -> the key of the slots the group's calls take.
SlotOf = Callable[[tuple[str, str]], Hashable]


def _one_slot(key: tuple[str, str]) -> Hashable:
    return None


@dataclass
class _Slots:
    """The call slots of one slot key, and how many calls hold or wait for them."""

    free: asyncio.Semaphore
    users: int = 0


@dataclass
class _Group:
    first_at: float
    waiting: dict[str, list[asyncio.Future[Any]]] = field(default_factory=dict)


class CoalescingBatcher:
    """Groups pending requests by (kind, cluster) into calls of at most ``limits[kind]``."""

    def __init__(
        self,
        fetch: Fetch,
        limits: Mapping[str, int],
        *,
        window_s: float = 0.05,
        max_pending: int = 10_000,
        concurrency: int = 4,
        slot_of: SlotOf = _one_slot,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._limits = dict(limits)
        self._window = window_s
        self._max_pending = max_pending
        self._clock = clock
        self._groups: dict[tuple[str, str], _Group] = {}
        self._pending = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set whenever pending requests leave for a call
        self._concurrency = max(1, concurrency)
        self._slot_of = slot_of
        # Only keys with a call holding or waiting: bounded by the calls, not the keys seen.
        self._slots: dict[Hashable, _Slots] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._pending

    async def __aenter__(self) -> CoalescingBatcher:
        self._runner = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: cancel what is pending (callers get CancelledError), wait for calls made."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for group in self._groups.values():
            for futures in group.waiting.values():
                for future in futures:
                    future.cancel()
        self._groups.clear()
        self._pending = 0
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

    def submit(self, kind: str, cluster: str, arn: str) -> asyncio.Future[Any] | None:
        """A future of ``arn``'s result, or None when too many requests are pending."""
        if self._runner is None:
            raise RuntimeError("the batcher is not running (use it as an async context)")
        key = (kind, cluster)
        group = self._groups.get(key)
        if group is not None and arn in group.waiting:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            group.waiting[arn].append(future)
            return future
        if self._pending >= self._max_pending:
            return None
        if group is None:
            group = self._groups[key] = _Group(first_at=self._clock())
        future = asyncio.get_running_loop().create_future()
        group.waiting[arn] = [future]
        self._pending += 1
        self._wake.set()
        return future

    async def get_many(self, kind: str, cluster: str, arns: Sequence[str]) -> dict[str, Any]:
        """Every ARN's result (waiting for room when the batcher is full)."""
        futures: dict[str, asyncio.Future[Any]] = {}
        for arn in dict.fromkeys(arns):
            while (future := self.submit(kind, cluster, arn)) is None:
                self._room.clear()
                await self._room.wait()
            futures[arn] = future
        await asyncio.gather(*futures.values(), return_exceptions=True)
        results: dict[str, Any] = {}
        for arn, future in futures.items():
            results[arn] = future.result()  # re-raises the call's error
        return results

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            next_due: float | None = None
            for key in list(self._groups):
                group = self._groups[key]
                limit = self._limits.get(key[0], 1)
                while len(group.waiting) >= limit:
                    self._send(key, group, limit)
                if not group.waiting:
                    del self._groups[key]
                    continue
                due = group.first_at + self._window
                if due <= now:
                    self._send(key, group, limit)
                    del self._groups[key]
                elif next_due is None or due < next_due:
                    next_due = due
            timeout = None if next_due is None else max(0.0, next_due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _send(self, key: tuple[str, str], group: _Group, limit: int) -> None:
        arns = list(group.waiting)[:limit]
        batch = {arn: group.waiting.pop(arn) for arn in arns}
        group.first_at = self._clock()
        self._pending -= len(batch)
        self._room.set()
        task = asyncio.create_task(self._call(key, batch))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(
        self, key: tuple[str, str], batch: dict[str, list[asyncio.Future[Any]]]
    ) -> None:
        kind, cluster = key
        slot = self._slot_of(key)
        slots = self._slots.get(slot)
        if slots is None:
            slots = self._slots[slot] = _Slots(asyncio.Semaphore(self._concurrency))
        slots.users += 1
        try:
            async with slots.free:
                results = await self._fetch(kind, cluster, list(batch))
        except asyncio.CancelledError:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        finally:
            slots.users -= 1
            if not slots.users:
                del self._slots[slot]
        for arn, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(results.get(arn))
