"""No N+1: the number of SQL statements per request does not grow with the page.

Counts every statement the app sends through ``before_cursor_execute`` on the
runtime's engine, for full pages of rows that all carry tags.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.queries import DIRECT_READ_LISTENERS
from service.config import Settings
from service.runtime import Runtime
from tests.api import seed
from tests.api.conftest import ADMIN

ROWS = 60


@contextmanager
def count_statements(runtime: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def record_direct(statement: str, args: Sequence[Any]) -> None:
        statements.append(statement)

    # The API reads through the runtime's read engine, most statements straight
    # through the driver (service.api.queries.fetch_dicts).
    sync_engine = runtime.read_engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    DIRECT_READ_LISTENERS.append(record_direct)
    try:
        yield statements
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
        DIRECT_READ_LISTENERS.remove(record_direct)


async def seed_everything(engine: AsyncEngine, settings: Settings) -> str:
    clusters = [seed.cluster(f"c{i:02d}") for i in range(ROWS)]
    services = [seed.service("prod", f"s{i:02d}") for i in range(ROWS)]
    tasks = [seed.task("prod", f"t{i:02d}", service="s01") for i in range(ROWS)]
    instances = [seed.container_instance("prod", f"ci{i:02d}") for i in range(ROWS)]
    await seed.insert_rows(engine, "clusters", clusters)
    await seed.insert_rows(engine, "services", services)
    await seed.insert_rows(engine, "tasks", tasks)
    await seed.insert_rows(engine, "container_instances", instances)
    arns = [r["arn"] for r in clusters + services + tasks + instances]
    await seed.insert_rows(engine, "resource_tags", [seed.tags(a, {"team": "web"}) for a in arns])
    await seed.insert_rows(
        engine,
        "deployments",
        [
            seed.deployment("prod", "s01", f"ecs-svc/{i}", started_at=seed.at(i))
            for i in range(ROWS)
        ],
    )
    await seed.insert_rows(engine, "raw_events", [seed.event(f"e{i}", i) for i in range(ROWS)])
    await seed.insert_rows(
        engine, "metric_points", [seed.metric(i, dimensions_key=f"k{i}") for i in range(ROWS)]
    )
    await seed.insert_rows(
        engine,
        "alerts",
        [
            {
                "id": f"a{i}",
                "type": "deployment.failed",
                "dedupe_key": f"a{i}",
                "summary": "x",
                "payload": {},
            }
            for i in range(ROWS)
        ],
    )
    await seed.insert_rows(
        engine,
        "webhook_subscriptions",
        [seed.webhook(settings, f"w{i}", "https://93.184.215.14/") for i in range(ROWS)],
    )
    await seed.insert_rows(
        engine,
        "webhook_deliveries",
        [
            {
                "webhook_id": "w1",
                "alert_id": f"a{i}",
                "message_id": f"m{i}",
                "event_type": "deployment.failed",
                "attempt": 1,
                "status_code": 200,
            }
            for i in range(ROWS)
        ],
    )
    await seed.insert_rows(
        engine,
        "quarantine",
        [{"body_sha256": str(i), "body": "x", "error": "e"} for i in range(ROWS)],
    )
    return "w1"


# (path, most statements allowed): one for the page (tags are joined in); routes
# that also need a second, page-wide lookup are allowed exactly one more.
BUDGET = [
    (f"/v1/clusters?limit={ROWS}", 1),
    (f"/v1/services?limit={ROWS}", 1),
    (f"/v1/services?limit={ROWS}&tag=team:web&cluster=prod", 1),
    ("/v1/services/prod/s01", 2),
    (f"/v1/tasks?limit={ROWS}", 1),
    (f"/v1/tasks?limit={ROWS}&tag=team:web&service=s01&since=2025-01-01T00:00:00Z", 1),
    # A cluster name is first looked up in clusters (its ARN orders the scan).
    (f"/v1/tasks?limit={ROWS}&cluster=prod", 2),
    ("/v1/tasks/t01", 1),
    (f"/v1/container-instances?limit={ROWS}", 1),
    (f"/v1/deployments?limit={ROWS}", 1),
    (f"/v1/events?limit={ROWS}", 1),
    (f"/v1/metrics?limit={ROWS}", 1),
    (f"/v1/alerts?limit={ROWS}", 2),
    (f"/v1/quarantine?limit={ROWS}", 1),
    (f"/v1/webhooks?limit={ROWS}", 1),
    (f"/v1/webhooks/w1/deliveries?limit={ROWS}", 1),
]


async def test_statements_per_request(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    await seed_everything(engine, runtime.settings)
    for path, budget in BUDGET:
        with count_statements(runtime) as statements:
            response = await client.get(path, headers=ADMIN)
        assert response.status_code == 200, (path, response.text)
        items = response.json().get("items")
        # Every row matches every filter here: a page that came back short (say,
        # a broken tag filter) would meet the budget without proving anything.
        if items is not None and "limit=" in path:
            assert len(items) == ROWS, path
        assert 0 < len(statements) <= budget, (path, statements)
