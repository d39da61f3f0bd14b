"""Webhook subscriptions through the API: create, read, list, delete, deliveries, test."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.outbox.models import OutboxItem
from service.runtime import Runtime
from tests.api import seed
from tests.api.conftest import ADMIN

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
