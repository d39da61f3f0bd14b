"""Describe output into rows (pure), and services created from their tasks' group."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.handler import Handler, Message
from service.enrich import writes
from service.state.rows import service_arn_of_task

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_service_row_of_describe_maps_configuration_deployments_and_pairs() -> None:
    row = writes.service_row_of_describe(
        {
            "serviceArn": "arn:aws:ecs:us-east-1:1:service/prod/web",
            "serviceName": "web",
            "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/prod",
            "status": "ACTIVE",
            "desiredCount": 4,
            "runningCount": 3,
            "pendingCount": 1,
            "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 2}],
            "deploymentController": {"type": "CODE_DEPLOY"},
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": True, "rollback": False},
                "alarms": {"alarmNames": ["5xx"], "enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 50,
                "strategy": "BLUE_GREEN",
            },
            "deployments": [
                {
                    "id": "ecs-svc/1",
                    "status": "PRIMARY",
                    "rolloutState": "FAILED",
                    "createdAt": NOW,
                }
            ],
            "loadBalancers": [
                {
                    "targetGroupArn": "tg-blue",
                    "containerName": "app",
                    "containerPort": 80,
                    "advancedConfiguration": {"alternateTargetGroupArn": "tg-green"},
                }
            ],
        },
        NOW,
    )
    assert row is not None
    assert row["cluster_name"] == "prod"
    assert row["deployment_controller"] == "CODE_DEPLOY"
    assert row["capacity_provider_strategy"] == [
        {"capacity_provider": "FARGATE_SPOT", "weight": 2, "base": None}
    ]
    config = row["deployment_configuration"]
    assert config["circuit_breaker"] == {"enable": True, "rollback": False}
    assert config["alarms"] == {"names": ["5xx"], "enable": True, "rollback": True}
    assert (config["minimum_healthy_percent"], config["strategy"]) == (50, "BLUE_GREEN")
    assert row["current_deployments"][0]["rollout_state"] == "FAILED"
    assert (
        row["current_deployments"][0]["created_at"] == "2026-03-01T10:00:00Z"
    )  # the one time format (service.events.times)
    assert row["load_balancers"][0]["alternate_target_group_arn"] == "tg-green"


def test_cluster_row_of_describe_reads_container_insights() -> None:
    row = writes.cluster_row_of_describe(
        {
            "clusterArn": "arn:aws:ecs:eu-west-1:2:cluster/c",
            "clusterName": "c",
            "settings": [{"name": "containerInsights", "value": "enhanced"}],
            "runningTasksCount": 9,
        },
        NOW,
    )
    assert row is not None
    assert (row["container_insights"], row["region"], row["account"]) == (
        "enhanced",
        "eu-west-1",
        "2",
    )
    assert writes.cluster_row_of_describe({"clusterName": "no arn"}, NOW) is None


def test_tags_of() -> None:
    assert writes.tags_of({"tags": [{"key": "a", "value": "1"}, {"key": "b"}, {"value": "x"}]}) == {
        "a": "1",
        "b": "",
    }


@pytest.mark.parametrize(
    ("task_arn", "cluster", "service", "expected"),
    [
        (
            "arn:aws:ecs:us-east-1:1:task/prod/abc",
            "prod",
            "web",
            "arn:aws:ecs:us-east-1:1:service/prod/web",
        ),
        ("arn:aws:ecs:us-east-1:1:task/prod/abc", "prod", None, None),
        ("not-an-arn", "prod", "web", None),
    ],
)
def test_service_arn_of_task(
    task_arn: str, cluster: str, service: str | None, expected: str | None
) -> None:
    assert service_arn_of_task(task_arn, cluster, service) == expected


async def test_a_service_named_only_by_task_group_is_listed_at_once(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    event = {
        "id": "e1",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "time": "2026-03-01T10:00:00Z",
        "detail": {
            "taskArn": "arn:aws:ecs:us-east-1:1:task/prod/abc",
            "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/prod",
            "group": "service:web",
            "lastStatus": "RUNNING",
            "version": 2,
        },
    }
    await Handler(sessionmaker).handle([Message(message_id="m", body=json.dumps(event))])
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    text(
                        "SELECT s.arn, s.name, s.cluster_name, t.known FROM services s"
                        " JOIN resource_tags t ON t.resource_arn = s.arn"
                    )
                )
            )
            .mappings()
            .one()
        )
    assert dict(row) == {
        "arn": "arn:aws:ecs:us-east-1:1:service/prod/web",
        "name": "web",
        "cluster_name": "prod",
        "known": False,
    }
