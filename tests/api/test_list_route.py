"""ListRoute builds a list statement once per filter shape; requests only bind values."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.routes import deployments, services
from tests.api import seed


async def test_one_statement_per_shape_values_bound(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed.insert_rows(
        engine, "services", [seed.service("prod", "web"), seed.service("stage", "web")]
    )
    services.LIST.statement.cache_clear()
    names = {}
    for cluster in ("prod", "stage", "nowhere"):
        response = await client.get(f"/v1/services?cluster={cluster}")
        assert response.status_code == 200, response.text
        names[cluster] = [item["cluster"] for item in response.json()["items"]]
    # Three values, one shape: built once, then reused; each answer is its own value's.
    assert services.LIST.statement.cache_info().misses == 1
    assert services.LIST.statement.cache_info().hits == 2
    assert names == {"prod": ["prod"], "stage": ["stage"], "nowhere": []}
    # Another shape (an ARN, which also binds the name parsed from it) is another statement.
    arn = "arn:aws:ecs:us-east-1:123456789012:cluster/stage"
    response = await client.get("/v1/services", params={"cluster": arn})
    assert response.status_code == 200, response.text
    assert services.LIST.statement.cache_info().misses == 2


async def test_a_null_leading_key_resumes_within_the_nulls(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    rows = [
        seed.deployment("prod", "web", f"ecs-svc/{i}", started_at=None if i < 3 else seed.at(i))
        for i in range(6)
    ]
    await seed.insert_rows(engine, "deployments", rows)
    deployments.LIST.statement.cache_clear()
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/deployments", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    # Nulls first (newest id first among them), then by started_at, newest first.
    assert seen == [f"ecs-svc/{i}" for i in (2, 1, 0, 5, 4, 3)]
    # First page, after a null key, after a non-null key: three statements.
    assert deployments.LIST.statement.cache_info().misses == 3
