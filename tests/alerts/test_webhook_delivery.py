"""Webhook delivery through the dispatcher to the real local receiver.

The receiver verifies every signature with the ``standardwebhooks`` package; the
delivery log and the outbox are read back from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.alerts.webhooks import WebhookSender, message_id
from service.api.routes.alerts import delivery_counts
from service.cipher import SecretCipher, generate_key
from service.demo.receiver import WebhookReceiver
from service.outbox.dispatcher import Dispatcher, build_registry
from service.outbox.retry import RetryPolicy

FAST = RetryPolicy(base_s=0.02, cap_s=0.05, budget_s=3600)
#: The key of this module's subscriptions and senders (stored values are encrypted).
CIPHER = SecretCipher([generate_key()])


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def add_subscription(
    engine: AsyncEngine, url: str, secret: str, *, fmt: str = "standard", wid: str | None = None
) -> str:
    wid = wid or "wh_" + secrets.token_hex(6)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, url, events, secret, format)"
                " VALUES (:id, :url, '[\"deployment.failed\"]', :secret, :fmt)"
            ),
            {
                "id": wid,
                "url": CIPHER.encrypt(url),
                "secret": CIPHER.encrypt(secret),
                "fmt": fmt,
            },
        )
    return wid


ALERT_BODY: dict[str, Any] = {
    "type": "deployment.failed",
    "id": "alrt_1",
    "created_at": "2026-01-01T00:00:00Z",
    "cluster": "prod",
    "service": "web",
    "service_arn": "arn:aws:ecs:us-east-1:111122223333:service/prod/web",
    "deployment": {
        "id": "ecs-svc/1",
        "kind": "rolling",
        "outcome": "failed",
        "reason": "circuit breaker",
        "rollback_target": "ecs-svc/0",
    },
    "summary": "Deployment ecs-svc/1 of prod/web failed",
    "events": ["e1"],
}


async def add_alert(engine: AsyncEngine, wid: str, alert_id: str = "alrt_1") -> tuple[int, str]:
    """An alert and its outbox row for ``wid``; returns (outbox id, dedupe key)."""
    key = f"alert:{alert_id}:{wid}"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO alerts (id, type, dedupe_key, cluster_name, service_name,"
                " deployment_id, summary, payload) VALUES (:id, 'deployment.failed', :id,"
                " 'prod', 'web', 'ecs-svc/1', 'failed', CAST(:payload AS jsonb))"
                " ON CONFLICT DO NOTHING"
            ),
            {"id": alert_id, "payload": __import__("json").dumps({**ALERT_BODY, "id": alert_id})},
        )
        row = await conn.execute(
            text(
                "INSERT INTO outbox (kind, dedupe_key, payload) VALUES ('webhook', :key,"
                " jsonb_build_object('webhook_id', CAST(:wid AS text), 'alert_id',"
                " CAST(:alert AS text), 'event_type', 'deployment.failed')) RETURNING id"
            ),
            {"key": key, "wid": wid, "alert": alert_id},
        )
        return int(row.scalar_one()), key


async def deliveries(engine: AsyncEngine, wid: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT * FROM webhook_deliveries WHERE webhook_id = :w ORDER BY id"), {"w": wid}
        )
        return [dict(r) for r in found.mappings()]


async def outbox_row(engine: AsyncEngine, row_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT * FROM outbox WHERE id = :i"), {"i": row_id})
        return dict(found.mappings().one())


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        yield client


def make_dispatcher(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    *,
    allow_private: bool = True,
    resolver: Any = None,
    deadline_s: float = 15.0,
    per_subscription: int = 4,
    cipher: SecretCipher = CIPHER,
    **kwargs: Any,
) -> Dispatcher:
    sender = WebhookSender(
        sessionmaker,
        http,
        allow_private=allow_private,
        cipher=cipher,
        resolver=resolver,
        deadline_s=deadline_s,
        per_subscription=per_subscription,
    )
    return Dispatcher(
        engine, sessionmaker, build_registry([sender]), policy=FAST, jitter=lambda: 0.0, **kwargs
    )


async def drain(d: Dispatcher, *, rounds: int = 20) -> None:
    """Dispatch until nothing is pending (retries included) or ``rounds`` are spent."""
    for _ in range(rounds):
        if not await d.dispatch_once():
            await asyncio.sleep(0.06)
            if not await d.dispatch_once():
                return


async def test_delivered_signed_and_logged(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    wid = await add_subscription(engine, webhook_receiver.expect("/a", secret), secret)
    row_id, key = await add_alert(engine, wid)
    await drain(make_dispatcher(engine, sessionmaker, http))
    [got] = webhook_receiver.deliveries
    assert got.verified, got.error
    assert got.headers["webhook-id"] == message_id(key)
    assert got.json == ALERT_BODY
    [logged] = await deliveries(engine, wid)
    assert (logged["attempt"], logged["status_code"], logged["error"]) == (1, 204, None)
    assert logged["alert_id"] == "alrt_1"
    assert logged["message_id"] == message_id(key)
    assert logged["next_attempt_at"] is None
    assert (await outbox_row(engine, row_id))["status"] == "delivered"
    async with engine.connect() as conn:
        counts = await delivery_counts(conn, ["alrt_1"])
    assert counts == {"alrt_1": {"pending": 0, "delivered": 1, "failed": 0}}


async def test_two_500s_then_delivered_with_one_webhook_id(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    wid = await add_subscription(engine, webhook_receiver.expect("/b", secret), secret)
    row_id, key = await add_alert(engine, wid)
    webhook_receiver.fail_next(500, count=2)
    d = make_dispatcher(engine, sessionmaker, http)
    assert await d.dispatch_once() == 1
    async with engine.connect() as conn:
        pending = await delivery_counts(conn, ["alrt_1"])
    assert pending["alrt_1"] == {"pending": 1, "delivered": 0, "failed": 0}
    await drain(d)
    got = webhook_receiver.deliveries
    assert [d.status for d in got] == [500, 500, 204]
    assert {d.headers["webhook-id"] for d in got} == {message_id(key)}
    assert all(d.verified for d in got)
    logged = await deliveries(engine, wid)
    assert [(x["attempt"], x["status_code"]) for x in logged] == [(1, 500), (2, 500), (3, 204)]
    assert [x["next_attempt_at"] is not None for x in logged] == [True, True, False]
    assert logged[0]["error"] == "HTTP 500"
    assert (await outbox_row(engine, row_id))["attempts"] == 3


async def test_410_disables_the_subscription(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    wid = await add_subscription(engine, webhook_receiver.expect("/c", secret), secret)
    row_id, _ = await add_alert(engine, wid)
    webhook_receiver.fail_next(410)
    await drain(make_dispatcher(engine, sessionmaker, http))
    assert (await outbox_row(engine, row_id))["status"] == "dead"
    async with engine.connect() as conn:
        active = await conn.scalar(
            text("SELECT active FROM webhook_subscriptions WHERE id = :w"), {"w": wid}
        )
        counts = await delivery_counts(conn, ["alrt_1"])
    assert active is False
    assert counts["alrt_1"] == {"pending": 0, "delivered": 0, "failed": 1}
    # The next alert for it is not even attempted.
    second, _ = await add_alert(engine, wid, "alrt_2")
    await drain(make_dispatcher(engine, sessionmaker, http))
    assert len(webhook_receiver.deliveries) == 1
    assert (await outbox_row(engine, second))["last_error"] == "the subscription is disabled"


async def test_other_4xx_is_final_and_429_honours_retry_after(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    wid = await add_subscription(engine, webhook_receiver.expect("/d", secret), secret)
    refused, _ = await add_alert(engine, wid, "alrt_1")
    webhook_receiver.fail_next(422)
    d = make_dispatcher(engine, sessionmaker, http)
    await d.dispatch_once()
    assert (await outbox_row(engine, refused))["status"] == "dead"
    limited, _ = await add_alert(engine, wid, "alrt_2")
    webhook_receiver.fail_next(429, headers={"Retry-After": "120"})
    await d.dispatch_once()
    row = await outbox_row(engine, limited)
    assert row["status"] == "pending"
    assert (row["next_attempt_at"] - row["created_at"]).total_seconds() > 100


async def test_slack_format(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/slack", secret)
    wid = await add_subscription(engine, url, secret, fmt="slack")
    await add_alert(engine, wid)
    await drain(make_dispatcher(engine, sessionmaker, http))
    [got] = webhook_receiver.verified("/slack")
    assert got["text"].endswith("Deployment ecs-svc/1 of prod/web failed")
    flat = str(got["blocks"])
    for needle in ("failed", "prod/web", "circuit breaker", "ecs-svc/0", ALERT_BODY["service_arn"]):
        assert needle in flat


class NameResolver:
    """Resolves names from a table (a stand-in DNS the test can change)."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = dict(table)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        if host not in self.table:
            raise OSError(f"{host} does not resolve")
        return self.table[host]


