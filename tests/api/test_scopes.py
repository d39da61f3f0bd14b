"""The same names in two scopes (account, region): every item says where it is, every
list filters by account_id and region, and a name never stands for one of them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api import seed

OTHER_ACCOUNT = "210987654321"
OTHER_REGION = "eu-west-1"


def elsewhere(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as the same resource names in the other account and region."""
    here, there = f"{seed.REGION}:{seed.ACCOUNT}:", f"{OTHER_REGION}:{OTHER_ACCOUNT}:"
    moved: dict[str, Any] = json.loads(json.dumps(row, default=str).replace(here, there))
    for key, value in row.items():
        if not isinstance(value, str):
            moved[key] = value  # keep times and numbers as they were
        elif key in ("account", "account_id", "region"):
            moved[key] = OTHER_REGION if key == "region" else OTHER_ACCOUNT
    return moved


def alert(alert_id: str, minutes: float, account: str, region: str) -> dict[str, Any]:
    return {
        "id": alert_id,
        "type": "service.placement_failure",
        "dedupe_key": f"k-{alert_id}",
        "cluster_name": "prod",
        "service_name": "web",
        "summary": "prod/web cannot place tasks",
        "payload": {"type": "service.placement_failure", "account_id": account, "region": region},
        "created_at": seed.at(minutes),
    }


@pytest.fixture
async def two_scopes(engine: AsyncEngine) -> None:
    rows: dict[str, list[dict[str, Any]]] = {
        "clusters": [seed.cluster("prod")],
        "services": [seed.service("prod", "web")],
        "tasks": [seed.task("prod", "t1")],
        "container_instances": [seed.container_instance("prod", "ci1")],
        "deployments": [seed.deployment("prod", "web", "ecs-svc/1", started_at=seed.at(0))],
    }
    for table, here in rows.items():
        there = [elsewhere(r) for r in here]
        if table == "deployments":
            there = [{**r, "id": "ecs-svc/2", "started_at": seed.at(5)} for r in there]
        await seed.insert_rows(engine, table, [*here, *there])
    await seed.insert_rows(
        engine,
        "alerts",
        [
            alert("a1", 1, seed.ACCOUNT, seed.REGION),
            alert("a2", 2, OTHER_ACCOUNT, OTHER_REGION),
        ],
    )


async def scopes_of(client: httpx.AsyncClient, path: str) -> list[tuple[str, str]]:
    response = await client.get(path)
    assert response.status_code == 200, (path, response.text)
    return sorted((i["account_id"], i["region"]) for i in response.json()["items"])


HERE = (seed.ACCOUNT, seed.REGION)
THERE = (OTHER_ACCOUNT, OTHER_REGION)


@pytest.mark.usefixtures("two_scopes")
@pytest.mark.parametrize(
    "path",
    [
        "/v1/clusters",
        "/v1/services",
        "/v1/services?cluster=prod",
        "/v1/tasks",
        "/v1/tasks?cluster=prod",
        "/v1/tasks?cluster=prod&service=web",
        "/v1/container-instances?cluster=prod",
        "/v1/deployments?cluster=prod&service=web",
        "/v1/alerts",
    ],
)
async def test_names_match_every_scope_and_the_filters_pick_one(
    client: httpx.AsyncClient, path: str
) -> None:
    sep = "&" if "?" in path else "?"
    assert await scopes_of(client, path) == sorted([HERE, THERE])
    assert await scopes_of(client, f"{path}{sep}account_id={OTHER_ACCOUNT}") == [THERE]
    assert await scopes_of(client, f"{path}{sep}region={seed.REGION}") == [HERE]
    both = f"{path}{sep}account_id={seed.ACCOUNT}&region={OTHER_REGION}"
    assert await scopes_of(client, both) == []


@pytest.mark.usefixtures("two_scopes")
async def test_an_arn_filter_names_one_scope(client: httpx.AsyncClient) -> None:
    other_cluster = elsewhere({"arn": seed.cluster_arn("prod")})["arn"]
    assert await scopes_of(client, f"/v1/services?cluster={quote(other_cluster)}") == [THERE]
    assert await scopes_of(client, f"/v1/tasks?cluster={quote(other_cluster)}") == [THERE]
    service = quote(seed.service_arn("prod", "web"))
    assert await scopes_of(client, f"/v1/deployments?service={service}") == [HERE]


