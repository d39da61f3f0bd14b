"""``/v1/alerts`` with delivery counts, and ``/v1/quarantine`` (admin)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api import seed
from tests.api.conftest import ADMIN


def alert(alert_id: str, minutes: float) -> dict[str, Any]:
    return {
        "id": alert_id,
        "type": "deployment.failed",
        "dedupe_key": f"deployment.failed:{alert_id}",
        "cluster_name": "prod",
        "service_name": "web",
        "deployment_id": f"ecs-svc/{alert_id}",
        "summary": f"deployment {alert_id} failed",
        "payload": {"type": "deployment.failed"},
        "created_at": seed.at(minutes),
    }


def attempt(webhook: str, alert_id: str, n: int, status: int | None, retry: bool) -> dict[str, Any]:
    return {
        "webhook_id": webhook,
        "alert_id": alert_id,
        "message_id": f"msg_{alert_id}_{webhook}",
        "event_type": "deployment.failed",
        "attempt": n,
        "status_code": status,
        "error": None if status and status < 300 else "boom",
        "attempted_at": seed.at(n),
        "next_attempt_at": seed.at(n + 1) if retry else None,
    }


async def test_alerts_count_deliveries_per_subscription(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed.insert_rows(engine, "alerts", [alert("a1", 1), alert("a2", 2), alert("a3", 3)])
    await seed.insert_rows(
        engine,
        "webhook_subscriptions",
        [
            {"id": w, "url": "https://hooks.example.com", "secret": "whsec_x", "events": []}
            for w in ("w1", "w2", "w3", "w4")
        ],
    )
    await seed.insert_rows(
        engine,
        "webhook_deliveries",
        [
            # a1/w1: failed once, then delivered -> delivered.
            attempt("w1", "a1", 1, 500, True),
            attempt("w1", "a1", 2, 204, False),
            # a1/w2: failing, retry scheduled -> pending.
            attempt("w2", "a1", 1, None, True),
            # a1/w3: retry budget spent -> failed.
            attempt("w3", "a1", 1, 503, True),
            attempt("w3", "a1", 2, 410, False),
            # a2/w1: delivered at once.
            attempt("w1", "a2", 1, 200, False),
        ],
    )
    await seed.insert_rows(
        engine,
        "outbox",
        [
            # a1/w4 and a2/w2 are queued and not yet attempted -> pending.
            {
                "kind": "webhook",
                "dedupe_key": "k1",
                "payload": {"alert_id": "a1", "webhook_id": "w4"},
            },
            {
                "kind": "webhook",
                "dedupe_key": "k2",
                "payload": {"alert_id": "a2", "webhook_id": "w2"},
            },
            # Already attempted (a1/w1): the attempt log decides, not counted twice.
            {
                "kind": "webhook",
                "dedupe_key": "k3",
                "payload": {"alert_id": "a1", "webhook_id": "w1"},
            },
            # Delivered outbox rows and other kinds do not count as pending.
            {
                "kind": "webhook",
                "dedupe_key": "k4",
                "status": "delivered",
                "payload": {"alert_id": "a3", "webhook_id": "w1"},
            },
            {"kind": "datadog_event", "dedupe_key": "k5", "payload": {"alert_id": "a3"}},
        ],
    )
    response = await client.get("/v1/alerts")
    assert response.status_code == 200
    body = response.json()
    assert [a["id"] for a in body["items"]] == ["a3", "a2", "a1"]
    assert body["items"][2] == {
        "id": "a1",
        "type": "deployment.failed",
        "cluster": "prod",
        "service": "web",
        "deployment_id": "ecs-svc/a1",
        "summary": "deployment a1 failed",
        "created_at": "2025-03-01T10:01:00Z",
        "deliveries": {"pending": 2, "delivered": 1, "failed": 1},
        "account_id": None,
        "region": None,
    }
    assert body["items"][1]["deliveries"] == {"pending": 1, "delivered": 1, "failed": 0}
    assert body["items"][0]["deliveries"] == {"pending": 0, "delivered": 0, "failed": 0}
    page = (await client.get("/v1/alerts?limit=2")).json()
    assert [a["id"] for a in page["items"]] == ["a3", "a2"]
    rest = (await client.get(f"/v1/alerts?limit=2&cursor={page['next_cursor']}")).json()
    assert [a["id"] for a in rest["items"]] == ["a1"]
    assert rest["next_cursor"] is None


async def test_quarantine_lists_newest_first_for_admins(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed.insert_rows(
        engine,
        "quarantine",
        [
            {
                "body_sha256": f"sha{i}",
                "body": f"not json {i}",
                "error": "not JSON",
                "first_seen": seed.at(i),
                "last_seen": seed.at(i + 10),
                "count": i + 1,
            }
            for i in range(3)
        ],
    )
    assert (await client.get("/v1/quarantine")).status_code == 403
    response = await client.get("/v1/quarantine?limit=2", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == [
        {
            "id": 3,
            "body": "not json 2",
            "error": "not JSON",
            "first_seen": "2025-03-01T10:02:00Z",
            "last_seen": "2025-03-01T10:12:00Z",
            "count": 3,
        },
        {
            "id": 2,
            "body": "not json 1",
            "error": "not JSON",
            "first_seen": "2025-03-01T10:01:00Z",
            "last_seen": "2025-03-01T10:11:00Z",
            "count": 2,
        },
    ]
    rest = await client.get(f"/v1/quarantine?cursor={body['next_cursor']}", headers=ADMIN)
    assert [m["id"] for m in rest.json()["items"]] == [1]