async def test_connects_to_the_checked_address_with_the_name_as_host(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    webhook_receiver.expect("/pin", secret)
    port = webhook_receiver.url.rsplit(":", 1)[1]
    # The name exists only in this resolver: a second lookup by the HTTP client fails.
    url = f"http://hooks.ecswatch.invalid:{port}/pin"
    wid = await add_subscription(engine, url, secret)
    await add_alert(engine, wid)
    resolver = NameResolver({"hooks.ecswatch.invalid": ["127.0.0.1"]})
    await drain(make_dispatcher(engine, sessionmaker, http, resolver=resolver))
    [got] = webhook_receiver.deliveries
    assert got.verified
    assert got.headers["host"] == f"hooks.ecswatch.invalid:{port}"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.251", "multicast"),
    ],
)
async def test_ssrf_refused_at_delivery(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
    host: str,
    reason: str,
) -> None:
    secret = new_secret()
    wid = await add_subscription(engine, f"http://{host}:9/x", secret)
    row_id, _ = await add_alert(engine, wid)
    await drain(make_dispatcher(engine, sessionmaker, http, allow_private=False))
    row = await outbox_row(engine, row_id)
    assert row["status"] == "dead"
    assert reason in row["last_error"]
    [logged] = await deliveries(engine, wid)
    assert logged["status_code"] is None
    assert reason in logged["error"]


