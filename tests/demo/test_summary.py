"""The demo's pure parts: the summary's rows and drawing, the curl lines, the CloudWatch points."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime

from rich.console import Console

from service.demo.fleet import EC2_CLUSTER, FARGATE_CLUSTER, SERVICES, Fleet, metric_data
from service.demo.run import alert_line, how_to_try
from service.demo.scopes import (
    OTHER_SCOPES,
    SECOND_ACCOUNT,
    SECOND_REGION,
    DemoScope,
    EdgeFleet,
    edge_events,
)
from service.demo.summary import Numbers, lines, render, rows

NUMBERS = Numbers(
    events_processed=220,
    tasks_by_status={"RUNNING": 11, "STOPPED": 16},
    deployments_by_outcome={"rolled_back": 1, "succeeded": 7},
    container_instances=3,
    metric_points={"AWS/ECS": 168},
    alerts_raised=13,
    alerts_delivered=12,
    failure_causes={"image_pull": 1, "out_of_memory": 1},
    datadog_series=410,
    datadog_points=574,
    datadog_events=20,
    datadog_cloudwatch_names=(
        "ecswatch.aws.alb.request_count",
        "ecswatch.aws.ecs.cluster.cpu_utilization",
    ),
    datadog_cloudwatch_tag_keys=("loadbalancer", "statistic", "targetgroup"),
    aws_calls={"ecs": 82, "cloudwatch": 7},
    scopes={
        "123456789012/us-east-1": "2 clusters, 11 running tasks, 9 deployments, 220 events",
        "210987654321/us-west-2": (
            "1 clusters, 2 running tasks, 1 deployments, 8 events (unmonitored)"
        ),
    },
    elapsed_s=75.2,
)


def test_rows_say_every_number() -> None:
    shown = dict(rows(NUMBERS))
    assert shown["Events processed"] == "220"
    assert shown["Tasks by status"] == "RUNNING 11, STOPPED 16"
    assert shown["Deployments by outcome"] == "rolled_back 1, succeeded 7"
    assert shown["Alerts"] == "13 raised, 12 delivered (verified)"
    assert shown["Failure causes"] == "image_pull 1, out_of_memory 1"
    assert shown["Datadog intake"] == "410 series (574 points), 20 events"
    assert shown["AWS calls by ecswatch"] == "89 (ecs 82, cloudwatch 7)"
    assert shown["Datadog CloudWatch names"] == (
        "ecswatch.aws.alb.request_count, ecswatch.aws.ecs.cluster.cpu_utilization"
    )
    assert shown["Datadog CloudWatch tags"] == "loadbalancer, statistic, targetgroup"
    assert shown["Scope 123456789012/us-east-1"] == (
        "2 clusters, 11 running tasks, 9 deployments, 220 events"
    )
    assert shown["Scope 210987654321/us-west-2"].endswith("(unmonitored)")
    assert dict(rows(Numbers()))["Tasks by status"] == "-"
    assert not [label for label, _ in rows(Numbers()) if label.startswith("Scope ")]


def test_plain_lines_and_the_rich_table_carry_the_same_rows() -> None:
    plain = lines(NUMBERS, title="Summary")
    assert plain[0] == "Summary:"
    assert "  Metric points: AWS/ECS 168" in plain
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(
        render(NUMBERS, title="ecswatch demo", recent=["Webhook: deployment.failed: x"])
    )
    drawn = out.getvalue()
    assert "ecswatch demo (75 s)" in drawn
    for label, value in rows(NUMBERS):
        assert label in drawn
        assert value in drawn
    assert drawn.rstrip().endswith("Webhook: deployment.failed: x")


def test_curl_lines_name_the_token_and_the_docs() -> None:
    shown = how_to_try("http://127.0.0.1:8000", "tok")
    assert shown[0] == "Docs: http://127.0.0.1:8000/docs"
    curls = [line.strip() for line in shown if "curl" in line]
    assert curls
    assert all(
        c.startswith('curl -s -H "Authorization: Bearer tok" \'http://127.0.0.1:8000/v1/')
        for c in curls
    )


def test_curl_lines_include_the_rolled_back_deployment_url_encoded() -> None:
    shown = how_to_try("http://127.0.0.1:8000", "tok")
    assert any(
        line.endswith("'http://127.0.0.1:8000/v1/deployments/ecs-svc%2F1000000000000000003'")
        for line in shown
    )


def test_an_alert_line_ends_with_the_cause_of_a_failure() -> None:
    failed = {
        "type": "deployment.failed",
        "summary": "Deployment ecs-svc/3 of demo/web failed",
        "deployment": {
            "id": "ecs-svc/3",
            "cause": {"category": "image_pull", "summary": "image web:v2 not found"},
        },
    }
    assert alert_line(failed) == (
        "Webhook: deployment.failed ecs-svc/3 (signature verified):"
        " Deployment ecs-svc/3 of demo/web failed | cause: image_pull: image web:v2 not found"
    )
    recovered = {
        "type": "deployment.recovered",
        "summary": "demo/web recovered",
        "deployment": {"id": "ecs-svc/4", "cause": None},
        "recovers": "ecs-svc/3",
    }
    assert alert_line(recovered, verified="") == (
        "Webhook: deployment.recovered ecs-svc/4: demo/web recovered | recovers ecs-svc/3"
    )
    assert "cause" not in alert_line({"type": "task.failed_to_start", "deployment": None})


def test_metric_points_are_whole_minutes_before_now_for_ecs_and_both_colours() -> None:
    fleet = Fleet(
        load_balancer="app/demo/1",
        target_groups={"blue": "targetgroup/b/1", "green": "targetgroup/g/2"},
    )
    at = datetime(2026, 12, 1, 10, 7, 31, tzinfo=UTC)
    batches = dict(metric_data(fleet, at, minutes=5))
    ecs, alb = batches["AWS/ECS"], batches["AWS/ApplicationELB"]
    stamps = {p["Timestamp"] for p in ecs + alb}
    assert stamps == {datetime(2026, 12, 1, 10, m, tzinfo=UTC) for m in range(2, 7)}
    clusters = {d["Value"] for p in ecs for d in p["Dimensions"] if d["Name"] == "ClusterName"}
    assert clusters == {EC2_CLUSTER, FARGATE_CLUSTER}
    services = {d["Value"] for p in ecs for d in p["Dimensions"] if d["Name"] == "ServiceName"}
    assert services == {s.name for s in SERVICES}
    groups = {d["Value"] for p in alb for d in p["Dimensions"] if d["Name"] == "TargetGroup"}
    assert groups == {"targetgroup/b/1", "targetgroup/g/2"}


def test_curl_lines_include_the_accounts_route() -> None:
    shown = how_to_try("http://127.0.0.1:8000", "tok")
    assert any(line.endswith("'http://127.0.0.1:8000/v1/accounts'") for line in shown)


def test_an_other_scopes_events_name_only_that_scope() -> None:
    scope = DemoScope(SECOND_ACCOUNT, SECOND_REGION)
    edge = EdgeFleet(
        scope,
        deployment="ecs-svc/1234567890123456789",
        tasks=[f"arn:aws:ecs:{SECOND_REGION}:{SECOND_ACCOUNT}:task/demo-edge/abc"],
    )
    events = edge_events(edge, random.Random(1))
    assert [e["detail"]["lastStatus"] for e in events][-1] == "RUNNING"
    for event in events:
        assert (event["account"], event["region"]) == (SECOND_ACCOUNT, SECOND_REGION)
        assert event["detail"]["clusterArn"] == (
            f"arn:aws:ecs:{SECOND_REGION}:{SECOND_ACCOUNT}:cluster/demo-edge"
        )
        assert event["detail"]["startedBy"] == "ecs-svc/1234567890123456789"
        assert "123456789012:" not in json.dumps(event)
        assert "us-east-1" not in json.dumps(event)
    # Every scope but the home one holds an edge fleet: 2 accounts x 2 regions.
    assert len(OTHER_SCOPES) == 3
