"""The outbox dispatcher: claims pending rows, hands them to senders, records results.

One loop per process (``ecswatch run --roles dispatcher``); several processes may
share one database:

* **Claim** (a short transaction): ``SELECT … FOR UPDATE SKIP LOCKED`` picks due
  pending rows of the kinds that have a sender, and the same statement leases
  them (``next_attempt_at = now() + lease``) before committing, so no other
  dispatcher sees them while they are in flight, and a dispatcher that dies
  mid-send leaves them to be picked up again once the lease ends. Rows of a kind
  with no registered sender are never claimed: they stay pending.
* **Send** (no transaction open): each kind's rows go to its :class:`Sender`,
  the kinds concurrently. Up to ``max_batches`` batches are in flight at once: the
  loop claims the next batch as soon as one is sent off, so a slow receiver holds
  up only the batch it is in (and a sender bounds each delivery well inside the
  lease). The webhook sender also caps what is in flight per subscription (and
  defers the rest), so one hanging receiver holds at most that many batches: the
  others keep flowing unless ``max_batches`` / cap receivers hang at once.
* **Record** (a second short transaction): delivered, retried at the time the
  pure schedule in :mod:`service.outbox.retry` gives (honouring a receiver's
  ``retry_after``), or dead once the retry budget is spent. A sender that also
  implements :class:`AttemptRecorder` writes its own log (the webhook delivery
  log) in this same transaction. A row the sender *deferred* (it did not try it,
  e.g. its subscription had too many deliveries in flight) is only made due again
  after the delay it named; no attempt is counted.

It wakes on ``LISTEN ecswatch_outbox`` (a trigger on ``outbox`` notifies from
every inserting transaction, at its commit), at the next due retry, and at
least every ``poll_interval_s`` as the fallback. On stop it lets the batches in
flight finish for up to ``grace_s`` seconds, then cancels them and releases their
rows (due again at once) so that another dispatcher sends them without waiting
for the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.backoff import Backoff
from service.logging import get_logger
from service.outbox.models import OutboxKind, OutboxStatus
from service.outbox.retry import RetryPolicy, next_attempt
from service.outbox.sender import ClaimedRow, Sender, SendResult, SendStatus

log = get_logger(__name__)

#: The channel the ``outbox_notify`` trigger (migration 0003) notifies.
CHANNEL = "ecswatch_outbox"


@dataclass(frozen=True, slots=True)
class Recorded:
    """One attempt as the dispatcher recorded it, for a sender's own log."""

    row: ClaimedRow
    result: SendResult
    attempt: int  # 1 for the first attempt of the row
    status: OutboxStatus  # the row's status after this attempt
    next_attempt_at: datetime | None  # when it is tried again; None when it is not


@runtime_checkable
class AttemptRecorder(Protocol):
    """A sender that keeps its own log of attempts (optional).

    ``record`` runs inside the dispatcher's recording transaction (it only
    flushes), so the log and the outbox row never disagree.
    """

    async def record(self, session: AsyncSession, attempts: Sequence[Recorded]) -> None: ...


def build_registry(senders: Iterable[Sender]) -> dict[OutboxKind, Sender]:
    """``{kind: sender}`` from senders that each name their kinds; one sender per kind."""
    registry: dict[OutboxKind, Sender] = {}
    for sender in senders:
        for kind in sender.kinds:
            if kind in registry:
                raise ValueError(f"two senders for outbox kind {kind.value!r}")
            registry[kind] = sender
    return registry


_CLAIM = text(
    "UPDATE outbox SET next_attempt_at = clock_timestamp() + make_interval(secs => :lease)"
    " WHERE id IN ("
    "  SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()"
    "  AND kind = ANY(:kinds) ORDER BY next_attempt_at, id LIMIT :limit"
    "  FOR UPDATE SKIP LOCKED)"
    " RETURNING id, kind, dedupe_key, payload, attempts, created_at"
)
_NEXT_DUE = text(
    "SELECT min(next_attempt_at) FROM outbox WHERE status = 'pending' AND kind = ANY(:kinds)"
)
_DELIVERED = text(
    "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = :now,"
    " last_error = NULL WHERE id = :id AND status = 'pending'"
)
_RETRY = text(
    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = :at, last_error = :error"
    " WHERE id = :id AND status = 'pending'"
)
_DEAD = text(
    "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = :error"
    " WHERE id = :id AND status = 'pending'"
)
_DEFER = text("UPDATE outbox SET next_attempt_at = :at WHERE id = :id AND status = 'pending'")
_RELEASE = text(
    "UPDATE outbox SET next_attempt_at = clock_timestamp()"
    " WHERE id = ANY(:ids) AND status = 'pending'"
)
_GAUGES = text(
    "SELECT kind, status, count(*), min(created_at) FROM outbox"
    " WHERE status IN ('pending', 'dead') GROUP BY kind, status"
)