async def test_a_name_that_turns_private_is_refused_at_delivery(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
) -> None:
    from service.alerts.ssrf import check_webhook_url

    dns = NameResolver({"hooks.ecswatch.invalid": ["93.184.215.14"]})
    url = "https://hooks.ecswatch.invalid/hook"
    # Accepted at creation: the name resolved to a public address then.
    await check_webhook_url(url, allow_private=False, resolver=dns)
    wid = await add_subscription(engine, url, new_secret())
    row_id, _ = await add_alert(engine, wid)
    dns.table["hooks.ecswatch.invalid"] = ["10.0.0.7"]
    await drain(make_dispatcher(engine, sessionmaker, http, allow_private=False, resolver=dns))
    row = await outbox_row(engine, row_id)
    assert row["status"] == "dead"
    assert "10.0.0.7" in row["last_error"]
    assert "private" in row["last_error"]


async def test_timeouts_and_refused_connections_are_retried(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # A server that accepts and never answers; and a port nobody listens on.
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    closed = await asyncio.start_server(silent, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    try:
        silent_port = server.sockets[0].getsockname()[1]
        slow = await add_subscription(engine, f"http://127.0.0.1:{silent_port}/", new_secret())
        gone = await add_subscription(engine, f"http://127.0.0.1:{closed_port}/", new_secret())
        slow_row, _ = await add_alert(engine, slow, "alrt_1")
        gone_row, _ = await add_alert(engine, gone, "alrt_2")
        async with httpx.AsyncClient(timeout=0.3, trust_env=False) as quick:
            await make_dispatcher(engine, sessionmaker, quick).dispatch_once()
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    timed_out = await outbox_row(engine, slow_row)
    refused = await outbox_row(engine, gone_row)
    assert (timed_out["status"], timed_out["attempts"]) == ("pending", 1)
    assert timed_out["last_error"] == "timeout: ReadTimeout"
    assert (refused["status"], refused["attempts"]) == ("pending", 1)
    assert refused["last_error"].startswith("network error: ConnectError")
    [logged] = await deliveries(engine, slow)
    assert logged["status_code"] is None
    assert logged["next_attempt_at"] is not None


async def test_a_deleted_subscription_is_not_sent(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    wid = await add_subscription(engine, webhook_receiver.expect("/del", secret), secret)
    row_id, _ = await add_alert(engine, wid)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM webhook_subscriptions WHERE id = :w"), {"w": wid})
    await drain(make_dispatcher(engine, sessionmaker, http))
    row = await outbox_row(engine, row_id)
    assert (row["status"], row["last_error"]) == ("dead", "the subscription was deleted")
    assert webhook_receiver.deliveries == []


async def test_the_next_checked_address_when_one_refuses(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    webhook_receiver.expect("/two", secret)
    port = webhook_receiver.url.rsplit(":", 1)[1]
    wid = await add_subscription(engine, f"http://hooks.ecswatch.invalid:{port}/two", secret)
    row_id, _ = await add_alert(engine, wid)
    # The receiver listens on 127.0.0.1 only: 127.0.0.2 refuses the connection.
    resolver = NameResolver({"hooks.ecswatch.invalid": ["127.0.0.2", "127.0.0.1"]})
    await drain(make_dispatcher(engine, sessionmaker, http, resolver=resolver))
    assert (await outbox_row(engine, row_id))["status"] == "delivered"
    [got] = webhook_receiver.deliveries
    assert got.verified
