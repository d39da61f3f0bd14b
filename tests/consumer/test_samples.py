"""Every AWS documentation sample, sent through SQS, lands as documented state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.runtime import Runtime
from tests.consumer.conftest import consume_until_empty, send_events
from tests.rig.fixtures import SqsQueue

SAMPLES = Path(
    os.environ.get(
        "ECSWATCH_EVENT_SAMPLES",
        Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events",
    )
)

_QUERIES = {
    "task": (
        "SELECT id, cluster_name, family, revision, launch_type, last_status, desired_status,"
        " stop_code, version, deployment_id, availability_zone,"
        " jsonb_path_query_array(containers, '$[*].name') AS containers FROM tasks"
    ),
    "instance": (
        "SELECT arn, status, agent_connected, version, health_status,"
        " jsonb_array_length(registered_resources) AS resources FROM container_instances"
    ),
    "deployment": (
        "SELECT id, kind, outcome, cluster_name, service_name, rollback_target,"
        " lifecycle_stage, codedeploy_group FROM deployments"
    ),
    "service": "SELECT name, cluster_name, last_event_name FROM services",
    "quarantine": "SELECT error FROM quarantine",
    "cluster": "SELECT name FROM clusters",
}

_CI_MY = "arn:aws:ecs:us-west-2:123456789012:container-instance/my-cluster/a1b2c3d4EXAMPLE"
_HEALTH = {"cluster": [("my-cluster",)]}

# Per sample: the rows each table must hold afterwards (tables not named: empty).
GOLDEN: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "codedeploy_deployment_success_generic_lambdago.json": {
        "deployment": [
            ("d-123456789", "codedeploy", "succeeded", None, None, None, None, "myDeploymentGroup")
        ],
    },
    "container_instance_health_change_accelerated_compute_impaired.json": {
        "instance": [(_CI_MY, None, None, None, "IMPAIRED", 0)],
        **_HEALTH,
    },
    "container_instance_health_change_agent_connectivity_impaired.json": {
        "instance": [(_CI_MY, None, None, None, "IMPAIRED", 0)],
        **_HEALTH,
    },
    "container_instance_health_change_container_runtime_ok.json": {
        "instance": [(_CI_MY, None, None, None, "OK", 0)],
        **_HEALTH,
    },
    "container_instance_health_change_daemon_impaired.json": {
        "instance": [(_CI_MY, None, None, None, "IMPAIRED", 0)],
        **_HEALTH,
    },
    "container_instance_state_change_active.json": {
        "instance": [
            (
                "arn:aws:ecs:us-east-1:111122223333:container-instance/"
                "b54a2a04-046f-4331-9d74-3f6d7f6ca315",
                "ACTIVE",
                True,
                14801,
                None,
                4,
            )
        ],
        "cluster": [("default",)],
    },
    "daemon_deployment_state_change_pending_docs.json": {
        "deployment": [
            (
                "arn:aws:ecs:us-west-2:111122223333:daemon-deployment/my-cluster/my-daemon/"
                "0EYSiB0qap8xf0N76FsbE",
                "rolling",
                "in_progress",
                "my-cluster",
                "my-daemon",
                None,
                None,
                None,
            )
        ],
        "cluster": [("my-cluster",)],
    },
    "daemon_service_action_task_creation_failed_docs.json": {
        "service": [("my-daemon", "my-cluster", "DAEMON_TASK_START_IMPAIRED")],
        "cluster": [("my-cluster",)],
    },
    "daemon_service_action_task_failed_to_run_docs.json": {
        "service": [("my-daemon", "my-cluster", "DAEMON_TASK_START_IMPAIRED")],
        "cluster": [("my-cluster",)],
    },
    "deployment_state_change_completed.json": {
        "deployment": [
            ("ecs-svc/123", "rolling", "succeeded", "default", "servicetest", None, None, None)
        ],
        "service": [("servicetest", "default", None)],
        "cluster": [("default",)],
    },
    "deployment_state_change_failed_circuit_breaker.json": {
        "deployment": [
            ("ecs-svc/123", "rolling", "failed", "default", "servicetest", None, None, None)
        ],
        "service": [("servicetest", "default", None)],
        "cluster": [("default",)],
    },
    "deployment_state_change_in_progress.json": {
        "deployment": [
            ("ecs-svc/123", "rolling", "in_progress", "default", "servicetest", None, None, None)
        ],
        "service": [("servicetest", "default", None)],
        "cluster": [("default",)],
    },
    "deployment_state_change_in_progress_rollback.json": {
        # The circuit breaker is rolling back: the failure is known already.
        "deployment": [
            (
                "ecs-svc/123",
                "rolling",
                "failed",
                "default",
                "servicetest",
                "deploymentID",
                None,
                None,
            )
        ],
        "service": [("servicetest", "default", None)],
        "cluster": [("default",)],
    },
    "hook_state_change_pause_awaiting_action_docs.json": {
        "deployment": [
            (
                "arn:aws:ecs:us-west-2:123456789012:service-deployment/my-cluster/my-service/"
                "0EYSiB0qap8xf0N76FsbE",
                "blue_green",
                "in_progress",
                "my-cluster",
                "my-service",
                None,
                "POST_TEST_TRAFFIC_SHIFT",
                None,
            )
        ],
        "service": [("my-service", "my-cluster", None)],
        "cluster": [("my-cluster",)],
    },
    "service_action_capacity_provider_steady_state.json": {
        "service": [("servicetest", "default", "CAPACITY_PROVIDER_STEADY_STATE")],
        "cluster": [("default",)],
    },
    "service_action_steady_state.json": {
        "service": [("servicetest", "default", "SERVICE_STEADY_STATE")],
        "cluster": [("default",)],
    },
    "service_action_task_placement_failure_ec2_cpu.json": {
        "service": [("servicetest", "default", "SERVICE_TASK_PLACEMENT_FAILURE")],
        "cluster": [("default",)],
    },
    "service_action_task_placement_failure_fargate_spot.json": {
        "service": [("servicetest", "default", "SERVICE_TASK_PLACEMENT_FAILURE")],
        "cluster": [("default",)],
    },
    "service_action_task_start_impaired.json": {
        "service": [("servicetest", "default", "SERVICE_TASK_START_IMPAIRED")],
        "cluster": [("default",)],
    },
    "sns_to_sqs_body_envelope_docs_generic.json": {
        # The documentation's SNS envelope carries "Hello world!", not an event.
        "quarantine": [("SNS message is not JSON: Expecting value at line 1 column 1",)],
    },
    "task_state_change_ec2_running_2016.json": {
        "task": [
            (
                "b99d40b3-5176-4f71-9a52-9dbd6f1cebef",
                "default",
                "xray",
                2,
                None,
                "RUNNING",
                "RUNNING",
                None,
                4,
                "ecs-svc/9223370556150183303",
                None,
                ["xray"],
            )
        ],
        "deployment": [
            (
                "ecs-svc/9223370556150183303",
                "rolling",
                "in_progress",
                "default",
                None,
                None,
                None,
                None,
            )
        ],
        "cluster": [("default",)],
    },
    "task_state_change_ec2_running_2025.json": {
        "task": [
            (
                "c1ffa94f19a540ed8d9f7e1d2a5d",
                "example",
                "webserver",
                None,
                "EC2",
                "RUNNING",
                "RUNNING",
                None,
                4,
                None,
                "us-east-1b",
                ["aws-otel-collector", "web"],
            )
        ],
        "cluster": [("example",)],
    },
    "task_state_change_fargate_running_2020.json": {
        "task": [
            (
                "c13b4cb40f1f4fe4a2971f76ae5a47ad",
                "FargateCluster",
                "sample-fargate",
                1,
                "FARGATE",
                "RUNNING",
                "RUNNING",
                None,
                4,
                None,
                "us-west-2c",
                ["FargateApp"],
            )
        ],
        "cluster": [("FargateCluster",)],
    },
    "task_state_change_fargate_running_2025.json": {
        "task": [
            (
                "a1173316d40a45dea9",
                "example-cluster",
                "webserver",
                5,
                "FARGATE",
                "RUNNING",
                "RUNNING",
                None,
                3,
                None,
                "us-east-1b",
                ["web", "aws-guardduty-agent-nm40lC", "aws-otel-collector"],
            )
        ],
        "cluster": [("example-cluster",)],
    },
    "task_state_change_fargate_spot_interruption_current_docs_snippet.json": {
        # A docs snippet: no version, no containers; the stop code still lands.
        "task": [
            (
                "b99d40b3-5176-4f71-9a52-9dbd6fEXAMPLE",
                "default",
                None,
                None,
                None,
                "RUNNING",
                "STOPPED",
                "SpotInterruption",
                None,
                None,
                None,
                [],
            )
        ],
        "cluster": [("default",)],
    },
}


def test_every_sample_has_a_golden_expectation() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.json")) == sorted(GOLDEN)


@pytest.mark.parametrize("sample", sorted(GOLDEN))
async def test_sample_through_sqs(
    sample: str,
    aws_runtime: Runtime,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    engine: AsyncEngine,
) -> None:
    body = (SAMPLES / sample).read_text()
    await send_events(sqs_client, sqs_queue.queue_url, [body])
    consumer = await consume_until_empty(aws_runtime, sqs_client, sqs_queue.queue_url)
    assert consumer.processed == 1
    expected = GOLDEN[sample]
    async with engine.connect() as conn:
        for table, query in _QUERIES.items():
            rows = [tuple(r) for r in (await conn.execute(text(query))).all()]
            assert rows == expected.get(table, []), table
        raw = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar()
    assert raw == (0 if "quarantine" in expected else 1)