class Dispatcher:
    """Drains the outbox to the registered senders until stopped."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        senders: Mapping[OutboxKind, Sender],
        *,
        policy: RetryPolicy | None = None,
        batch_size: int = 50,
        poll_interval_s: float = 5.0,
        lease_s: float = 60.0,
        grace_s: float = 10.0,
        metrics_interval_s: float = 5.0,
        max_batches: int = 16,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._engine = engine
        self._sessionmaker = sessionmaker
        self._senders = dict(senders)
        self._kinds = sorted(k.value for k in self._senders)
        self.policy = policy or RetryPolicy()
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._grace_s = grace_s
        self._metrics_interval_s = metrics_interval_s
        self._jitter = jitter
        self._max_batches = max(1, max_batches)
        self._in_flight: set[asyncio.Task[int]] = set()
        self._wake = asyncio.Event()
        self._last_metrics = 0.0
        #: Set once the loop listens (tests and readiness wait on it).
        self.listening = asyncio.Event()

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then finish or release the batches in flight."""
        listener = asyncio.create_task(self._listen(stop))
        # Outage retries: 0.2 s doubling up to the poll interval (the one backoff).
        outage = Backoff(initial=0.2, cap=self._poll_interval_s, jitter=0.0)
        try:
            while not stop.is_set():
                if len(self._in_flight) >= self._max_batches:
                    await self._wait_for_room(stop)
                    continue
                try:
                    rows = await self._claim() if self._kinds else []
                    await self._update_gauges()
                    if not rows:
                        await self._sleep(stop)
                except Exception as exc:
                    # The database is down (or refusing us): wait and try again; the
                    # role must outlive an outage.
                    delay = outage.next_delay()
                    log.warning(
                        "dispatcher_batch_failed",
                        error=f"{type(exc).__name__}: {exc}"[:300],
                        retry_in_s=round(delay, 2),
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                outage.reset()
                if rows:
                    self._start_batch(rows)  # and claim again: more may be due at once
        finally:
            await self._finish_or_release()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._update_gauges(force=True)

    def _start_batch(self, rows: list[ClaimedRow]) -> None:
        """Send and record ``rows`` in a task of their own."""
        task = asyncio.create_task(self._send_and_record(rows))
        self._in_flight.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[int]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # room for another batch; retries it recorded may be due soon
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Rows claimed but not recorded are sent again when their lease ends,
            # with the same key.
            log.warning("dispatcher_batch_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({stopping, *self._in_flight}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _finish_or_release(self) -> None:
        """Stopping: wait up to the grace period for the batches in flight, then
        cancel the rest (each releases its rows)."""
        batches = set(self._in_flight)
        if not batches:
            return
        _, pending = await asyncio.wait(batches, timeout=self._grace_s)
        for batch in pending:
            batch.cancel()
        await asyncio.gather(*batches, return_exceptions=True)

    async def _sleep(self, stop: asyncio.Event) -> None:
        timeout = self._poll_interval_s
        # Cleared before looking: a wake-up that comes while we look is kept.
        self._wake.clear()
        async with self._sessionmaker() as session:
            due = (await session.execute(_NEXT_DUE, {"kinds": self._kinds})).scalar()
        if due is not None:
            until_due = (due - datetime.now(UTC)).total_seconds()
            timeout = max(0.0, min(timeout, until_due))
        if timeout <= 0:
            return
        waiters = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a connection that LISTENs on :data:`CHANNEL`; reconnect when it drops."""

        def notified(*_: object) -> None:
            self._wake.set()

        while not stop.is_set():
            try:
                async with self._engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    lost = asyncio.Event()
                    driver.add_termination_listener(lambda *_, lost=lost: lost.set())
                    await driver.add_listener(CHANNEL, notified)
                    self.listening.set()
                    # Rows written while no one listened are due already.
                    self._wake.set()
                    try:
                        await lost.wait()
                    finally:
                        self.listening.clear()
                        if not driver.is_closed():
                            with contextlib.suppress(Exception):
                                await driver.remove_listener(CHANNEL, notified)
                log.warning("dispatcher_listen_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatcher_listen_failed", error=type(exc).__name__)
            # The poll keeps rows moving meanwhile.
            await asyncio.sleep(self._poll_interval_s)

    # ---------------------------------------------------------------- one batch

    async def dispatch_once(self) -> int:
        """Claim one batch, send it, record the results; the number of rows handled."""
        if not self._kinds:
            return 0
        rows = await self._claim()
        if not rows:
            return 0
        return await self._send_and_record(rows)

    async def _send_and_record(self, rows: list[ClaimedRow]) -> int:
        try:
            results = await self._send(rows)
        except asyncio.CancelledError:
            await asyncio.shield(self._release([row.id for row in rows]))
            raise
        await self._record(rows, results)
        return len(rows)

    async def _claim(self) -> list[ClaimedRow]:
        params = {"lease": self._lease_s, "kinds": self._kinds, "limit": self._batch_size}
        async with self._sessionmaker() as session, session.begin():
            found = (await session.execute(_CLAIM, params)).mappings().all()
        rows = [
            ClaimedRow(
                id=row["id"],
                kind=OutboxKind(row["kind"]),
                dedupe_key=row["dedupe_key"],
                payload=row["payload"],
                attempts=row["attempts"],
                created_at=row["created_at"],
            )
            for row in found
        ]
        rows.sort(key=lambda row: row.id)
        return rows

    async def _send(self, rows: list[ClaimedRow]) -> dict[int, SendResult]:
        by_kind: dict[OutboxKind, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        kinds = list(by_kind)
        answers = await asyncio.gather(
            *(self._send_kind(kind, by_kind[kind]) for kind in kinds), return_exceptions=False
        )
        results: dict[int, SendResult] = {}
        for answer in answers:
            results.update(answer)
        return results

    async def _send_kind(self, kind: OutboxKind, rows: list[ClaimedRow]) -> dict[int, SendResult]:
        sender = self._senders[kind]
        ids = {row.id for row in rows}
        try:
            answered = await sender.send(rows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A sender bug must not kill the role nor lose rows: retry them all.
            log.error("sender_failed", kind=kind.value, error=f"{type(exc).__name__}: {exc}")
            error = f"sender failed: {type(exc).__name__}: {exc}"[:500]
            return {i: SendResult(i, SendStatus.RETRY, error) for i in ids}
        results = {r.row_id: r for r in answered if r.row_id in ids}
        for missing in ids - set(results):
            results[missing] = SendResult(missing, SendStatus.RETRY, "no result from the sender")
        return results

    async def _record(self, rows: list[ClaimedRow], results: dict[int, SendResult]) -> None:
        now = datetime.now(UTC)
        recorded: dict[OutboxKind, list[Recorded]] = defaultdict(list)
        async with self._sessionmaker() as session, session.begin():
            for row in rows:
                result = results[row.id]
                attempt = row.attempts + 1
                status, at = OutboxStatus.PENDING, None
                if result.status is SendStatus.DEFERRED:
                    # Not tried: due again after the sender's delay, no attempt counted.
                    wait = timedelta(seconds=max(0.0, result.retry_after or 0.0))
                    await session.execute(_DEFER, {"id": row.id, "at": now + wait})
                    telemetry.DISPATCH_RESULTS.labels(row.kind.value, "deferred").inc()
                    continue
                if result.status is SendStatus.DELIVERED:
                    status = OutboxStatus.DELIVERED
                    await session.execute(_DELIVERED, {"id": row.id, "now": now})
                else:
                    if result.status is SendStatus.RETRY:
                        at = next_attempt(
                            attempts=attempt,
                            created_at=row.created_at,
                            now=now,
                            policy=self.policy,
                            jitter=self._jitter(),
                            retry_after=result.retry_after,
                        ).next_attempt_at
                    error = (result.error or result.status.value)[:2000]
                    if at is None:
                        status = OutboxStatus.DEAD
                        await session.execute(_DEAD, {"id": row.id, "error": error})
                    else:
                        await session.execute(_RETRY, {"id": row.id, "at": at, "error": error})
                label = "retry" if status is OutboxStatus.PENDING else status.value
                telemetry.DISPATCH_RESULTS.labels(row.kind.value, label).inc()
                recorded[row.kind].append(Recorded(row, result, attempt, status, at))
            for kind, attempts in recorded.items():
                sender = self._senders[kind]
                if isinstance(sender, AttemptRecorder):
                    await sender.record(session, attempts)
        dead = sum(1 for a in recorded.values() for r in a if r.status is OutboxStatus.DEAD)
        tried = sum(len(a) for a in recorded.values())
        log.info("outbox_dispatched", rows=tried, dead=dead, deferred=len(rows) - tried)

    async def _release(self, ids: list[int]) -> None:
        """Make claimed rows due again at once (their lease was for a send now abandoned)."""
        try:
            async with self._sessionmaker() as session, session.begin():
                await session.execute(_RELEASE, {"ids": ids})
                await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            log.info("outbox_released", rows=len(ids))
        except Exception as exc:
            # The lease ends by itself: the rows are delivered later, not lost.
            log.warning("outbox_release_failed", rows=len(ids), error=type(exc).__name__)

    async def _update_gauges(self, *, force: bool = False) -> None:
        loop_now = asyncio.get_running_loop().time()
        if not force and loop_now - self._last_metrics < self._metrics_interval_s:
            return
        self._last_metrics = loop_now
        try:
            async with self._sessionmaker() as session:
                found = (await session.execute(_GAUGES)).all()
        except Exception as exc:
            log.warning("outbox_gauges_failed", error=type(exc).__name__)
            return
        depth = {kind.value: 0 for kind in OutboxKind}
        dead = {kind.value: 0 for kind in OutboxKind}
        oldest: datetime | None = None
        for kind, status, count, first in found:
            if status == OutboxStatus.PENDING.value:
                depth[kind] = depth.get(kind, 0) + count
                oldest = first if oldest is None or first < oldest else oldest
            else:
                dead[kind] = dead.get(kind, 0) + count
        for kind, count in depth.items():
            telemetry.OUTBOX_DEPTH.labels(kind).set(count)
        for kind, count in dead.items():
            telemetry.OUTBOX_DEAD.labels(kind).set(count)
        age = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        telemetry.OUTBOX_OLDEST_AGE.set(age)
