"""A slow receiver delays only its own subscription's rows.

Two real local receivers: the demo receiver (verifies signatures, answers at
once) and :class:`~service.demo.trickle.TrickleReceiver`, which reads each request
and then answers one byte at a time, never finishing, so only the overall delivery
deadline ends its requests. Two dispatchers share the database, as replicas do.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.alerts.webhooks import message_id
from service.demo.receiver import WebhookReceiver
from service.demo.trickle import TrickleReceiver
from tests.alerts.test_webhook_delivery import (
    add_alert,
    add_subscription,
    deliveries,
    make_dispatcher,
    new_secret,
)

DEADLINE_S = 3.0


class StampedTrickle(TrickleReceiver):
    """The trickling receiver, stamping when each of its connections ended."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(interval_s)
        self.closed_at: list[float] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super()._handle(reader, writer)
        finally:
            self.closed_at.append(time.monotonic())


async def test_a_trickling_receiver_delays_only_its_own_rows(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    webhook_receiver: WebhookReceiver,
) -> None:
    arrived_at: dict[str, float] = {}
    secret = new_secret()
    healthy = await add_subscription(engine, webhook_receiver.expect("/ok", secret), secret)
    async with (
        StampedTrickle(interval_s=0.2) as slow,
        httpx.AsyncClient(timeout=DEADLINE_S, trust_env=False) as http_a,
        httpx.AsyncClient(timeout=DEADLINE_S, trust_env=False) as http_b,
    ):
        stuck = await add_subscription(engine, slow.url + "/slow", new_secret())
        # Two replicas; the lease is twice the deadline, as settings require.
        dispatchers = [
            make_dispatcher(
                engine,
                sessionmaker,
                http,
                deadline_s=DEADLINE_S,
                per_subscription=1,
                lease_s=2 * DEADLINE_S,
                poll_interval_s=0.2,
            )
            for http in (http_a, http_b)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.run(stop)) for d in dispatchers]
        try:
            slow_rows = [await add_alert(engine, stuck, f"alrt_s{i}") for i in range(2)]
            await asyncio.wait_for(slow.wait_for(1), 30)
            # The slow receiver holds a delivery open; the healthy one's alerts
            # go out meanwhile.
            for i in range(3):
                await add_alert(engine, healthy, f"alrt_h{i}")
            got = await webhook_receiver.wait_for(3, within=30)
            arrived_at.update({d.headers["webhook-id"]: time.monotonic() for d in got})
            assert not slow.closed_at  # the first slow delivery is still pending
            # Both slow rows are tried (one at a time), the first one retried.
            first_id = message_id(slow_rows[0][1])
            async with asyncio.timeout(60):
                while slow.count(first_id) < 2 or len({r.webhook_id for r in slow.requests}) < 2:
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert all(d.verified for d in webhook_receiver.deliveries)
    assert len(webhook_receiver.deliveries) == 3  # each healthy alert once
    assert min(slow.closed_at) > max(arrived_at.values())
    assert slow.overlaps == 0  # no row was ever in flight twice at once
    # Every ended slow request was recorded as a retry, none lost or counted twice.
    logged = await deliveries(engine, stuck)
    assert logged
    assert all(row["status_code"] is None for row in logged)
    assert all(
        row["error"] == f"deadline: no full answer within {DEADLINE_S:g} s" for row in logged
    )
    sent = Counter(r.webhook_id for r in slow.requests)
    for row in logged:
        assert sent[row["message_id"]] >= row["attempt"]
    async with engine.connect() as conn:
        states = (
            await conn.execute(
                text("SELECT status, attempts FROM outbox WHERE id = ANY(:ids)"),
                {"ids": [row_id for row_id, _ in slow_rows]},
            )
        ).all()
    assert {status for status, _ in states} == {"pending"}  # retried, not dead
    assert sum(attempts for _, attempts in states) == len(logged)


async def test_one_dispatcher_keeps_delivering_while_a_receiver_hangs(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    healthy = await add_subscription(engine, webhook_receiver.expect("/ok", secret), secret)
    async with (
        StampedTrickle(interval_s=0.2) as slow,
        httpx.AsyncClient(timeout=300, trust_env=False) as http,
    ):
        stuck = await add_subscription(engine, slow.url + "/slow", new_secret())
        # A deadline far beyond the test: only isolation can let the others through.
        dispatcher = make_dispatcher(
            engine, sessionmaker, http, deadline_s=300, lease_s=600, grace_s=0.5
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            for i in range(6):  # more rows than the subscription may have in flight
                await add_alert(engine, stuck, f"alrt_s{i}")
            await asyncio.wait_for(slow.wait_for(1), 30)
            for i in range(3):
                await add_alert(engine, healthy, f"alrt_h{i}")
            await webhook_receiver.wait_for(3, within=30)
            assert not slow.closed_at  # still hanging
            assert len(slow.requests) <= 4  # at most N in flight for that subscription
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert [d.verified for d in webhook_receiver.deliveries] == [True] * 3
