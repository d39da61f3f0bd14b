"""Clusters, services (list and one), container instances and deployments."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api import seed


@pytest.fixture
async def fleet(engine: AsyncEngine) -> None:
    await seed.insert_rows(
        engine,
        "clusters",
        [seed.cluster("prod"), seed.cluster("staging", status="INACTIVE", running_tasks_count=0)],
    )
    await seed.insert_rows(
        engine,
        "services",
        [
            seed.service("prod", "web"),
            seed.service("prod", "api", launch_type="EC2", deployment_controller="CODE_DEPLOY"),
            seed.service("prod", "old", status="DRAINING"),
            seed.service("staging", "web", desired_count=1),
        ],
    )
    await seed.insert_rows(
        engine,
        "container_instances",
        [
            seed.container_instance("prod", "ci1"),
            seed.container_instance("prod", "ci2", agent_connected=False),
            seed.container_instance("staging", "ci3", status="DRAINING"),
        ],
    )
    await seed.insert_rows(
        engine,
        "deployments",
        [
            seed.deployment("prod", "web", "ecs-svc/1", started_at=seed.at(0)),
            seed.deployment(
                "prod",
                "web",
                "ecs-svc/2",
                outcome="rolled_back",
                reason="ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/1",
                rollback_target="ecs-svc/1",
                failed_tasks=3,
                started_at=seed.at(60),
                updated_at=seed.at(75),
                finished_at=seed.at(75),
            ),
            seed.deployment(
                "prod",
                "api",
                "d-ABCDEF123",
                kind="codedeploy",
                outcome="in_progress",
                started_at=seed.at(90),
                finished_at=None,
            ),
            seed.deployment(
                "staging", "web", "ecs-svc/3", outcome="failed", started_at=seed.at(30)
            ),
            seed.deployment("staging", "web", "ecs-svc/4", outcome="in_progress", started_at=None),
        ],
    )
    await seed.insert_rows(
        engine,
        "resource_tags",
        [
            seed.tags(seed.cluster_arn("prod"), {"env": "prod"}),
            seed.tags(seed.service_arn("prod", "web"), {"team": "web", "tier": "front"}),
            seed.tags(seed.service_arn("staging", "web"), {"team": "web"}),
            seed.tags(seed.instance_arn("prod", "ci2"), {"rack": "b"}),
        ],
    )


async def items(client: httpx.AsyncClient, path: str) -> list[dict[str, object]]:
    response = await client.get(path)
    assert response.status_code == 200, (path, response.text)
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    result: list[dict[str, object]] = body["items"]
    return result


@pytest.mark.usefixtures("fleet")
async def test_clusters(client: httpx.AsyncClient) -> None:
    clusters = await items(client, "/v1/clusters")
    assert clusters == [
        {
            "arn": seed.cluster_arn("prod"),
            "name": "prod",
            "status": "ACTIVE",
            "active_services_count": 2,
            "running_tasks_count": 5,
            "pending_tasks_count": 0,
            "registered_container_instances_count": 1,
            "tags": {"env": "prod"},
            "tags_known": True,
            "container_insights": None,
            "gone_at": None,
            "account_id": seed.ACCOUNT,
            "region": seed.REGION,
        },
        {
            "arn": seed.cluster_arn("staging"),
            "name": "staging",
            "status": "INACTIVE",
            "active_services_count": 2,
            "running_tasks_count": 0,
            "pending_tasks_count": 0,
            "registered_container_instances_count": 1,
            "tags": {},
            "tags_known": False,
            "container_insights": None,
            "gone_at": None,
            "account_id": seed.ACCOUNT,
            "region": seed.REGION,
        },
    ]


SERVICE_CASES = [
    ("", ["prod/api", "prod/old", "prod/web", "staging/web"]),
    ("cluster=prod", ["prod/api", "prod/old", "prod/web"]),
    (f"cluster={quote(seed.cluster_arn('staging'))}", ["staging/web"]),
    ("status=DRAINING", ["prod/old"]),
    ("launch_type=EC2", ["prod/api"]),
    ("tag=team:web", ["prod/web", "staging/web"]),
    ("tag=team:web&tag=tier:front", ["prod/web"]),
    ("cluster=staging&tag=tier:front", []),
]


@pytest.mark.usefixtures("fleet")
async def test_services_and_filters(client: httpx.AsyncClient) -> None:
    services = await items(client, "/v1/services")
    web = next(s for s in services if s["arn"] == seed.service_arn("prod", "web"))
    assert web == {
        "arn": seed.service_arn("prod", "web"),
        "name": "web",
        "cluster": "prod",
        "cluster_arn": seed.cluster_arn("prod"),
        "status": "ACTIVE",
        "desired_count": 2,
        "running_count": 2,
        "pending_count": 0,
        "launch_type": "FARGATE",
        "task_definition": f"arn:aws:ecs:{seed.REGION}:{seed.ACCOUNT}:task-definition/web:1",
        "deployment_controller": "ECS",
        "tags": {"team": "web", "tier": "front"},
        "tags_known": True,
        "updated_at": "2025-03-01T10:00:00Z",
        "gone_at": None,
        "account_id": seed.ACCOUNT,
        "region": seed.REGION,
    }
    for query, expected in SERVICE_CASES:
        found = await items(client, f"/v1/services?{query}")
        assert [f"{s['cluster']}/{s['name']}" for s in found] == expected, query
    for query, param in [
        ("status=GONE", "status"),
        ("tag=x", "tag"),
        ("launch_type=x", "launch_type"),
    ]:
        response = await client.get(f"/v1/services?{query}")
        assert (response.status_code, response.json()["param"]) == (400, param), query


@pytest.mark.usefixtures("fleet")
async def test_one_service_with_recent_deployments(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/services/prod/web")
    assert response.status_code == 200
    body = response.json()
    assert body["arn"] == seed.service_arn("prod", "web")
    assert body["tags"] == {"team": "web", "tier": "front"}
    assert [d["id"] for d in body["deployments"]] == ["ecs-svc/2", "ecs-svc/1"]
    rolled_back = body["deployments"][0]
    assert rolled_back == {
        "id": "ecs-svc/2",
        "cluster": "prod",
        "cluster_arn": seed.cluster_arn("prod"),
        "service": "web",
        "service_arn": seed.service_arn("prod", "web"),
        "kind": "rolling",
        "outcome": "rolled_back",
        "reason": "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/1",
        "task_definition": f"arn:aws:ecs:{seed.REGION}:{seed.ACCOUNT}:task-definition/web:1",
        "rollback_target": "ecs-svc/1",
        "started_at": "2025-03-01T11:00:00Z",
        "updated_at": "2025-03-01T11:15:00Z",
        "finished_at": "2025-03-01T11:15:00Z",
        "failed_tasks": 3,
        "stuck": False,
        "strategy": None,
        "account_id": seed.ACCOUNT,
        "region": seed.REGION,
    }
    missing = await client.get("/v1/services/prod/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_one_service_keeps_only_ten_deployments(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await seed.insert_rows(engine, "services", [seed.service("prod", "web")])
    await seed.insert_rows(
        engine,
        "deployments",
        [
            seed.deployment("prod", "web", f"ecs-svc/{i:02d}", started_at=seed.at(i))
            for i in range(15)
        ],
    )
    body = (await client.get("/v1/services/prod/web")).json()
    assert [d["id"] for d in body["deployments"]] == [f"ecs-svc/{i:02d}" for i in range(14, 4, -1)]


INSTANCE_CASES = [
    ("", ["ci1", "ci2", "ci3"]),
    ("cluster=prod", ["ci1", "ci2"]),
    (f"cluster={quote(seed.cluster_arn('prod'))}", ["ci1", "ci2"]),
    ("status=DRAINING", ["ci3"]),
    ("agent_connected=false", ["ci2"]),
    ("agent_connected=true&cluster=prod", ["ci1"]),
]


@pytest.mark.usefixtures("fleet")
async def test_container_instances_and_filters(client: httpx.AsyncClient) -> None:
    found = await items(client, "/v1/container-instances?agent_connected=false")
    assert found == [
        {
            "arn": seed.instance_arn("prod", "ci2"),
            "ec2_instance_id": "i-ci2",
            "cluster": "prod",
            "cluster_arn": seed.cluster_arn("prod"),
            "status": "ACTIVE",
            "agent_connected": False,
            "running_tasks_count": 1,
            "pending_tasks_count": 0,
            "registered_resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}],
            "remaining_resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024}],
            "version": 7,
            "attributes": [{"name": "ecs.os-type", "value": "linux"}],
            "tags": {"rack": "b"},
            "tags_known": True,
            "updated_at": "2025-03-01T10:00:00Z",
            "health_status": None,
            "gone_at": None,
            "account_id": seed.ACCOUNT,
            "region": seed.REGION,
        }
    ]
    for query, expected in INSTANCE_CASES:
        found = await items(client, f"/v1/container-instances?{query}")
        assert [str(i["arn"]).rsplit("/", 1)[1] for i in found] == expected, query
    for query, param in [("status=GONE", "status"), ("agent_connected=maybe", "agent_connected")]:
        response = await client.get(f"/v1/container-instances?{query}")
        assert (response.status_code, response.json()["param"]) == (400, param), query


DEPLOYMENT_CASES = [
    # Newest start first; a deployment whose start is unknown comes first (NULLS FIRST).
    ("", ["ecs-svc/4", "d-ABCDEF123", "ecs-svc/2", "ecs-svc/3", "ecs-svc/1"]),
    ("cluster=prod", ["d-ABCDEF123", "ecs-svc/2", "ecs-svc/1"]),
    (f"cluster={quote(seed.cluster_arn('staging'))}", ["ecs-svc/4", "ecs-svc/3"]),
    ("service=web", ["ecs-svc/4", "ecs-svc/2", "ecs-svc/3", "ecs-svc/1"]),
    ("cluster=prod&service=web", ["ecs-svc/2", "ecs-svc/1"]),
    (f"service={quote(seed.service_arn('staging', 'web'))}", ["ecs-svc/4", "ecs-svc/3"]),
    ("outcome=rolled_back", ["ecs-svc/2"]),
    ("outcome=in_progress", ["ecs-svc/4", "d-ABCDEF123"]),
    ("outcome=stopped", []),
]


@pytest.mark.usefixtures("fleet")
async def test_deployments_and_filters(client: httpx.AsyncClient) -> None:
    for query, expected in DEPLOYMENT_CASES:
        found = await items(client, f"/v1/deployments?{query}")
        assert [d["id"] for d in found] == expected, query
    codedeploy = (await items(client, "/v1/deployments?cluster=prod&service=api"))[0]
    assert (codedeploy["kind"], codedeploy["finished_at"]) == ("codedeploy", None)
    response = await client.get("/v1/deployments?outcome=exploded")
    assert response.status_code == 400
    assert response.json()["param"] == "outcome"


@pytest.mark.usefixtures("fleet")
async def test_deployment_pages_cross_null_start(client: httpx.AsyncClient) -> None:
    # Pages of one: the keyset must step from a NULL start to the dated ones.
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=1" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(f"/v1/deployments?{query}")).json()
        seen += [d["id"] for d in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == DEPLOYMENT_CASES[0][1]
