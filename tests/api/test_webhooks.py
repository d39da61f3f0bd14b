"""Webhook subscriptions through the API: create, read, list, delete, deliveries, test,
secrets encrypted at rest and their rotation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.alerts.webhooks import WebhookSender
from service.cipher import cipher_for
from service.demo.receiver import WebhookReceiver
from service.outbox.dispatcher import Dispatcher
from service.outbox.models import OutboxItem, OutboxKind
from service.runtime import Runtime
from tests.api import seed
from tests.api.conftest import ADMIN, READ

# A public address literal: accepted without any DNS lookup.
PUBLIC_URL = "https://93.184.215.14/ecswatch"


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    payload = {"url": PUBLIC_URL, "events": ["deployment.failed"], **body}
    return await client.post("/v1/webhooks", json=payload, headers=ADMIN)


async def test_create_shows_the_secret_once(client: httpx.AsyncClient) -> None:
    response = await create(
        client,
        events=["deployment.failed", "deployment.rolled_back", "deployment.failed"],
        filter={"cluster": "prod", "tag": "team:web", "account_id": "123456789012"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created.pop("secret")
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert created["id"].startswith("wh_")
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["deployment.failed", "deployment.rolled_back"]
    assert created["filter"] == {
        "cluster": "prod",
        "service": None,
        "tag": "team:web",
        "account_id": "123456789012",
        "region": None,
    }
    assert created["active"] is True
    assert created["created_at"].endswith("Z")

    one = await client.get(f"/v1/webhooks/{created['id']}", headers=ADMIN)
    assert one.status_code == 200
    assert one.json() == created
    listed = await client.get("/v1/webhooks", headers=ADMIN)
    assert listed.json() == {"items": [created], "next_cursor": None}
    assert secret not in one.text + listed.text


async def test_a_given_secret_is_kept_and_checked(client: httpx.AsyncClient) -> None:
    good = "whsec_" + base64.b64encode(b"k" * 32).decode()
    response = await create(client, secret=good)
    assert (response.status_code, response.json()["secret"]) == (201, good)
    short = "whsec_" + base64.b64encode(b"k" * 23).decode()
    for bad in ("plain-secret", "whsec_not*base64", short, good + "A"):
        response = await create(client, secret=bad)
        assert response.status_code == 400, bad
        assert response.json()["param"] == "secret"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"events": ["deployment.exploded"]}, "events.0"),
        ({"events": []}, "events"),
        ({"filter": {"tag": "no-colon"}}, "filter.tag"),
        ({"filter": {"region": "mars"}}, "filter.region"),
        ({"filter": {"account_id": "1234"}}, "filter.account_id"),
        ({"filter": {"zone": "us-east-1a"}}, "filter.zone"),
        ({"url": ""}, "url"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await create(client, **body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://ecswatch.dev/problems/invalid-parameter"
    assert response.json()["param"] == param


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/webhooks",
        content=b'{"url": ',
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "the request body is not valid JSON"


async def test_ssrf_guard_refuses_internal_targets(client: httpx.AsyncClient) -> None:
    for url in (
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://93.184.215.14/hook",
        "http:///no-host",
        "http://no-such-host.invalid/hook",
    ):
        response = await create(client, url=url)
        assert response.status_code == 400, url
        body = response.json()
        assert body["type"] == "https://ecswatch.dev/problems/webhook-url-refused", url
        assert body["param"] == "url"
    assert (await client.get("/v1/webhooks", headers=ADMIN)).json()["items"] == []


async def test_private_targets_allowed_when_configured(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = runtime.settings.model_copy(update={"webhook_allow_private": True})
    monkeypatch.setattr(runtime, "settings", allowed)
    response = await create(client, url="http://localhost:9999/hook")
    assert response.status_code == 201, response.text


async def test_delete(client: httpx.AsyncClient) -> None:
    webhook_id = (await create(client)).json()["id"]
    assert (await client.delete(f"/v1/webhooks/{webhook_id}", headers=ADMIN)).status_code == 204
    for response in (
        await client.get(f"/v1/webhooks/{webhook_id}", headers=ADMIN),
        await client.delete(f"/v1/webhooks/{webhook_id}", headers=ADMIN),
        await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=ADMIN),
        await client.post(f"/v1/webhooks/{webhook_id}/test", headers=ADMIN),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_list_pages_oldest_first(client: httpx.AsyncClient) -> None:
    created = [(await create(client)).json()["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(f"/v1/webhooks?{query}", headers=ADMIN)).json()
        seen += [w["id"] for w in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == created


async def test_deliveries_newest_first(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    webhook_id = (await create(client)).json()["id"]
    empty = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=ADMIN)
    assert empty.json() == {"items": [], "next_cursor": None}
    await seed.insert_rows(
        engine,
        "webhook_deliveries",
        [
            {
                "webhook_id": webhook_id,
                "alert_id": None,
                "message_id": "msg_1",
                "event_type": "deployment.failed",
                "attempt": n,
                "status_code": 503 if n < 3 else 200,
                "error": "HTTP 503" if n < 3 else None,
                "attempted_at": seed.at(n),
                "next_attempt_at": seed.at(n + 1) if n < 3 else None,
            }
            for n in (1, 2, 3)
        ],
    )
    first = (
        await client.get(f"/v1/webhooks/{webhook_id}/deliveries?limit=2", headers=ADMIN)
    ).json()
    assert [d["attempt"] for d in first["items"]] == [3, 2]
    assert first["items"][1] == {
        "id": first["items"][1]["id"],
        "webhook_id": webhook_id,
        "alert_id": None,
        "event_type": "deployment.failed",
        "attempt": 2,
        "status_code": 503,
        "error": "HTTP 503",
        "attempted_at": "2025-03-01T10:02:00Z",
        "next_attempt_at": "2025-03-01T10:03:00Z",
    }
    rest = await client.get(
        f"/v1/webhooks/{webhook_id}/deliveries?cursor={first['next_cursor']}", headers=ADMIN
    )
    assert [d["attempt"] for d in rest.json()["items"]] == [1]


async def test_test_delivery_queues_an_outbox_row(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    webhook_id = (await create(client)).json()["id"]
    first = await client.post(f"/v1/webhooks/{webhook_id}/test", headers=ADMIN)
    second = await client.post(f"/v1/webhooks/{webhook_id}/test", headers=ADMIN)
    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == "queued"
    assert first.json()["event_type"] == "webhook.test"
    async with engine.connect() as conn:
        rows = (await conn.execute(select(OutboxItem).order_by(OutboxItem.id))).all()
    assert [row.id for row in rows] == [first.json()["outbox_id"], second.json()["outbox_id"]]
    assert {row.kind for row in rows} == {"webhook"}
    assert {row.status for row in rows} == {"pending"}
    assert len({row.dedupe_key for row in rows}) == 2
    assert rows[0].payload["webhook_id"] == webhook_id
    assert rows[0].payload["event_type"] == "webhook.test"


async def test_format_is_standard_by_default_or_slack(client: httpx.AsyncClient) -> None:
    default = await create(client)
    assert default.json()["format"] == "standard"
    slack = await create(client, format="slack")
    assert (slack.status_code, slack.json()["format"]) == (201, "slack")
    one = await client.get(f"/v1/webhooks/{slack.json()['id']}", headers=ADMIN)
    assert one.json()["format"] == "slack"
    bad = await create(client, format="teams")
    assert bad.status_code == 400


SLACK_TOKEN_PATH = "/services/T0000000/B0000000/abcdefghijklmnopqrstuvwx"


@pytest.mark.parametrize(("size", "status"), [(23, 400), (24, 201), (64, 201), (65, 400)])
async def test_secret_sizes_follow_the_spec(
    client: httpx.AsyncClient, size: int, status: int
) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * size).decode()
    response = await create(client, secret=secret)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["param"] == "secret"


async def test_url_and_secret_are_stored_encrypted(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    url = "https://93.184.215.14" + SLACK_TOKEN_PATH
    created = (await create(client, url=url, format="slack")).json()
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT * FROM webhook_subscriptions"))).mappings().one()
        others = await conn.execute(
            text(
                "SELECT concat_ws(' ', (SELECT string_agg(o::text, ' ') FROM outbox o),"
                " (SELECT string_agg(d::text, ' ') FROM webhook_deliveries d))"
            )
        )
    raw = " ".join(str(v) for v in stored.values())
    assert "abcdefghijklmnopqrstuvwx" not in raw
    assert created["secret"].removeprefix("whsec_") not in raw
    assert "abcdefghijklmnopqrstuvwx" not in str(others.scalar())
    cipher = cipher_for(runtime.settings)
    assert cipher.decrypt(stored["url"]) == url
    assert cipher.decrypt(stored["secret"]) == created["secret"]
    # Read back decrypted, and the list and get routes agree.
    one = (await client.get(f"/v1/webhooks/{created['id']}", headers=ADMIN)).json()
    listed = (await client.get("/v1/webhooks", headers=ADMIN)).json()["items"]
    assert one["url"] == url
    assert [w["url"] for w in listed] == [url]


async def test_rotate_secret_shows_the_new_one_once(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    created = (await create(client)).json()
    before = datetime.now(UTC)
    response = await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=ADMIN)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["id"] == created["id"]
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    overlap = timedelta(seconds=runtime.settings.webhook_secret_overlap_s)
    assert before + overlap <= expires <= datetime.now(UTC) + overlap
    assert overlap == timedelta(hours=24)
    cipher = cipher_for(runtime.settings)
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM webhook_subscriptions"))).mappings().one()
    assert cipher.decrypt(row["secret"]) == rotated["secret"]
    assert cipher.decrypt(row["previous_secret"]) == created["secret"]
    shown = await client.get(f"/v1/webhooks/{created['id']}", headers=ADMIN)
    assert rotated["secret"] not in shown.text


async def test_rotate_secret_needs_admin_and_a_subscription(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = (await create(client)).json()
    denied = await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=READ)
    assert denied.status_code == 403
    missing = await client.post("/v1/webhooks/wh_nope/rotate-secret", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_during_the_overlap_either_secret_verifies(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    runtime: Runtime,
    webhook_receiver: WebhookReceiver,
) -> None:
    created = (await create(client)).json()
    old = created["secret"]
    new = (await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=ADMIN)).json()[
        "secret"
    ]
    cipher = cipher_for(runtime.settings)
    # Point the subscription at the local receiver (the API refuses loopback targets).
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE webhook_subscriptions SET url = :u"),
            {"u": cipher.encrypt(webhook_receiver.expect("/rotating", old))},
        )

    async def deliver() -> Any:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outbox (kind, dedupe_key, payload) VALUES ('webhook', :k,"
                    " jsonb_build_object('webhook_id', CAST(:w AS text), 'event_type',"
                    " 'webhook.test', 'test_id', CAST(:k AS text)))"
                ),
                {"k": f"t-{len(webhook_receiver.deliveries)}", "w": created["id"]},
            )
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            sender = WebhookSender(runtime.sessionmaker, http, allow_private=True, cipher=cipher)
            await Dispatcher(
                engine, runtime.sessionmaker, {OutboxKind.WEBHOOK: sender}
            ).dispatch_once()
        return webhook_receiver.deliveries[-1]

    during = await deliver()
    assert during.verified  # the receiver still knows only the old secret
    signatures = during.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    for secret in (old, new):
        Webhook(secret).verify(during.body, during.headers)  # raises when it does not

    async with engine.begin() as conn:  # the overlap is over
        await conn.execute(
            text("UPDATE webhook_subscriptions SET previous_secret_expires_at = now()")
        )
    after = await deliver()
    assert not after.verified  # the old secret no longer signs
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)
