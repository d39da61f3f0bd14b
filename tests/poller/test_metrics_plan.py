"""The GetMetricData plan and the point rows, as plain tables (no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.aws.scopes import Scope
from service.poller.metrics import (
    ALB,
    ECS,
    INSIGHTS,
    ClusterTarget,
    ServiceTarget,
    TargetGroupTarget,
    load_balancer_dimension,
    plan_queries,
    point_rows,
    target_group_dimension,
    window,
)


def test_plan_covers_every_namespace_and_level() -> None:
    batches = plan_queries(
        [ClusterTarget("prod")],
        [ServiceTarget("prod", "web", container_insights=True), ServiceTarget("prod", "api")],
        [
            TargetGroupTarget("prod", "web", "targetgroup/blue/1", "app/lb/9"),
            TargetGroupTarget("prod", "web", "targetgroup/green/2", "app/lb/9"),
        ],
    )
    assert len(batches) == 1
    queries = batches[0]
    by_ns: dict[str, int] = {}
    for q in queries:
        by_ns[q.namespace] = by_ns.get(q.namespace, 0) + 1
    # cluster 4 + two services 4 each; insights only for web; 7 per target group.
    assert by_ns == {ECS: 12, INSIGHTS: 11, ALB: 14}
    assert len({q.id for q in queries}) == len(queries)
    alb = [q for q in queries if q.namespace == ALB]
    assert {dict(q.dimensions)["TargetGroup"] for q in alb} == {
        "targetgroup/blue/1",
        "targetgroup/green/2",
    }
    assert {(q.cluster, q.service) for q in alb} == {("prod", "web")}
    stats = {(q.name, q.statistic) for q in alb}
    assert ("HealthyHostCount", "Minimum") in stats
    assert ("UnHealthyHostCount", "Maximum") in stats
    assert ("HTTPCode_Target_5XX_Count", "Sum") in stats
    assert ("TargetResponseTime", "Average") in stats
    cluster_level = [q for q in queries if q.service is None]
    assert {dict(q.dimensions)["ClusterName"] for q in cluster_level} == {"prod"}
    assert len(cluster_level) == 4


@pytest.mark.parametrize(
    ("services", "expected"), [(124, [500]), (125, [500, 4]), (250, [500, 500, 4])]
)
def test_plan_batches_at_500(services: int, expected: list[int]) -> None:
    batches = plan_queries(
        [ClusterTarget("c")], [ServiceTarget("c", f"s{i}") for i in range(services)], []
    )
    assert [len(b) for b in batches] == expected
    for batch in batches:
        assert len({q.id for q in batch}) == len(batch)


def test_window_is_aligned_and_reaches_back() -> None:
    start, end = window(datetime(2026, 3, 1, 10, 7, 31, tzinfo=UTC))
    assert end == datetime(2026, 3, 1, 10, 7, tzinfo=UTC)
    assert start == datetime(2026, 3, 1, 10, 2, tzinfo=UTC)


def test_dimensions_of_arns() -> None:
    lb = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/web/50dc6c495c0c9188"
    assert load_balancer_dimension(lb) == "app/web/50dc6c495c0c9188"
    assert load_balancer_dimension(lb.replace("/app/", "/net/")) is None
    tg = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/73e2d6bc24d8a067"
    assert target_group_dimension(tg) == "targetgroup/blue/73e2d6bc24d8a067"


def test_point_rows_carry_cluster_and_service_and_dedupe() -> None:
    [batch] = plan_queries([], [ServiceTarget("prod", "web")], [])
    at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    results = [
        {"Id": batch[0].id, "Timestamps": [at, at], "Values": [1.0, 2.0]},
        {"Id": "unknown", "Timestamps": [at], "Values": [3.0]},
    ]
    rows = point_rows(batch, results, Scope("111111111111", "eu-west-1"))
    assert len(rows) == 1
    assert rows[0]["cluster_name"] == "prod"
    assert rows[0]["service_name"] == "web"
    assert rows[0]["dimensions_key"] == "ClusterName=prod;ServiceName=web"
    assert rows[0]["value"] == 2.0
    assert (rows[0]["account_id"], rows[0]["region"]) == ("111111111111", "eu-west-1")