@pytest.mark.usefixtures("two_scopes")
async def test_clusters_of_one_name_page_without_losing_one(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v1/clusters?limit=1")).json()
    assert first["next_cursor"]
    second = (await client.get(f"/v1/clusters?limit=1&cursor={first['next_cursor']}")).json()
    arns = [i["arn"] for i in first["items"] + second["items"]]
    assert sorted(arns) == sorted(
        [seed.cluster_arn("prod"), elsewhere({"arn": seed.cluster_arn("prod")})["arn"]]
    )


@pytest.mark.usefixtures("two_scopes")
async def test_one_service_by_names_of_two_scopes_is_409_until_a_scope_is_given(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/services/prod/web")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://ecswatch.dev/problems/ambiguous-name"
    assert problem["scopes"] == sorted(
        [
            {"account_id": a, "region": r, "service_arn": arn}
            for (a, r), arn in (
                (HERE, seed.service_arn("prod", "web")),
                (THERE, elsewhere({"arn": seed.service_arn("prod", "web")})["arn"]),
            )
        ],
        key=lambda s: (s["account_id"], s["region"]),
    )

    for query, scope, deployment in (
        (f"account_id={seed.ACCOUNT}", HERE, "ecs-svc/1"),
        (f"region={OTHER_REGION}", THERE, "ecs-svc/2"),
        (f"account_id={OTHER_ACCOUNT}&region={OTHER_REGION}", THERE, "ecs-svc/2"),
    ):
        one = await client.get(f"/v1/services/prod/web?{query}")
        assert one.status_code == 200, (query, one.text)
        body = one.json()
        assert (body["account_id"], body["region"]) == scope
        # Only the deployments of that scope's service, never its namesake's.
        assert [d["id"] for d in body["deployments"]] == [deployment]
        assert (body["deployments"][0]["account_id"], body["deployments"][0]["region"]) == scope

    missing = await client.get(f"/v1/services/prod/web?account_id={seed.ACCOUNT}&region=eu-west-1")
    assert missing.status_code == 404
    bad = await client.get("/v1/services/prod/web?account_id=12")
    assert (bad.status_code, bad.json()["param"]) == (400, "account_id")


@pytest.mark.usefixtures("two_scopes")
async def test_a_deployment_without_a_service_arn_is_of_its_clusters_scope(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    other = elsewhere(seed.deployment("prod", "web", "d-NOARN", started_at=seed.at(9)))
    await seed.insert_rows(engine, "deployments", [{**other, "service_arn": None}])
    # Its own service is gone since; a live namesake in another scope is not it.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE services SET gone_at = now() WHERE arn = :arn"),
            {"arn": elsewhere({"arn": seed.service_arn("prod", "web")})["arn"]},
        )
    response = await client.get("/v1/deployments/d-NOARN")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["service_arn"] == elsewhere({"arn": seed.service_arn("prod", "web")})["arn"]
    assert (body["account_id"], body["region"]) == THERE


@pytest.mark.usefixtures("two_scopes")
async def test_one_deployment_id_of_two_scopes_is_409_until_a_scope_is_given(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Deployment ids are unique only within a scope: the detail route treats an id of
    two scopes like a service's names, with the same problem."""
    here = seed.deployment("prod", "web", "ecs-svc/7", started_at=seed.at(1), outcome="failed")
    there = {**elsewhere(here), "outcome": "succeeded"}
    await seed.insert_rows(engine, "deployments", [here, there])

    response = await client.get("/v1/deployments/ecs-svc/7")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://ecswatch.dev/problems/ambiguous-name"
    assert problem["scopes"] == [
        {"account_id": a, "region": r, "service_arn": arn}
        for (a, r), arn in sorted(
            [
                (HERE, seed.service_arn("prod", "web")),
                (THERE, elsewhere({"arn": seed.service_arn("prod", "web")})["arn"]),
            ]
        )
    ]

    for query, scope, outcome in (
        (f"account_id={seed.ACCOUNT}", HERE, "failed"),
        (f"region={OTHER_REGION}", THERE, "succeeded"),
        (f"account_id={OTHER_ACCOUNT}&region={OTHER_REGION}", THERE, "succeeded"),
    ):
        one = await client.get(f"/v1/deployments/ecs-svc/7?{query}")
        assert one.status_code == 200, (query, one.text)
        body = one.json()
        assert (body["id"], body["outcome"]) == ("ecs-svc/7", outcome)
        assert (body["account_id"], body["region"]) == scope

    # The list shows both, each with its scope; its filters pick one.
    assert await scopes_of(client, "/v1/deployments?cluster=prod&service=web") == sorted(
        [HERE, HERE, THERE, THERE]
    )
    listed = await client.get(f"/v1/deployments?account_id={OTHER_ACCOUNT}")
    assert sorted(i["id"] for i in listed.json()["items"]) == ["ecs-svc/2", "ecs-svc/7"]

    # An id of one scope needs none; a scope that holds no such id is 404.
    assert (await client.get("/v1/deployments/ecs-svc/1")).status_code == 200
    missing = await client.get(f"/v1/deployments/ecs-svc/1?account_id={OTHER_ACCOUNT}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/deployments/ecs-svc/404")).status_code == 404
