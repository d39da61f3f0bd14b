"""Keyset cursors: malformed ones are 400, and paging sees every row exactly once
even while rows are inserted between page fetches."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.pagination import Keyset
from service.errors import InvalidInputError
from tests.api import seed
from tests.api.conftest import ADMIN

KEYSET = Keyset("things", ("time", "str", "int"))


def test_cursor_round_trip() -> None:
    key = (datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC), "arn:x/y", 42)
    cursor = KEYSET.encode(key)
    assert "=" not in cursor
    assert KEYSET.decode(cursor) == key
    assert KEYSET.decode(None) is None


def _b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "not base64!",
        _b64(b"\xff\xfe not utf-8"),
        _b64(b"not json"),
        _b64([1, 2, 3]),
        _b64({"k": "other", "v": ["2025-03-01T10:00:00+00:00", "a", 1]}),
        _b64({"k": "things", "v": ["2025-03-01T10:00:00+00:00", "a"]}),
        _b64({"k": "things", "v": ["2025-03-01T10:00:00", "a", 1]}),
        _b64({"k": "things", "v": ["yesterday", "a", 1]}),
        _b64({"k": "things", "v": ["2025-03-01T10:00:00+00:00", 5, 1]}),
        _b64({"k": "things", "v": ["2025-03-01T10:00:00+00:00", "a", True]}),
        _b64({"k": "things", "v": ["2025-03-01T10:00:00+00:00", "a", 1.5]}),
        _b64({"k": "things", "v": [None, "a", 1]}),
        _b64({"k": "things"}),
    ],
)
def test_malformed_cursors_name_the_cursor(cursor: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        KEYSET.decode(cursor)
    assert caught.value.param == "cursor"


async def test_malformed_cursor_is_a_400_problem(client: httpx.AsyncClient) -> None:
    for route in ("tasks", "services", "events", "deployments", "metrics", "alerts", "clusters"):
        response = await client.get(f"/v1/{route}?cursor=garbage")
        assert response.status_code == 400, route
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["param"] == "cursor"


RowMaker = Callable[[int, random.Random], dict[str, Any]]


def _task(i: int, rng: random.Random) -> dict[str, Any]:
    # Random ids put new rows before and after the cursor.
    return seed.task("prod", f"{rng.getrandbits(64):016x}-{i}")


def _event(i: int, rng: random.Random) -> dict[str, Any]:
    # Few distinct times: many ties that only the id breaks.
    return seed.event(f"{rng.getrandbits(32):08x}-{i}", rng.randrange(20))


def _metric(i: int, rng: random.Random) -> dict[str, Any]:
    return seed.metric(rng.randrange(20), dimensions_key=f"k{i}", value=float(i))


def _deployment(i: int, rng: random.Random) -> dict[str, Any]:
    started = None if rng.random() < 0.1 else seed.at(rng.randrange(20))
    return seed.deployment("prod", "web", f"ecs-svc/{rng.getrandbits(32)}-{i}", started_at=started)


def _service(i: int, rng: random.Random) -> dict[str, Any]:
    return seed.service("prod", f"svc-{rng.getrandbits(32):08x}-{i}")


def _instance(i: int, rng: random.Random) -> dict[str, Any]:
    return seed.container_instance("prod", f"{rng.getrandbits(32):08x}-{i}")


def _cluster(i: int, rng: random.Random) -> dict[str, Any]:
    return seed.cluster(f"c-{rng.getrandbits(32):08x}-{i}")


def _alert(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"alrt_{rng.getrandbits(32):08x}_{i}",
        "type": "deployment.failed",
        "dedupe_key": f"k{i}",
        "summary": "failed",
        "payload": {},
        "created_at": seed.at(rng.randrange(20)),
    }


def _quarantined(i: int, rng: random.Random) -> dict[str, Any]:
    return {"body_sha256": f"{i}-{rng.random()}", "body": "x", "error": "not JSON"}


# (route, table, row maker, item identity, identity of a seeded row)
CASES: list[tuple[str, str, RowMaker, str, str]] = [
    ("/v1/tasks", "tasks", _task, "arn", "arn"),
    ("/v1/events", "raw_events", _event, "id", "id"),
    ("/v1/metrics", "metric_points", _metric, "value", "value"),
    ("/v1/deployments", "deployments", _deployment, "id", "id"),
    ("/v1/services", "services", _service, "arn", "arn"),
    ("/v1/container-instances", "container_instances", _instance, "arn", "arn"),
    ("/v1/clusters", "clusters", _cluster, "name", "name"),
    ("/v1/alerts", "alerts", _alert, "id", "id"),
    ("/v1/quarantine", "quarantine", _quarantined, "body", "body"),
]


@pytest.mark.parametrize(
    ("route", "table", "make", "item_key", "row_key"), CASES, ids=[c[0] for c in CASES]
)
async def test_every_row_exactly_once_while_inserting(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    route: str,
    table: str,
    make: RowMaker,
    item_key: str,
    row_key: str,
) -> None:
    rng = random.Random(route)
    counter = iter(range(10**6))
    if table == "quarantine":
        # Bodies are unique per row here, so they identify rows.
        original = [{**make(next(counter), rng), "body": f"seeded-{i}"} for i in range(120)]
    else:
        original = [make(next(counter), rng) for _ in range(120)]
    await seed.insert_rows(engine, table, original)

    seen: list[Any] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=7" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(f"{route}?{query}", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item[item_key] for item in body["items"]]
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            break
        # New rows between pages: some sort before the cursor, some after.
        fresh = [make(next(counter), rng) for _ in range(3)]
        if table == "quarantine":
            fresh = [{**row, "body": f"fresh-{pages}-{j}"} for j, row in enumerate(fresh)]
        await seed.insert_rows(engine, table, fresh)
        assert pages < 200, "pagination does not end"

    counts = Counter(seen)
    assert [key for key, n in counts.items() if n > 1] == [], "a row was returned twice"
    expected = {row[row_key] for row in original}
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} seeded rows never returned"
