"""``/v1/events`` and ``/v1/metrics``: filters, time bounds and newest-first order."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.routes.events import mask_environment
from tests.api import seed
from tests.api.conftest import ADMIN

SERVICE_ARN = seed.service_arn("prod", "web")


@pytest.fixture
async def events(engine: AsyncEngine) -> None:
    await seed.insert_rows(
        engine,
        "raw_events",
        [
            seed.event("e1", 0),
            seed.event(
                "e2", 10, detail_type="ECS Deployment State Change", resources=[SERVICE_ARN]
            ),
            seed.event("e3", 20, resources=[SERVICE_ARN, seed.task_arn("prod", "x")]),
            # Same time as e3: the id breaks the tie (descending).
            seed.event("e4", 20),
            seed.event(
                "e5",
                30,
                cluster_name="staging",
                cluster_arn=seed.cluster_arn("staging"),
                source="aws.codedeploy",
                detail_type="CodeDeploy Deployment State-change Notification",
                account=None,
                region=None,
            ),
        ],
    )


EVENT_CASES = [
    ("", ["e5", "e4", "e3", "e2", "e1"]),
    ("detail_type=ECS%20Deployment%20State%20Change", ["e2"]),
    ("cluster=prod", ["e4", "e3", "e2", "e1"]),
    (f"cluster={quote(seed.cluster_arn('staging'))}", ["e5"]),
    (f"resource={quote(SERVICE_ARN)}", ["e3", "e2"]),
    ("since=2025-03-01T10:10:00Z", ["e5", "e4", "e3", "e2"]),
    ("until=2025-03-01T10:20:00Z", ["e4", "e3", "e2", "e1"]),
    ("since=2025-03-01T10:10:00Z&until=2025-03-01T10:20:00Z", ["e4", "e3", "e2"]),
    ("since=2025-03-01T11:10:00%2B01:00&until=2025-03-01T10:10:00Z", ["e2"]),
    # An empty window is an empty answer, not an error.
    ("since=2025-03-01T10:20:00Z&until=2025-03-01T10:10:00Z", []),
    ("detail_type=nope", []),
]


@pytest.mark.usefixtures("events")
async def test_events_and_filters(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/events?detail_type=ECS%20Deployment%20State%20Change")).json()
    assert body["items"] == [
        {
            "id": "e2",
            "detail_type": "ECS Deployment State Change",
            "source": "aws.ecs",
            "account": seed.ACCOUNT,
            "region": seed.REGION,
            "time": "2025-03-01T10:10:00Z",
            "resources": [SERVICE_ARN],
            "detail": {"lastStatus": "RUNNING", "clusterArn": seed.cluster_arn("prod")},
            "received_at": body["items"][0]["received_at"],
        }
    ]
    assert body["items"][0]["received_at"].endswith("Z")
    for query, expected in EVENT_CASES:
        response = await client.get(f"/v1/events?{query}")
        assert response.status_code == 200, query
        assert [e["id"] for e in response.json()["items"]] == expected, query


@pytest.mark.usefixtures("events")
async def test_event_pages_break_time_ties_by_id(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(f"/v1/events?{query}")).json()
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["e5", "e4", "e3", "e2", "e1"]


async def test_event_and_metric_bad_values(client: httpx.AsyncClient) -> None:
    cases = [
        ("/v1/events?since=2025-13-01T00:00:00Z", "since"),
        ("/v1/events?until=now", "until"),
        ("/v1/events?limit=1000", "limit"),
        ("/v1/metrics?since=today", "since"),
        ("/v1/metrics?cluster=arn:aws:ecs:us-east-1:1:service/a/b", "cluster"),
        ("/v1/metrics?service=arn:aws:ecs:us-east-1:1:cluster/a", "service"),
        # A cursor of another route is refused rather than misread.
        (
            "/v1/metrics?cursor=eyJrIjoiZXZlbnRzIiwidiI6WyIyMDI1LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwiZSJdfQ",
            "cursor",
        ),
    ]
    for path, param in cases:
        response = await client.get(path)
        assert response.status_code == 400, path
        assert response.json()["param"] == param, path


@pytest.fixture
async def metrics(engine: AsyncEngine) -> None:
    await seed.insert_rows(
        engine,
        "metric_points",
        [
            seed.metric(0),
            seed.metric(1, value=50.0),
            seed.metric(1, statistic="Maximum", value=90.0),
            seed.metric(1, name="MemoryUtilization", value=70.0),
            seed.metric(2, cluster_name="staging", service_name="web", value=5.0),
            seed.metric(
                3,
                namespace="ECS/ContainerInsights",
                name="RunningTaskCount",
                statistic="Sum",
                unit="Count",
                service_name=None,
                dimensions={"ClusterName": "prod"},
                dimensions_key="ClusterName=prod",
                value=9.0,
            ),
        ],
    )


METRIC_CASES = [
    ("", [9.0, 5.0, 70.0, 90.0, 50.0, 12.5]),
    ("namespace=AWS/ECS", [5.0, 70.0, 90.0, 50.0, 12.5]),
    ("name=CPUUtilization", [5.0, 90.0, 50.0, 12.5]),
    ("name=CPUUtilization&statistic=Average", [5.0, 50.0, 12.5]),
    ("cluster=prod", [9.0, 70.0, 90.0, 50.0, 12.5]),
    (f"cluster={quote(seed.cluster_arn('staging'))}", [5.0]),
    ("service=web&cluster=prod&statistic=Maximum", [90.0]),
    (f"service={quote(seed.service_arn('staging', 'web'))}", [5.0]),
    ("since=2025-03-01T10:01:00Z&until=2025-03-01T10:02:00Z", [5.0, 70.0, 90.0, 50.0]),
]


@pytest.mark.usefixtures("metrics")
async def test_metrics_and_filters(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/metrics?namespace=ECS/ContainerInsights")).json()
    assert body == {
        "items": [
            {
                "namespace": "ECS/ContainerInsights",
                "name": "RunningTaskCount",
                "statistic": "Sum",
                "unit": "Count",
                "cluster": "prod",
                "service": None,
                "dimensions": {"ClusterName": "prod"},
                "timestamp": "2025-03-01T10:03:00Z",
                "value": 9.0,
            }
        ],
        "next_cursor": None,
    }
    for query, expected in METRIC_CASES:
        response = await client.get(f"/v1/metrics?{query}")
        assert response.status_code == 200, query
        assert [m["value"] for m in response.json()["items"]] == expected, query


OVERRIDES = {
    "containerOverrides": [
        {
            "name": "app",
            "command": ["run"],
            "environment": [
                {"name": "DB_PASSWORD", "value": "hunter2-in-an-override"},
                {"name": "EMPTY", "value": ""},
            ],
        },
        {"name": "sidecar"},
        {"name": "odd", "environment": "not a list"},
    ],
    "cpu": "256",
}


async def test_environment_overrides_are_masked_for_the_read_scope(
    engine: AsyncEngine, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    detail = {"lastStatus": "RUNNING", "overrides": OVERRIDES}
    await seed.insert_rows(engine, "raw_events", [seed.event("e1", 0, detail=detail)])
    read = (await client.get("/v1/events")).json()["items"][0]["detail"]
    admin = (await anonymous.get("/v1/events", headers=ADMIN)).json()["items"][0]["detail"]
    assert admin == detail
    assert "hunter2" not in json.dumps(read)
    (app, sidecar, odd) = read["overrides"]["containerOverrides"]
    assert app == {
        "name": "app",
        "command": ["run"],
        "environment": [{"name": "DB_PASSWORD", "value": "***"}, {"name": "EMPTY", "value": "***"}],
    }
    assert (sidecar, odd) == (
        OVERRIDES["containerOverrides"][1],
        OVERRIDES["containerOverrides"][2],
    )
    assert read["overrides"]["cpu"] == "256"
    assert read["lastStatus"] == "RUNNING"


@pytest.mark.parametrize(
    "detail",
    [
        {"overrides": None},
        {"overrides": {"containerOverrides": None}},
        {"overrides": {"containerOverrides": [None, 1, "x"]}},
        {"overrides": {"containerOverrides": [{"environment": [None, {"name": "N"}]}]}},
    ],
)
def test_masking_keeps_odd_shapes_as_they_are(detail: dict[str, object]) -> None:
    assert mask_environment(detail) == detail
