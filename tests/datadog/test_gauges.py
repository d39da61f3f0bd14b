"""The periodic Datadog job: state gauges, CloudWatch points forwarded once, time facts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.datadog.gauges import (
    DatadogJob,
    ServiceState,
    bucket_of,
    forward_points,
    in_progress_by_service,
    point_series,
    service_gauges,
)

NOW = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
CLUSTER_ARN = "arn:aws:ecs:eu-west-1:111122223333:cluster/prod"
SERVICE_ARN = "arn:aws:ecs:eu-west-1:111122223333:service/prod/web"


async def _exec(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def _rows(engine: AsyncEngine, kind: str = "datadog_metrics") -> list[tuple[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT dedupe_key, payload FROM outbox WHERE kind = :k ORDER BY id"), {"k": kind}
        )
        return [(r[0], r[1]) for r in result]


def _by_metric(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in payload["series"]:
        out.setdefault(s["metric"], []).append(s)
    return out


async def _seed(engine: AsyncEngine) -> None:
    await _exec(
        engine,
        "INSERT INTO clusters (arn, name) VALUES (:c, 'prod');",
        c=CLUSTER_ARN,
    )
    await _exec(
        engine,
        "INSERT INTO services (arn, name, cluster_arn, cluster_name, status, desired_count,"
        " running_count, pending_count, launch_type)"
        " VALUES (:s, 'web', :c, 'prod', 'ACTIVE', 4, 3, 1, 'FARGATE')",
        s=SERVICE_ARN,
        c=CLUSTER_ARN,
    )
    await _exec(
        engine,
        "INSERT INTO resource_tags (resource_arn, tags, known) VALUES"
        " (:s, CAST(:t AS jsonb), true)",
        s=SERVICE_ARN,
        t=json.dumps({"team": "payments"}),
    )
    for i, status in enumerate(["RUNNING", "RUNNING", "RUNNING", "PENDING", "STOPPED"]):
        await _exec(
            engine,
            "INSERT INTO tasks (arn, id, cluster_arn, cluster_name, service_name, family,"
            " revision, launch_type, last_status) VALUES"
            " (:a, :i, :c, 'prod', 'web', 'web', 3, 'FARGATE', :st)",
            a=f"arn:aws:ecs:eu-west-1:111122223333:task/prod/t{i}",
            i=f"t{i}",
            c=CLUSTER_ARN,
            st=status,
        )
    await _exec(
        engine,
        "INSERT INTO deployments (id, cluster_name, service_name, outcome)"
        " VALUES ('ecs-svc/1', 'prod', 'web', 'in_progress')",
    )
    for i, connected in enumerate([True, True, False]):
        await _exec(
            engine,
            "INSERT INTO container_instances (arn, cluster_arn, cluster_name, status,"
            " agent_connected, updated_at) VALUES (:a, :c, 'prod', 'ACTIVE', :ok, :at)",
            a=f"arn:aws:ecs:eu-west-1:111122223333:container-instance/prod/ci{i}",
            c=CLUSTER_ARN,
            ok=connected,
            at=NOW - timedelta(minutes=30),
        )


async def test_gauges_from_postgres_once_per_interval(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _seed(engine)
    job = DatadogJob(sessionmaker, interval_s=60)
    await job.run_once(now=NOW)
    await job.run_once(now=NOW + timedelta(seconds=10))  # same interval: no second row
    rows = [r for r in await _rows(engine) if r[0].startswith("dd:gauges:")]
    assert [r[0] for r in rows] == [f"dd:gauges:{bucket_of(NOW, 60)}"]
    by = _by_metric(rows[0][1])
    [desired] = by["service.desired"]
    assert desired["points"] == [[bucket_of(NOW, 60), 4.0]]
    assert "ecs_service:web" in desired["tags"]
    assert "region:eu-west-1" in desired["tags"]
    assert "aws_account:111122223333" in desired["tags"]
    assert desired["resource_tags"] == {"team": "payments"}
    assert by["service.running"][0]["points"][0][1] == 3.0
    assert by["service.pending"][0]["points"][0][1] == 1.0
    assert by["deployments.in_progress"][0]["points"][0][1] == 1.0
    tasks = {
        next(t for t in s["tags"] if t.startswith("task_status:")): s["points"][0][1]
        for s in by["tasks"]
    }
    assert tasks == {"task_status:running": 3.0, "task_status:pending": 1.0}
    instances = {
        next(t for t in s["tags"] if t.startswith("agent_connected:")): s["points"][0][1]
        for s in by["container_instances"]
    }
    assert instances == {"agent_connected:true": 2.0, "agent_connected:false": 1.0}
    assert {s["metric"] for s in rows[0][1]["series"]} >= {
        "self.outbox.pending",
        "self.outbox.oldest_age",
        "self.event_lag",
    }
    # No per-task or per-ARN tag.
    for s in rows[0][1]["series"]:
        assert not any("arn:" in t or "/t0" in t for t in s["tags"])
    await job.run_once(now=NOW + timedelta(seconds=60))
    assert len([r for r in await _rows(engine) if r[0].startswith("dd:gauges:")]) == 2


async def test_disconnected_beyond_grace_is_announced_once(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _seed(engine)
    job = DatadogJob(sessionmaker, interval_s=60)
    await job.run_once(now=NOW)
    await job.run_once(now=NOW + timedelta(minutes=1))
    events = await _rows(engine, "datadog_event")
    assert len(events) == 1
    payload = events[0][1]
    assert payload["title"] == "ECS container instance disconnected: prod"
    assert payload["alert_type"] == "error"
    assert "container-instance/prod/ci2" in payload["text"]
    # It reconnects, then disconnects again: a second episode, a second event.
    await _exec(engine, "UPDATE container_instances SET agent_connected = true")
    await job.run_once(now=NOW + timedelta(minutes=2))
    await _exec(
        engine, "UPDATE container_instances SET agent_connected = false WHERE arn LIKE '%ci2'"
    )
    await job.run_once(now=NOW + timedelta(minutes=3))
    assert len(await _rows(engine, "datadog_event")) == 2


async def test_alerts_are_counted_once_by_type(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for i, kind in enumerate(["deployment.failed", "deployment.failed", "deployment.stuck"]):
        await _exec(
            engine,
            "INSERT INTO alerts (id, type, dedupe_key, cluster_name, service_name, summary,"
            " payload, created_at) VALUES (:i, :t, :i, 'prod', 'web', 's', '{}'::jsonb, :at)",
            i=f"al_{i}",
            t=kind,
            at=NOW - timedelta(minutes=1),
        )
    job = DatadogJob(sessionmaker, interval_s=60)
    await job.run_once(now=NOW)
    await job.run_once(now=NOW + timedelta(minutes=1))
    counts: dict[str, float] = {}
    for _, payload in await _rows(engine):
        for s in payload["series"]:
            if s["metric"] == "alerts":
                key = next(t for t in s["tags"] if t.startswith("alert_type:"))
                counts[key] = counts.get(key, 0) + sum(p[1] for p in s["points"])
    assert counts == {"alert_type:deployment.failed": 2, "alert_type:deployment.stuck": 1}


async def _insert_point(
    engine: AsyncEngine,
    name: str,
    at: datetime,
    value: float,
    *,
    namespace: str = "AWS/ECS",
    dims: dict[str, str] | None = None,
) -> None:
    dims = dims or {"ClusterName": "prod", "ServiceName": "web"}
    await _exec(
        engine,
        "INSERT INTO metric_points (namespace, name, statistic, unit, cluster_name,"
        " service_name, dimensions, dimensions_key, timestamp, value) VALUES"
        " (:ns, :n, 'Average', 'Percent', 'prod', 'web', CAST(:d AS jsonb), :k, :at, :v)",
        ns=namespace,
        n=name,
        d=json.dumps(dims),
        k=";".join(f"{k}={v}" for k, v in sorted(dims.items())),
        at=at,
        v=value,
    )


async def test_cloudwatch_points_are_forwarded_once_with_their_timestamps(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _seed(engine)
    t1 = NOW - timedelta(minutes=3)
    await _insert_point(engine, "CPUUtilization", t1, 41.5)
    await _insert_point(engine, "CPUUtilization", t1 + timedelta(minutes=1), 42.5)
    await _insert_point(engine, "MemoryUtilization", t1, 70.0)
    await _insert_point(engine, "CPUUtilization", NOW - timedelta(hours=3), 1.0)  # too old
    await _insert_point(engine, "SomethingElse", t1, 1.0)  # not in the registry
    alb = {"TargetGroup": "targetgroup/web-blue/abc", "LoadBalancer": "app/lb/123"}
    await _insert_point(
        engine, "UnHealthyHostCount", t1, 2.0, namespace="AWS/ApplicationELB", dims=alb
    )
    assert await forward_points(sessionmaker, now=NOW, limit=4) == 6
    assert await forward_points(sessionmaker, now=NOW) == 0  # nothing new: nothing sent
    rows = [r for r in await _rows(engine) if r[0].startswith("dd:points:")]
    assert len(rows) == 2  # 4 points a row
    series = [s for _, p in rows for s in p["series"]]
    cpu = [s for s in series if s["metric"] == "aws.ecs.service.cpu_utilization"]
    points = sorted(p for s in cpu for p in s["points"])
    assert points == [[int(t1.timestamp()), 41.5], [int(t1.timestamp()) + 60, 42.5]]
    assert "statistic:average" in cpu[0]["tags"]
    assert "launch_type:fargate" in cpu[0]["tags"]
    assert cpu[0]["resource_tags"] == {"team": "payments"}
    [unhealthy] = [s for s in series if s["metric"] == "aws.alb.unhealthy_host_count"]
    # Datadog's ALB integration names: the series join the user's ALB dashboards.
    assert "targetgroup:targetgroup/web-blue/abc" in unhealthy["tags"]
    assert "loadbalancer:app/lb/123" in unhealthy["tags"]
    assert not [t for t in unhealthy["tags"] if t.startswith(("target_group:", "load_balancer:"))]
    # A point stored later is forwarded by the next run, and only it.
    await _insert_point(engine, "CPUUtilization", NOW - timedelta(seconds=30), 50.0)
    assert await forward_points(sessionmaker, now=NOW) == 1
    rows = [r for r in await _rows(engine) if r[0].startswith("dd:points:")]
    assert len(rows) == 3
    assert [s["points"] for s in rows[-1][1]["series"]] == [[[int(NOW.timestamp()) - 30, 50.0]]]


async def test_tasks_of_the_same_names_in_two_scopes_carry_their_own_services_tags(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _seed(engine)  # prod/web in 111122223333, eu-west-1, tagged team=payments
    other_cluster = "arn:aws:ecs:us-east-1:444455556666:cluster/prod"
    other_service = "arn:aws:ecs:us-east-1:444455556666:service/prod/web"
    await _exec(engine, "INSERT INTO clusters (arn, name) VALUES (:c, 'prod')", c=other_cluster)
    await _exec(
        engine,
        "INSERT INTO services (arn, name, cluster_arn, cluster_name, status)"
        " VALUES (:s, 'web', :c, 'prod', 'ACTIVE')",
        s=other_service,
        c=other_cluster,
    )
    await _exec(
        engine,
        "INSERT INTO resource_tags (resource_arn, tags, known)"
        ' VALUES (:s, \'{"team": "search"}\'::jsonb, true)',
        s=other_service,
    )
    await _exec(
        engine,
        "INSERT INTO tasks (arn, id, cluster_arn, cluster_name, service_name, family,"
        " revision, launch_type, last_status) VALUES"
        " (:a, 'o1', :c, 'prod', 'web', 'web', 3, 'FARGATE', 'RUNNING')",
        a="arn:aws:ecs:us-east-1:444455556666:task/prod/o1",
        c=other_cluster,
    )
    await DatadogJob(sessionmaker, interval_s=60).run_once(now=NOW)
    [(_, payload)] = [r for r in await _rows(engine) if r[0].startswith("dd:gauges:")]
    running = {
        next(t for t in s["tags"] if t.startswith("aws_account:")): s
        for s in _by_metric(payload)["tasks"]
        if "task_status:running" in s["tags"]
    }
    assert running["aws_account:111122223333"]["resource_tags"] == {"team": "payments"}
    assert running["aws_account:111122223333"]["points"][0][1] == 3.0
    assert running["aws_account:444455556666"]["resource_tags"] == {"team": "search"}
    assert running["aws_account:444455556666"]["points"][0][1] == 1.0


async def test_points_of_the_same_names_in_two_scopes_keep_their_own_scope(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await _seed(engine)  # prod/web in 111122223333, eu-west-1, tagged team=payments
    other_cluster = "arn:aws:ecs:us-east-1:444455556666:cluster/prod"
    other_service = "arn:aws:ecs:us-east-1:444455556666:service/prod/web"
    await _exec(engine, "INSERT INTO clusters (arn, name) VALUES (:c, 'prod')", c=other_cluster)
    await _exec(
        engine,
        "INSERT INTO services (arn, name, cluster_arn, cluster_name, status, launch_type)"
        " VALUES (:s, 'web', :c, 'prod', 'ACTIVE', 'EC2')",
        s=other_service,
        c=other_cluster,
    )
    await _exec(
        engine,
        "INSERT INTO resource_tags (resource_arn, tags, known)"
        ' VALUES (:s, \'{"team": "search"}\'::jsonb, true)',
        s=other_service,
    )
    at = NOW - timedelta(minutes=2)
    dims = json.dumps({"ClusterName": "prod", "ServiceName": "web"})
    # One series and time in both scopes (and a third scope ecswatch knows nothing of):
    # three points, none overwriting another.
    for account, region, value in (
        ("111122223333", "eu-west-1", 10.0),
        ("444455556666", "us-east-1", 20.0),
        ("777788889999", "ap-south-1", 30.0),
    ):
        await _exec(
            engine,
            "INSERT INTO metric_points (account_id, region, namespace, name, statistic, unit,"
            " cluster_name, service_name, dimensions, dimensions_key, timestamp, value) VALUES"
            " (:a, :r, 'AWS/ECS', 'CPUUtilization', 'Average', 'Percent', 'prod', 'web',"
            " CAST(:d AS jsonb), 'ClusterName=prod;ServiceName=web', :at, :v)",
            a=account,
            r=region,
            d=dims,
            at=at,
            v=value,
        )
    assert await forward_points(sessionmaker, now=NOW) == 3
    series = [s for _, p in await _rows(engine) for s in p["series"]]
    by_account = {
        next(t for t in s["tags"] if t.startswith("aws_account:")): s
        for s in series
        if s["metric"] == "aws.ecs.service.cpu_utilization"
    }
    assert set(by_account) == {
        "aws_account:111122223333",
        "aws_account:444455556666",
        "aws_account:777788889999",
    }
    first = by_account["aws_account:111122223333"]
    assert {"region:eu-west-1", "launch_type:fargate"} <= set(first["tags"])
    assert first["resource_tags"] == {"team": "payments"}
    assert first["points"] == [[int(at.timestamp()), 10.0]]
    second = by_account["aws_account:444455556666"]
    assert {"region:us-east-1", "launch_type:ec2"} <= set(second["tags"])
    assert second["resource_tags"] == {"team": "search"}
    assert second["points"] == [[int(at.timestamp()), 20.0]]
    unknown = by_account["aws_account:777788889999"]
    assert "region:ap-south-1" in unknown["tags"]
    assert not [t for t in unknown["tags"] if t.startswith("launch_type:")]
    assert not unknown.get("resource_tags")


_SERVICE = {"ClusterName": "prod", "ServiceName": "web"}
_CLUSTER = {"ClusterName": "prod"}
_TARGET_GROUP = {"LoadBalancer": "app/lb/123", "TargetGroup": "targetgroup/web/abc"}


@pytest.mark.parametrize(
    ("namespace", "name", "dims", "age_s", "metric", "reason"),
    [
        ("AWS/ECS", "CPUUtilization", _SERVICE, 60, "aws.ecs.service.cpu_utilization", None),
        ("AWS/ECS", "CPUUtilization", _CLUSTER, 60, "aws.ecs.cluster.cpu_utilization", None),
        ("AWS/ECS", "MemoryUtilization", _CLUSTER, 0, "aws.ecs.cluster.memory_utilization", None),
        ("AWS/ECS", "CPUUtilization", _SERVICE, 7_200, None, "too_old"),
        ("AWS/ECS", "NotAMetric", _SERVICE, 60, None, "unregistered"),
        (
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            _TARGET_GROUP,
            0,
            "aws.alb.target_5xx_count",
            None,
        ),
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", _TARGET_GROUP, 0, None, "unregistered"),
        (
            "ECS/ContainerInsights",
            "RunningTaskCount",
            _SERVICE,
            600,
            "aws.ecs.containerinsights.running_task_count",
            None,
        ),
        (
            "ECS/ContainerInsights",
            "StorageWriteBytes",
            _SERVICE,
            0,
            "aws.ecs.containerinsights.storage_write_bytes",
            None,
        ),
    ],
)
def test_point_series_table(
    namespace: str,
    name: str,
    dims: dict[str, str],
    age_s: int,
    metric: str | None,
    reason: str | None,
) -> None:
    row = {
        "namespace": namespace,
        "name": name,
        "statistic": "Sum",
        "cluster_name": "prod",
        "service_name": "web" if "ServiceName" in dims or "TargetGroup" in dims else None,
        "dimensions": dims,
        "timestamp": NOW - timedelta(seconds=age_s),
        "value": 1.0,
    }
    built = point_series([row], now=NOW)
    assert [s["metric"] for s in built.series] == ([metric] if metric else [])
    if reason:
        assert built.dropped == {reason: 1}


def test_service_gauges_skip_unknown_counts_and_report_zero_deployments() -> None:
    state = ServiceState("web", CLUSTER_ARN, "prod", None, None, 2, None, {})
    out = service_gauges([state], {}, 100)
    assert [(s["metric"], s["points"]) for s in out] == [
        ("service.running", [[100, 2.0]]),
        ("deployments.in_progress", [[100, 0.0]]),
    ]


def test_deployments_in_progress_count_for_the_service_of_their_own_scope() -> None:
    other = "arn:aws:ecs:us-east-1:444455556666:cluster/prod"
    here = ServiceState("web", CLUSTER_ARN, "prod", None, None, None, None, {})
    there = ServiceState("web", other, "prod", None, None, None, None, {})
    api = ServiceState("api", CLUSTER_ARN, "prod", None, None, None, None, {})

    def row(
        cluster_arn: str | None, service: str, n: int, scope: tuple[str, str] = ("", "")
    ) -> SimpleNamespace:
        return SimpleNamespace(
            account_id=scope[0],
            region=scope[1],
            cluster_arn=cluster_arn,
            cluster_name="prod",
            service_name=service,
            n=n,
        )

    rows = [
        row(other, "web", 2),
        row(None, "web", 5),  # names only, no scope known, and two scopes have them: nobody's
        row(None, "api", 1),  # names only, one service has them
        # Names only (CodeDeploy's), in a scope: that scope's service of those names.
        row(None, "web", 3, ("444455556666", "us-east-1")),
    ]
    counts = in_progress_by_service([here, there, api], rows)
    assert counts == {(other, "web"): 5, (CLUSTER_ARN, "api"): 1}
    gauges = service_gauges([here, there], counts, 100)
    by_account = {
        next(t for t in g["tags"] if t.startswith("aws_account:")): g["points"][0][1]
        for g in gauges
        if g["metric"] == "deployments.in_progress"
    }
    assert by_account == {"aws_account:111122223333": 0.0, "aws_account:444455556666": 5.0}
