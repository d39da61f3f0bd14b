"""The SQS side of the consumer: receive, backpressure, heartbeat, delete, shutdown.

Shape of the pipeline::

    receivers (N long polls) ──> batches queue ──> workers (coalesce, handle, delete)

* Receivers stop asking for messages while ``max_in_flight`` messages are being
  worked on (backpressure) and while the database is known to be down (so an
  outage does not burn receive counts and push good messages to the DLQ).
* Workers merge whatever batches are waiting (up to ``_MERGE_LIMIT`` messages)
  into one transaction, then delete the committed messages in batches of 10.
* A heartbeat extends the visibility of messages still being worked on.
* On stop: receivers stop, workers finish what they hold within the grace
  period; anything still unfinished is released (visibility 0) for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import text

from service import telemetry
from service.alerts.raising import rules_from_settings
from service.aws.backoff import Backoff
from service.consumer.handler import Handler, Message
from service.logging import get_logger
from service.runtime import Runtime

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
    )

log = get_logger(__name__)

_MERGE_LIMIT = 100
_WAIT_SECONDS = 20

# The consumer's retry schedules, all on the one backoff (service.aws.backoff).
# Start-up queue wait: 0.5 s doubling to 30 s, exact (it also wakes on stop).
QUEUE_WAIT_BACKOFF = partial(Backoff, initial=0.5, cap=30.0, jitter=0.0)
# Failed receive: 0.5 s doubling to 30 s, stretched by up to 100% jitter.
RECEIVE_BACKOFF = partial(Backoff, initial=0.5, cap=30.0, jitter=1.0)
# Database probe while it is down: 0.5 s doubling to 15 s, up to 50% jitter.
DATABASE_PROBE_BACKOFF = partial(Backoff, initial=0.5, cap=15.0, jitter=0.5)
# A failed DeleteMessageBatch: 0.2, 0.4, 0.6 s (then SQS redelivers; writes are idempotent).
DELETE_BACKOFF = partial(Backoff, initial=0.2, cap=0.6, factor=2.0, jitter=0.0)


def message_of(raw: MessageTypeDef) -> Message:
    attributes = raw.get("Attributes", {})
    return Message(
        message_id=raw.get("MessageId", ""),
        body=raw.get("Body", ""),
        receipt_handle=raw.get("ReceiptHandle"),
        sent_at=_sent_at(attributes.get("SentTimestamp")),
        receive_count=_count_attribute(attributes.get("ApproximateReceiveCount")),
    )


# System attributes only feed telemetry: an odd value (no real SQS sends one) must
# not fail the receive it came in, nine neighbours included.
def _sent_at(value: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None
    except (ValueError, OverflowError, OSError):
        return None


def _count_attribute(value: str | None) -> int:
    try:
        return int(value) if value else 1
    except ValueError:
        return 1


class Consumer:
    """Long-polls one SQS queue and feeds the handler until told to stop."""

    def __init__(
        self,
        runtime: Runtime,
        queue_url: str,
        *,
        handler: Handler | None = None,
        receive_concurrency: int | None = None,
        max_in_flight: int | None = None,
        workers: int = 2,
        wait_seconds: int = _WAIT_SECONDS,
        grace_s: float | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        settings = runtime.settings
        self._on_started = on_started
        self._runtime = runtime
        self._queue_url = queue_url
        self._handler = handler or Handler(
            runtime.sessionmaker,
            codedeploy_groups=settings.codedeploy_groups,
            alert_rules=rules_from_settings(settings),
            datadog=settings.datadog_enabled,
        )
        self._receivers = receive_concurrency or settings.receive_concurrency
        self._max_in_flight = max_in_flight or settings.max_in_flight
        self._workers = workers
        self._wait_seconds = wait_seconds
        self._grace = grace_s if grace_s is not None else settings.shutdown_grace_s
        self._in_flight = 0
        self._capacity = asyncio.Condition()
        self._batches: asyncio.Queue[list[Message]] = asyncio.Queue()
        self._db_ok = asyncio.Event()
        self._db_ok.set()
        self._visibility = 30
        self._working: dict[str, Message] = {}
        self.processed = 0
        self.peak_in_flight = 0  # observed high-water mark, for tests and /metrics

    async def run(self, stop: asyncio.Event) -> None:
        sqs = await self._runtime.sqs()
        visibility = await self._wait_for_queue(sqs, stop)
        if visibility is None:  # stopped before the queue ever answered
            log.info("consumer_stopped", processed=self.processed)
            return
        self._visibility = visibility
        if self._on_started is not None:
            self._on_started()
        receivers = [
            asyncio.create_task(self._receive_loop(sqs, stop)) for _ in range(self._receivers)
        ]
        workers = [asyncio.create_task(self._work_loop(sqs)) for _ in range(self._workers)]
        heartbeat = asyncio.create_task(self._heartbeat(sqs))
        log.info("consumer_started", queue_url=self._queue_url, receivers=self._receivers)
        try:
            await stop.wait()
        finally:
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
            # Workers drain what was received, within the grace period.
            drained = asyncio.create_task(self._batches.join())
            await asyncio.wait({drained}, timeout=self._grace)
            for task in [*workers, drained]:
                task.cancel()
            await asyncio.gather(*workers, drained, return_exceptions=True)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._release(sqs)
            log.info("consumer_stopped", processed=self.processed)

    async def _wait_for_queue(self, sqs: SQSClient, stop: asyncio.Event) -> int | None:
        """The queue's visibility timeout, waiting out an SQS outage (or a queue not
        created yet) with backoff; ``None`` if ``stop`` comes first. A blip at start-up
        must not fail the role, which would stop the API beside it."""
        backoff = QUEUE_WAIT_BACKOFF()
        while not stop.is_set():
            try:
                return await self._visibility_timeout(sqs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network, credentials, no such queue: say so, retry
                delay = backoff.next_delay()
                log.warning(
                    "queue_unreachable",
                    queue_url=self._queue_url,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in=delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return None

    async def _visibility_timeout(self, sqs: SQSClient) -> int:
        attrs = await sqs.get_queue_attributes(
            QueueUrl=self._queue_url, AttributeNames=["VisibilityTimeout"]
        )
        return int(attrs.get("Attributes", {}).get("VisibilityTimeout", "30"))

    async def _receive_loop(self, sqs: SQSClient, stop: asyncio.Event) -> None:
        backoff = RECEIVE_BACKOFF()
        while not stop.is_set():
            await self._db_ok.wait()
            async with self._capacity:
                await self._capacity.wait_for(lambda: self._in_flight + 10 <= self._max_in_flight)
                self._in_flight += 10  # reserve room for a full receive
                self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            received: list[Message] = []
            try:
                response = await sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self._wait_seconds,
                    MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
                )
                received = [message_of(m) for m in response.get("Messages", [])]
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network, throttling, credentials: keep trying
                log.warning("receive_failed", error=f"{type(exc).__name__}: {exc}")
                await backoff.sleep()
            finally:
                async with self._capacity:
                    self._in_flight -= 10 - len(received)
                    self._capacity.notify_all()
            if received:
                now = time.time()
                for message in received:
                    self._working[message.message_id] = message
                    if message.sent_at is not None:
                        telemetry.RECEIVE_LAG.observe(max(0.0, now - message.sent_at.timestamp()))
                self._batches.put_nowait(received)

    async def _work_loop(self, sqs: SQSClient) -> None:
        while True:
            batches = [await self._batches.get()]
            size = len(batches[0])
            while size < _MERGE_LIMIT and not self._batches.empty():
                batches.append(self._batches.get_nowait())
                size += len(batches[-1])
            messages = [m for batch in batches for m in batch]
            cancelled = False
            try:
                await self._process(sqs, messages)
            except asyncio.CancelledError:
                # Stopped past the grace period: leave these in ``_working`` so
                # that run() releases them (visibility 0) for prompt redelivery.
                cancelled = True
                raise
            except Exception as exc:
                # A bug must not silently kill this worker: leave the messages to
                # SQS (redelivery, then the DLQ) and keep working.
                log.error("batch_crashed", error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                if not cancelled:
                    for m in messages:
                        self._working.pop(m.message_id, None)
                async with self._capacity:
                    self._in_flight -= len(messages)
                    self._capacity.notify_all()
                for _ in batches:
                    self._batches.task_done()

    async def _process(self, sqs: SQSClient, messages: list[Message]) -> None:
        result = await self._handler.handle(messages)
        await self._delete(sqs, result.done)
        self.processed += len(result.done)
        if result.retry:
            # The database is unreachable: leave these for SQS to redeliver, and stop
            # receiving until it answers again (one worker probes, the others wait).
            if self._db_ok.is_set():
                self._db_ok.clear()
                await self._wait_for_database()
            else:
                await self._db_ok.wait()

    async def _wait_for_database(self) -> None:
        backoff = DATABASE_PROBE_BACKOFF()
        while True:
            try:
                async with self._runtime.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                log.info("database_back")
                self._db_ok.set()
                return
            except Exception as exc:
                delay = backoff.next_delay()
                log.warning("database_unreachable", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)

    async def _delete(self, sqs: SQSClient, messages: Sequence[Message]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                for i, m in enumerate(chunk)
                if m.receipt_handle
            ]
            if not entries:
                continue
            backoff = DELETE_BACKOFF()
            for _ in range(3):
                try:
                    response = await sqs.delete_message_batch(
                        QueueUrl=self._queue_url, Entries=entries
                    )
                except Exception as exc:
                    log.warning("delete_failed", error=f"{type(exc).__name__}: {exc}")
                    await backoff.sleep()
                    continue
                failed = {f["Id"] for f in response.get("Failed", [])}
                if not failed:
                    break
                # Not deleted: SQS will redeliver, and the idempotent writes absorb it.
                entries = [e for e in entries if e["Id"] in failed]

    async def _heartbeat(self, sqs: SQSClient) -> None:
        interval = max(1.0, self._visibility / 2)
        while True:
            await asyncio.sleep(interval)
            working = list(self._working.values())
            await self._change_visibility(sqs, working, self._visibility)

    async def _release(self, sqs: SQSClient) -> None:
        leftover = list(self._working.values())
        if leftover:
            log.info("releasing_messages", count=len(leftover))
            await self._change_visibility(sqs, leftover, 0)
        self._working.clear()

    async def _change_visibility(
        self, sqs: SQSClient, messages: Sequence[Message], seconds: int
    ) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)
                if m.receipt_handle
            ]
            if entries:
                with contextlib.suppress(Exception):
                    await sqs.change_message_visibility_batch(
                        QueueUrl=self._queue_url, Entries=entries
                    )
