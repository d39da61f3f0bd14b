"""The dispatcher on a real PostgreSQL: claim, send by kind, record, wake, stop.

The senders here are small in-test implementations of the ``Sender`` Protocol
(the seam the dispatcher is written against); the webhook sender's own tests
run through the real receiver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import telemetry
from service.outbox.dispatcher import Dispatcher, Recorded, build_registry
from service.outbox.models import OutboxKind
from service.outbox.retry import RetryPolicy
from service.outbox.sender import ClaimedRow, SendResult, SendStatus

FAST = RetryPolicy(base_s=0.05, cap_s=0.2, budget_s=3600)


class ScriptedSender:
    """Answers each row with the next status of its script (default: delivered)."""

    def __init__(
        self,
        kinds: frozenset[OutboxKind] = frozenset({OutboxKind.WEBHOOK}),
        script: Sequence[SendStatus] = (),
        *,
        delay: float = 0.0,
        retry_after: float | None = None,
    ) -> None:
        self.kinds = kinds
        self.script = list(script)
        self.delay = delay
        self.retry_after = retry_after
        self.sent: list[ClaimedRow] = []
        self.recorded: list[Recorded] = []

    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]:
        self.sent.extend(rows)
        if self.delay:
            await asyncio.sleep(self.delay)
        results = []
        for row in rows:
            status = self.script.pop(0) if self.script else SendStatus.DELIVERED
            error = None if status is SendStatus.DELIVERED else f"scripted {status.value}"
            results.append(SendResult(row.id, status, error, self.retry_after))
        return results


class RecordingSender(ScriptedSender):
    async def record(self, session: AsyncSession, attempts: Sequence[Recorded]) -> None:
        self.recorded.extend(attempts)


class BrokenSender(ScriptedSender):
    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]:
        raise RuntimeError("sender bug")


async def add_rows(
    engine: AsyncEngine,
    n: int,
    kind: OutboxKind = OutboxKind.WEBHOOK,
    *,
    created_at: datetime | None = None,
    prefix: str = "k",
) -> list[int]:
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "INSERT INTO outbox (kind, dedupe_key, payload, created_at)"
                " SELECT :kind, :prefix || g, jsonb_build_object('n', g), coalesce(:at, now())"
                " FROM generate_series(1, :n) AS g RETURNING id"
            ),
            {"kind": kind.value, "n": n, "at": created_at, "prefix": f"{prefix}-{kind.value}-"},
        )
        return [row[0] for row in result]


async def rows(engine: AsyncEngine) -> dict[int, dict[str, Any]]:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT * FROM outbox ORDER BY id"))
        return {row["id"]: dict(row) for row in found.mappings()}


def dispatcher(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    *senders: ScriptedSender,
    **kwargs: Any,
) -> Dispatcher:
    kwargs.setdefault("policy", FAST)
    kwargs.setdefault("jitter", lambda: 0.0)
    return Dispatcher(engine, sessionmaker, build_registry(senders), **kwargs)


async def test_delivers_and_counts(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ids = await add_rows(engine, 3)
    sender = RecordingSender()
    before = telemetry.DISPATCH_RESULTS.labels("webhook", "delivered")._value.get()
    assert await dispatcher(engine, sessionmaker, sender).dispatch_once() == 3
    stored = await rows(engine)
    assert [stored[i]["status"] for i in ids] == ["delivered"] * 3
    assert all(stored[i]["attempts"] == 1 and stored[i]["delivered_at"] for i in ids)
    assert [r.id for r in sender.sent] == ids
    assert [r.attempts for r in sender.sent] == [0, 0, 0]
    assert [(r.attempt, r.status.value) for r in sender.recorded] == [(1, "delivered")] * 3
    after = telemetry.DISPATCH_RESULTS.labels("webhook", "delivered")._value.get()
    assert after - before == 3
    # Nothing is due any more.
    assert await dispatcher(engine, sessionmaker, sender).dispatch_once() == 0


async def test_retry_follows_the_schedule_then_delivers(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    [row_id] = await add_rows(engine, 1)
    sender = RecordingSender(script=[SendStatus.RETRY, SendStatus.RETRY])
    # Delays long enough that a loaded machine cannot make "not due yet" due.
    d = dispatcher(engine, sessionmaker, sender, policy=RetryPolicy(base_s=2.0, budget_s=3600))
    started = datetime.now(UTC)
    assert await d.dispatch_once() == 1
    first = (await rows(engine))[row_id]
    assert first["status"] == "pending"
    assert first["attempts"] == 1
    assert first["last_error"] == "scripted retry"
    # First retry: base * 2**0 with the lowest jitter = 1 s later.
    assert first["next_attempt_at"] >= started + timedelta(seconds=1)
    assert await d.dispatch_once() == 0  # not due yet
    await asyncio.sleep(1.05)
    assert await d.dispatch_once() == 1
    second = (await rows(engine))[row_id]
    # Second retry: base * 2**1 with the lowest jitter = 2 s after the second attempt.
    assert second["next_attempt_at"] >= first["next_attempt_at"] + timedelta(seconds=2)
    assert await d.dispatch_once() == 0
    await asyncio.sleep(2.05)
    assert await d.dispatch_once() == 1
    final = (await rows(engine))[row_id]
    assert final["status"] == "delivered"
    assert final["attempts"] == 3
    assert [r.attempts for r in sender.sent] == [0, 1, 2]
    assert [r.next_attempt_at is not None for r in sender.recorded] == [True, True, False]


async def test_retry_after_is_honoured(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    [row_id] = await add_rows(engine, 1)
    sender = ScriptedSender(script=[SendStatus.RETRY], retry_after=30)
    before = datetime.now(UTC)
    await dispatcher(engine, sessionmaker, sender).dispatch_once()
    due = (await rows(engine))[row_id]["next_attempt_at"]
    assert timedelta(seconds=29) < due - before < timedelta(seconds=32)


async def test_dead_after_the_budget_and_when_the_sender_says_so(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    old = datetime.now(UTC) - timedelta(hours=2)
    [expired] = await add_rows(engine, 1, created_at=old, prefix="old")
    [refused] = await add_rows(engine, 1, prefix="new")
    sender = RecordingSender(script=[SendStatus.RETRY, SendStatus.DEAD])
    before = telemetry.DISPATCH_RESULTS.labels("webhook", "dead")._value.get()
    d = dispatcher(engine, sessionmaker, sender, policy=RetryPolicy(base_s=0.05, budget_s=3600))
    assert await d.dispatch_once() == 2
    stored = await rows(engine)
    assert stored[expired]["status"] == "dead"
    assert stored[expired]["last_error"] == "scripted retry"
    assert stored[refused]["status"] == "dead"
    assert telemetry.DISPATCH_RESULTS.labels("webhook", "dead")._value.get() - before == 2
    assert all(r.next_attempt_at is None for r in sender.recorded)
    await d._update_gauges(force=True)
    assert telemetry.OUTBOX_DEAD.labels("webhook")._value.get() == 2


async def test_kinds_without_a_sender_stay_pending(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    datadog = await add_rows(engine, 2, OutboxKind.DATADOG_METRICS)
    webhooks = await add_rows(engine, 1)
    sender = ScriptedSender()
    d = dispatcher(engine, sessionmaker, sender)
    assert await d.dispatch_once() == 1
    stored = await rows(engine)
    assert [stored[i]["status"] for i in webhooks] == ["delivered"]
    assert [(stored[i]["status"], stored[i]["attempts"]) for i in datadog] == [("pending", 0)] * 2
    await d._update_gauges(force=True)
    assert telemetry.OUTBOX_DEPTH.labels("datadog_metrics")._value.get() == 2
    assert telemetry.OUTBOX_DEPTH.labels("webhook")._value.get() == 0
    assert telemetry.OUTBOX_OLDEST_AGE._value.get() >= 0


async def test_each_kind_goes_to_its_sender(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    metrics = await add_rows(engine, 2, OutboxKind.DATADOG_METRICS)
    events = await add_rows(engine, 1, OutboxKind.DATADOG_EVENT)
    hooks = await add_rows(engine, 1)
    datadog = ScriptedSender(frozenset({OutboxKind.DATADOG_METRICS, OutboxKind.DATADOG_EVENT}))
    webhook = ScriptedSender()
    assert await dispatcher(engine, sessionmaker, datadog, webhook).dispatch_once() == 4
    assert sorted(r.id for r in datadog.sent) == sorted(metrics + events)
    assert [r.id for r in webhook.sent] == hooks


def test_two_senders_for_one_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="two senders"):
        build_registry([ScriptedSender(), ScriptedSender()])


async def test_a_crashing_sender_retries_its_rows(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    [row_id] = await add_rows(engine, 1)
    assert await dispatcher(engine, sessionmaker, BrokenSender()).dispatch_once() == 1
    stored = (await rows(engine))[row_id]
    assert stored["status"] == "pending"
    assert stored["attempts"] == 1
    assert "sender bug" in stored["last_error"]


async def test_two_dispatchers_never_send_a_row_twice(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ids = await add_rows(engine, 60)
    a, b = ScriptedSender(delay=0.05), ScriptedSender(delay=0.05)
    da = dispatcher(engine, sessionmaker, a, batch_size=7)
    db = dispatcher(engine, sessionmaker, b, batch_size=7)

    async def drain(d: Dispatcher) -> None:
        while await d.dispatch_once():
            pass

    await asyncio.gather(drain(da), drain(db))
    sent = [r.id for r in a.sent] + [r.id for r in b.sent]
    assert sorted(sent) == ids  # every row once, none twice
    assert a.sent
    assert b.sent
    assert {r["status"] for r in (await rows(engine)).values()} == {"delivered"}


async def test_wakes_on_notify_without_polling(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sender = ScriptedSender()
    d = dispatcher(engine, sessionmaker, sender, poll_interval_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await asyncio.wait_for(d.listening.wait(), 10)
        await asyncio.sleep(0.2)  # the loop is asleep on its 60 s poll now
        [row_id] = await add_rows(engine, 1)
        async with asyncio.timeout(5):
            while not sender.sent:
                await asyncio.sleep(0.01)
        assert [r.id for r in sender.sent] == [row_id]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_wakes_for_a_due_retry(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sender = ScriptedSender(script=[SendStatus.RETRY])
    d = dispatcher(engine, sessionmaker, sender, poll_interval_s=60)
    stop = asyncio.Event()
    [row_id] = await add_rows(engine, 1)
    task = asyncio.create_task(d.run(stop))
    try:
        async with asyncio.timeout(5):
            while (await rows(engine))[row_id]["status"] != "delivered":
                await asyncio.sleep(0.02)
        assert len(sender.sent) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_stop_mid_send_releases_the_rows(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ids = await add_rows(engine, 2)
    sender = ScriptedSender(delay=3600)
    d = dispatcher(engine, sessionmaker, sender, grace_s=0.2, lease_s=600)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    async with asyncio.timeout(5):
        while not sender.sent:
            await asyncio.sleep(0.01)
    leased = await rows(engine)
    assert all(leased[i]["next_attempt_at"] > datetime.now(UTC) for i in ids)
    stop.set()
    await asyncio.wait_for(task, 5)
    released = await rows(engine)
    now = datetime.now(UTC)
    assert all(released[i]["status"] == "pending" for i in ids)
    assert all(released[i]["attempts"] == 0 for i in ids)
    assert all(released[i]["next_attempt_at"] <= now for i in ids)


async def test_stop_lets_a_short_send_finish(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    [row_id] = await add_rows(engine, 1)
    sender = ScriptedSender(delay=0.3)
    d = dispatcher(engine, sessionmaker, sender, grace_s=5)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    async with asyncio.timeout(5):
        while not sender.sent:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert (await rows(engine))[row_id]["status"] == "delivered"


async def test_a_database_outage_does_not_kill_the_dispatcher(
    database_url: str, engine: AsyncEngine
) -> None:
    from sqlalchemy.engine import make_url

    from service.db import create_engine, create_sessionmaker
    from tests.rig.tcp_proxy import TcpProxy

    url = make_url(database_url)
    if not url.host:
        pytest.fail("the outage test needs a TCP database URL (ECSWATCH_TEST_DATABASE_URL)")
    proxy = TcpProxy(url.host, url.port or 5432)
    await proxy.start()
    proxied = create_engine(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        pool_size=3,
    )
    sender = ScriptedSender()
    d = dispatcher(proxied, create_sessionmaker(proxied), sender, poll_interval_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await asyncio.wait_for(d.listening.wait(), 10)
        proxy.cut()
        [row_id] = await add_rows(engine, 1)  # written while the dispatcher cannot see it
        await asyncio.sleep(1.0)
        assert not task.done()
        assert sender.sent == []
        proxy.restore()
        async with asyncio.timeout(15):
            while (await rows(engine))[row_id]["status"] != "delivered":
                assert not task.done()
                await asyncio.sleep(0.05)
        assert [r.id for r in sender.sent] == [row_id]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await proxied.dispose()
        await proxy.stop()


async def test_deferred_rows_count_no_attempt_and_come_back(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    [row_id] = await add_rows(engine, 1)
    sender = RecordingSender(script=[SendStatus.DEFERRED], retry_after=0.05)
    d = dispatcher(engine, sessionmaker, sender)
    before = datetime.now(UTC)
    assert await d.dispatch_once() == 1
    deferred = (await rows(engine))[row_id]
    assert (deferred["status"], deferred["attempts"], deferred["last_error"]) == (
        "pending",
        0,
        None,
    )
    assert deferred["next_attempt_at"] > before
    assert sender.recorded == []  # not an attempt: nothing for the sender's log
    async with asyncio.timeout(5):
        while (await rows(engine))[row_id]["status"] != "delivered":
            await d.dispatch_once()
            await asyncio.sleep(0.02)
    assert (await rows(engine))[row_id]["attempts"] == 1
    assert [r.attempt for r in sender.recorded] == [1]


class GatedSender(ScriptedSender):
    """Holds every row whose payload ``n`` is 1 until :attr:`gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]:
        self.sent.extend(rows)
        if any(row.payload.get("n") == 1 for row in rows):
            await self.gate.wait()
        return [SendResult(row.id, SendStatus.DELIVERED) for row in rows]


async def test_a_held_batch_does_not_hold_the_next(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sender = GatedSender()
    d = dispatcher(engine, sessionmaker, sender, batch_size=1, grace_s=5)
    stop = asyncio.Event()
    [held] = await add_rows(engine, 1, prefix="held")  # payload n = 1
    task = asyncio.create_task(d.run(stop))
    try:
        async with asyncio.timeout(10):
            while not sender.sent:
                await asyncio.sleep(0.01)
        later = await add_rows(engine, 2, prefix="later")  # n = 1 and 2
        async with asyncio.timeout(10):
            while (await rows(engine))[later[1]]["status"] != "delivered":
                await asyncio.sleep(0.02)
        assert (await rows(engine))[held]["status"] == "pending"  # still held
        sender.gate.set()
        async with asyncio.timeout(10):
            while {r["status"] for r in (await rows(engine)).values()} != {"delivered"}:
                await asyncio.sleep(0.02)
    finally:
        sender.gate.set()
        stop.set()
        await asyncio.wait_for(task, 10)
