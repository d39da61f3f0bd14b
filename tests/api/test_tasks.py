"""``/v1/tasks`` and ``/v1/tasks/{task_id}`` against a seeded database."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api import seed


@pytest.fixture
async def tasks(engine: AsyncEngine) -> None:
    # prod is a known cluster (its name is looked up for its ARN); staging is not.
    await seed.insert_rows(engine, "clusters", [seed.cluster("prod")])
    await seed.insert_rows(
        engine,
        "tasks",
        [
            seed.task("prod", "t1", updated_at=seed.at(10)),
            seed.task(
                "prod",
                "t2",
                last_status="STOPPED",
                desired_status="STOPPED",
                stop_code="EssentialContainerExited",
                stopped_reason="Essential container in task exited",
                stopped_at=seed.at(20),
                updated_at=seed.at(20),
                containers=[{"name": "app", "last_status": "STOPPED", "exit_code": 137}],
                task_definition_arn=f"arn:aws:ecs:{seed.REGION}:{seed.ACCOUNT}:task-definition/web:3",
                cpu="256",
                memory="512",
            ),
            seed.task(
                "prod",
                "t3",
                service="api",
                family="api",
                launch_type="EC2",
                container_instance_arn=seed.instance_arn("prod", "ci1"),
                updated_at=seed.at(30),
            ),
            seed.task("staging", "t4", last_status="PENDING", updated_at=seed.at(40)),
            seed.task("staging", "t5", service=None, launch_type="EXTERNAL", updated_at=None),
        ],
    )
    await seed.insert_rows(
        engine,
        "container_instances",
        [seed.container_instance("prod", "ci1", ec2_instance_id="i-0abc")],
    )
    await seed.insert_rows(
        engine,
        "resource_tags",
        [
            seed.tags(seed.task_arn("prod", "t1"), {"team": "web", "env": "prod"}),
            seed.tags(seed.task_arn("prod", "t2"), {"team": "web", "env": "canary"}),
            seed.tags(seed.task_arn("prod", "t3"), {}, known=False),
        ],
    )


async def ids(client: httpx.AsyncClient, query: str) -> list[str]:
    response = await client.get(f"/v1/tasks?{query}")
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


@pytest.mark.usefixtures("tasks")
async def test_task_fields(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tasks")
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    by_id = {item["id"]: item for item in body["items"]}
    t2 = by_id["t2"]
    assert t2 == {
        "arn": seed.task_arn("prod", "t2"),
        "id": "t2",
        "cluster": "prod",
        "cluster_arn": seed.cluster_arn("prod"),
        "service": "web",
        "service_arn": seed.service_arn("prod", "web"),
        "family": "web",
        "revision": 3,
        "launch_type": "FARGATE",
        "last_status": "STOPPED",
        "desired_status": "STOPPED",
        "health_status": "HEALTHY",
        "stop_code": "EssentialContainerExited",
        "stopped_reason": "Essential container in task exited",
        "version": 4,
        "container_instance_arn": None,
        "availability_zone": "us-east-1a",
        "containers": [
            {
                "name": "app",
                "last_status": "STOPPED",
                "exit_code": 137,
                "reason": None,
                "image": None,
            }
        ],
        "tags": {"team": "web", "env": "canary"},
        "tags_known": True,
        "created_at": "2025-03-01T10:00:00Z",
        "started_at": "2025-03-01T10:01:00Z",
        "stopped_at": "2025-03-01T10:20:00Z",
        "updated_at": "2025-03-01T10:20:00Z",
        "task_definition_arn": f"arn:aws:ecs:{seed.REGION}:{seed.ACCOUNT}:task-definition/web:3",
        "cpu": "256",
        "memory": "512",
        "gone_at": None,
        "account_id": seed.ACCOUNT,
        "region": seed.REGION,
    }
    # No tag row: unknown; a row with known=false: unknown too.
    assert (by_id["t4"]["tags"], by_id["t4"]["tags_known"]) == ({}, False)
    assert (by_id["t3"]["tags"], by_id["t3"]["tags_known"]) == ({}, False)
    # A standalone task has no service and so no service ARN.
    assert (by_id["t5"]["service"], by_id["t5"]["service_arn"]) == (None, None)
    # Ordered by ARN.
    arns = [item["arn"] for item in body["items"]]
    assert arns == sorted(arns)


# Filters as (query string, task ids expected, in ARN order).
FILTER_CASES = [
    ("cluster=prod", ["t1", "t2", "t3"]),
    (f"cluster={quote(seed.cluster_arn('staging'))}", ["t4", "t5"]),
    ("service=web", ["t1", "t2", "t4"]),
    (f"service={quote(seed.service_arn('prod', 'web'))}", ["t1", "t2"]),
    ("cluster=prod&service=api", ["t3"]),
    ("family=api", ["t3"]),
    ("last_status=STOPPED", ["t2"]),
    ("last_status=PENDING", ["t4"]),
    ("desired_status=RUNNING", ["t1", "t3", "t4", "t5"]),
    ("launch_type=EC2", ["t3"]),
    ("launch_type=EXTERNAL", ["t5"]),
    (f"container_instance={quote(seed.instance_arn('prod', 'ci1'))}", ["t3"]),
    ("container_instance=ci1", ["t3"]),
    ("container_instance=i-0abc", ["t3"]),
    ("stop_code=EssentialContainerExited", ["t2"]),
    # Newest SDK stop code: a valid filter even when no task has it.
    ("stop_code=InfrastructureHealth", []),
    ("tag=team:web", ["t1", "t2"]),
    ("tag=team:web&tag=env:prod", ["t1"]),
    ("tag=team:web&tag=env:nope", []),
    ("tag=env:prod&tag=env:canary", []),
    ("since=2025-03-01T10:20:00Z", ["t2", "t3", "t4"]),
    ("since=2025-03-01T11:20:00%2B01:00", ["t2", "t3", "t4"]),
    ("since=2025-03-01T10:20:00.000001Z", ["t3", "t4"]),
    # PostgreSQL keeps microseconds: finer fractions are truncated.
    ("since=2025-03-01T10:20:00.0000009Z", ["t2", "t3", "t4"]),
    ("cluster=prod&last_status=RUNNING&tag=team:web", ["t1"]),
    ("cluster=nope", []),
]


@pytest.mark.usefixtures("tasks")
async def test_task_filters(client: httpx.AsyncClient) -> None:
    # One seeded database for the whole table: seeding per case costs more than the cases.
    for query, expected in FILTER_CASES:
        assert await ids(client, query) == expected, query


# Bad values as (query string, parameter the problem must name).
BAD_CASES = [
    ("since=yesterday", "since"),
    ("since=2025-03-01T10:00:00", "since"),
    ("since=2025-03-01", "since"),
    ("since=1700000000", "since"),
    ("since=2025-02-30T10:00:00Z", "since"),
    ("tag=nocolon", "tag"),
    ("tag=:value", "tag"),
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=ten", "limit"),
    ("last_status=running", "last_status"),
    ("desired_status=GONE", "desired_status"),
    ("launch_type=LAMBDA", "launch_type"),
    ("stop_code=Crashed", "stop_code"),
    ("cursor=not-a-cursor", "cursor"),
    ("service=arn:aws:ecs:us-east-1:1:task/x", "service"),
]


async def test_bad_filters_name_the_parameter(client: httpx.AsyncClient) -> None:
    for query, param in BAD_CASES:
        response = await client.get(f"/v1/tasks?{query}")
        assert response.status_code == 400, query
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"] == "https://ecswatch.dev/problems/invalid-parameter", query
        assert body["param"] == param, query
        assert body["status"] == 400
        assert "Traceback" not in response.text


@pytest.mark.usefixtures("tasks")
async def test_get_task_by_id_and_by_arn(client: httpx.AsyncClient) -> None:
    by_id = await client.get("/v1/tasks/t3")
    assert by_id.status_code == 200
    assert by_id.json()["arn"] == seed.task_arn("prod", "t3")
    assert by_id.json()["container_instance_arn"] == seed.instance_arn("prod", "ci1")
    by_arn = await client.get("/v1/tasks/" + quote(seed.task_arn("prod", "t3"), safe=""))
    assert by_arn.status_code == 200
    assert by_arn.json() == by_id.json()


@pytest.mark.usefixtures("tasks")
async def test_nul_in_a_path_is_400(client: httpx.AsyncClient) -> None:
    for path, param in [("/v1/tasks/a%00b", "task_id"), ("/v1/services/pr%00d/web", "cluster")]:
        response = await client.get(path)
        assert response.status_code == 400, path
        assert response.json()["param"] == param


async def test_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/v1/tasks/nope", "/v1/tasks/" + quote(seed.task_arn("prod", "nope"), safe="")):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "https://ecswatch.dev/problems/not-found"
