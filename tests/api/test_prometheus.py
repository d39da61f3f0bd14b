"""``GET /metrics``: Prometheus text, outbox gauges refreshed from the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.config import load_settings
from service.runtime import open_runtime
from tests.api import seed


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_outbox_gauges_come_from_the_database(
    anonymous: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    await seed.insert_rows(
        engine,
        "outbox",
        [
            {
                "kind": "webhook",
                "dedupe_key": "a",
                "payload": {},
                "created_at": now - timedelta(hours=2),
            },
            {"kind": "webhook", "dedupe_key": "b", "payload": {}, "created_at": now},
            {"kind": "datadog_metrics", "dedupe_key": "c", "payload": {}, "created_at": now},
            # Delivered and dead rows are not depth, however old.
            {
                "kind": "webhook",
                "dedupe_key": "d",
                "payload": {},
                "status": "delivered",
                "created_at": now - timedelta(days=3),
            },
            {"kind": "datadog_event", "dedupe_key": "e", "payload": {}, "status": "dead"},
        ],
    )
    response = await anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("ecswatch_outbox_depth", (("kind", "webhook"),))] == 2
    assert values[("ecswatch_outbox_depth", (("kind", "datadog_metrics"),))] == 1
    assert values[("ecswatch_outbox_depth", (("kind", "datadog_event"),))] == 0
    age = values[("ecswatch_outbox_oldest_age_seconds", ())]
    assert 7100 < age < 7300
    # Dead rows (retry budget spent) are their own gauge.
    assert values[("ecswatch_outbox_dead", (("kind", "datadog_event"),))] == 1
    assert values[("ecswatch_outbox_dead", (("kind", "webhook"),))] == 0
    # The process's own counters are served too.
    assert "# HELP ecswatch_events_received_total" in response.text


async def test_metrics_answer_while_the_database_is_down(tmp_path: Path) -> None:
    # Port 1 on loopback refuses connections at once.
    settings = load_settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none", data_dir=tmp_path
    )
    async with open_runtime(settings, pool_size=1) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    assert "ecswatch_outbox_depth" in response.text
