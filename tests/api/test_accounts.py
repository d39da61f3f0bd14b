"""``GET /v1/accounts``: each scope's status and counts, keyset-paged."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api import seed

OTHER_REGION = "eu-west-1"
UNWATCHED = "999999999999"


def _elsewhere(
    row: dict[str, object], region: str, account: str = seed.ACCOUNT
) -> dict[str, object]:
    """``row`` moved to another scope (its ARNs rewritten)."""
    moved = dict(row)
    for key in ("arn", "cluster_arn"):
        value = moved.get(key)
        if isinstance(value, str):
            moved[key] = value.replace(f":{seed.REGION}:{seed.ACCOUNT}:", f":{region}:{account}:")
    return moved


@pytest.fixture
async def scopes(engine: AsyncEngine) -> None:
    await seed.insert_rows(
        engine,
        "scopes",
        [
            {
                "account_id": seed.ACCOUNT,
                "region": seed.REGION,
                "monitored": True,
                "last_reconcile_at": seed.at(60),
                "last_metrics_at": seed.at(90),
            },
            {
                "account_id": seed.ACCOUNT,
                "region": OTHER_REGION,
                "monitored": True,
                "last_error": "AwsCallFailed: sts:AssumeRole failed: AccessDenied",
                "last_error_at": seed.at(30),
            },
            {"account_id": UNWATCHED, "region": seed.REGION, "monitored": False},
        ],
    )
    # The same names in every scope: counts follow the ARNs, not the names.
    prod = seed.cluster("prod")
    await seed.insert_rows(
        engine,
        "clusters",
        [
            prod,
            seed.cluster("staging", gone_at=seed.at(0)),
            _elsewhere(prod, OTHER_REGION),
            _elsewhere(prod, seed.REGION, UNWATCHED),
        ],
    )
    await seed.insert_rows(
        engine,
        "services",
        [
            seed.service("prod", "web"),
            seed.service("prod", "api"),
            seed.service("prod", "old", status="INACTIVE"),
            _elsewhere(seed.service("prod", "web"), OTHER_REGION),
        ],
    )
    await seed.insert_rows(
        engine,
        "tasks",
        [
            seed.task("prod", "t1"),
            seed.task("prod", "t2"),
            seed.task("prod", "t3", last_status="STOPPED"),
            _elsewhere(seed.task("prod", "t1"), seed.REGION, UNWATCHED),
        ],
    )


async def test_every_scope_with_its_status_and_counts(
    client: httpx.AsyncClient, scopes: None
) -> None:
    response = await client.get("/v1/accounts")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    by_scope = {(i["account_id"], i["region"]): i for i in body["items"]}
    assert list(by_scope) == [
        (seed.ACCOUNT, OTHER_REGION),
        (seed.ACCOUNT, seed.REGION),
        (UNWATCHED, seed.REGION),
    ]
    home = by_scope[seed.ACCOUNT, seed.REGION]
    assert home["monitored"] is True
    assert home["last_reconcile_at"] == "2025-03-01T11:00:00Z"
    assert home["last_metrics_at"] == "2025-03-01T11:30:00Z"
    assert home["last_error"] is None
    assert (home["clusters_count"], home["services_count"], home["running_tasks_count"]) == (
        1,
        2,
        2,
    )
    failing = by_scope[seed.ACCOUNT, OTHER_REGION]
    assert "AccessDenied" in failing["last_error"]
    assert failing["last_error_at"] == "2025-03-01T10:30:00Z"
    assert failing["last_reconcile_at"] is None
    assert (failing["clusters_count"], failing["services_count"]) == (1, 1)
    assert failing["running_tasks_count"] == 0
    unwatched = by_scope[UNWATCHED, seed.REGION]
    assert unwatched["monitored"] is False
    assert (unwatched["clusters_count"], unwatched["running_tasks_count"]) == (1, 1)


async def test_pages_by_account_then_region(client: httpx.AsyncClient, scopes: None) -> None:
    seen: list[tuple[str, str]] = []
    cursor = None
    for _ in range(5):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/accounts", params=params)).json()
        seen += [(i["account_id"], i["region"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [
        (seed.ACCOUNT, OTHER_REGION),
        (seed.ACCOUNT, seed.REGION),
        (UNWATCHED, seed.REGION),
    ]
