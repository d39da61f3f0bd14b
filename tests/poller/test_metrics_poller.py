"""ECS and ALB points put into moto's CloudWatch come back through the poller."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.api.app import create_app
from service.config import ServiceRef
from service.deployments.rows import group_key
from service.enrich.describer import Describer
from service.poller.codedeploy import CodeDeployMapper
from service.poller.metrics import MetricsPoller, window
from service.poller.reconcile import Reconciler
from service.runtime import Runtime
from tests.poller.fleet import Fleet, _client, build_fleet
from tests.rig.aws_proxy import AwsProxy


@pytest.fixture
async def describer(proxied_runtime: Runtime) -> AsyncIterator[Describer]:
    scopes = await proxied_runtime.aws_scopes()
    async with Describer(proxied_runtime.sessionmaker, scopes) as d:
        yield d


def _suffix(arn: str, marker: str) -> str:
    return arn.partition(marker)[2]


async def _put(
    endpoint: str, namespace: str, name: str, dims: dict[str, str], at: datetime, value: float
) -> None:
    async with _client("cloudwatch", endpoint) as cw:
        await cw.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                    "Timestamp": at,
                    "Value": value,
                }
            ],
        )


async def _metrics(runtime: Runtime, query: str) -> list[dict[str, Any]]:
    app = create_app(runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get(f"/v1/metrics?{query}")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


async def test_ecs_and_alb_points_reach_v1_metrics(
    proxied_runtime: Runtime,
    describer: Describer,
    fleet: Fleet,
    aws_proxy: AwsProxy,
    moto_server: Any,
) -> None:
    apis = await proxied_runtime.aws_apis()
    scopes = await proxied_runtime.aws_scopes()
    await Reconciler(proxied_runtime.sessionmaker, scopes, describer).reconcile_one(fleet.cluster)
    now = datetime.now(UTC)
    _, end = window(now)
    at = end - timedelta(minutes=2)
    endpoint = moto_server.endpoint_url
    lb = _suffix(fleet.load_balancer_arn, ":loadbalancer/")
    blue = fleet.blue_tg_arn.rpartition(":")[2]
    green = fleet.green_tg_arn.rpartition(":")[2]
    await _put(endpoint, "AWS/ECS", "CPUUtilization", {"ClusterName": fleet.cluster}, at, 12.5)
    await _put(
        endpoint,
        "AWS/ECS",
        "CPUUtilization",
        {"ClusterName": fleet.cluster, "ServiceName": "web"},
        at,
        40.0,
    )
    # Every Container Insights metric the registry lists is queried and stored.
    insight_values = {
        "RunningTaskCount": 3.0,
        "PendingTaskCount": 1.0,
        "NetworkRxBytes": 2048.0,
        "NetworkTxBytes": 1024.0,
        "StorageReadBytes": 4096.0,
        "StorageWriteBytes": 512.0,
    }
    for name, value in insight_values.items():
        await _put(
            endpoint,
            "ECS/ContainerInsights",
            name,
            {"ClusterName": fleet.cluster, "ServiceName": "web"},
            at,
            value,
        )
    for tg, value in ((blue, 100.0), (green, 7.0)):
        await _put(
            endpoint,
            "AWS/ApplicationELB",
            "RequestCount",
            {"LoadBalancer": lb, "TargetGroup": tg},
            at,
            value,
        )
    codedeploy = CodeDeployMapper(proxied_runtime.sessionmaker, apis, {})
    poller = MetricsPoller(
        proxied_runtime.sessionmaker, scopes, codedeploy, clusters=[fleet.cluster]
    )
    aws_proxy.reset()
    stored = await poller.poll(now)
    assert stored >= 5
    assert aws_proxy.count("GetMetricData") == 1
    assert aws_proxy.count("DescribeTargetGroups") == 1  # both colours in one call
    alb = await _metrics(proxied_runtime, f"namespace=AWS/ApplicationELB&cluster={fleet.cluster}")
    got = {(p["dimensions"]["TargetGroup"], p["name"], p["statistic"]): p for p in alb}
    assert got[(blue, "RequestCount", "Sum")]["value"] == 100.0
    assert got[(green, "RequestCount", "Sum")]["value"] == 7.0
    assert {(p["cluster"], p["service"]) for p in alb} == {(fleet.cluster, "web")}
    ecs = await _metrics(
        proxied_runtime,
        f"namespace=AWS/ECS&cluster={fleet.cluster}&name=CPUUtilization&statistic=Average",
    )
    assert sorted((p["service"] or "", p["value"]) for p in ecs) == [("", 12.5), ("web", 40.0)]
    insights = await _metrics(
        proxied_runtime, f"namespace=ECS/ContainerInsights&service=web&cluster={fleet.cluster}"
    )
    assert {p["name"]: p["value"] for p in insights} == insight_values
    # Re-reading the same minutes updates, never duplicates; the cache spares ELBv2.
    async with proxied_runtime.engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM metric_points"))).scalar()
    await poller.poll(now)
    async with proxied_runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM metric_points"))).scalar() == count
    assert aws_proxy.count("DescribeTargetGroups") == 1


async def test_one_get_metric_data_call_per_500_queries(
    proxied_runtime: Runtime, aws_proxy: AwsProxy
) -> None:
    cluster = f"many{uuid.uuid4().hex[:8]}"
    async with proxied_runtime.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO clusters (arn, name) VALUES (:arn, :name)"),
            {"arn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{cluster}", "name": cluster},
        )
        for i in range(130):
            await conn.execute(
                text("INSERT INTO services (arn, name, cluster_name) VALUES (:arn, :name, :c)"),
                {
                    "arn": f"arn:aws:ecs:us-east-1:123456789012:service/{cluster}/s{i}",
                    "name": f"s{i}",
                    "c": cluster,
                },
            )
    apis = await proxied_runtime.aws_apis()
    scopes = await proxied_runtime.aws_scopes()
    poller = MetricsPoller(
        proxied_runtime.sessionmaker,
        scopes,
        CodeDeployMapper(proxied_runtime.sessionmaker, apis, {}),
    )
    await poller.poll()
    queries = 4 + 130 * 4
    assert aws_proxy.count("GetMetricData") == math.ceil(queries / 500) == 2


async def test_codedeploy_group_maps_to_its_service_and_target_group_pair(
    proxied_runtime: Runtime, describer: Describer, aws_proxy: AwsProxy, moto_server: Any
) -> None:
    fleet = await build_fleet(moto_server.endpoint_url, tasks=0, native_blue_green=False)
    app = f"app{uuid.uuid4().hex[:8]}"
    async with _client("codedeploy", moto_server.endpoint_url) as cd:
        await cd.create_application(applicationName=app, computePlatform="ECS")
        await cd.create_deployment_group(
            applicationName=app,
            deploymentGroupName="dg",
            serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
            ecsServices=[{"clusterName": fleet.cluster, "serviceName": "web"}],
            loadBalancerInfo={
                "targetGroupPairInfoList": [
                    {
                        "targetGroups": [
                            {"name": fleet.blue_tg_arn.split("/")[-2]},
                            {"name": fleet.green_tg_arn.split("/")[-2]},
                        ],
                        "prodTrafficRoute": {"listenerArns": ["x"]},
                    }
                ]
            },
        )
    async with proxied_runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO deployments (id, kind, codedeploy_application, codedeploy_group)"
                " VALUES ('d-1', 'codedeploy', :app, 'dg'), ('d-2', 'codedeploy', 'other', 'dg')"
            ),
            {"app": app},
        )
    apis = await proxied_runtime.aws_apis()
    scopes = await proxied_runtime.aws_scopes()
    await Reconciler(proxied_runtime.sessionmaker, scopes, describer).reconcile_one(fleet.cluster)
    mapper = CodeDeployMapper(
        proxied_runtime.sessionmaker, apis, {"other/dg": ServiceRef("elsewhere", "api")}
    )
    targets = await mapper.map_known_groups()
    # Stored in the scope of the deployments naming the group ('': not recorded).
    assert targets[group_key(app, "dg", ("", ""))].service == ServiceRef(fleet.cluster, "web")
    async with proxied_runtime.engine.connect() as conn:
        rows = dict(
            list(
                await conn.execute(
                    text("SELECT id, cluster_name || '/' || service_name FROM deployments")
                )
            )
        )
    assert rows == {"d-1": f"{fleet.cluster}/web", "d-2": "elsewhere/api"}
    # Cached: a second mapping asks CodeDeploy nothing.
    calls = aws_proxy.count("GetDeploymentGroup")
    await mapper.map_known_groups()
    assert aws_proxy.count("GetDeploymentGroup") == calls
    # Metrics cover both target groups of the pair, though the service names one.
    poller = MetricsPoller(proxied_runtime.sessionmaker, scopes, mapper, clusters=[fleet.cluster])
    _, _, groups = await poller.discover()
    assert {g.target_group for g in groups} == {
        fleet.blue_tg_arn.rpartition(":")[2],
        fleet.green_tg_arn.rpartition(":")[2],
    }
    assert {(g.cluster, g.service) for g in groups} == {(fleet.cluster, "web")}
