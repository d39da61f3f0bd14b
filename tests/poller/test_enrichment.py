"""Enrichment after commit, against moto over HTTP (through a counting proxy)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from service import telemetry
from service.consumer.handler import Handler, Message
from service.enrich.describer import Describer
from service.enrich.enricher import Enricher, wanted_resources
from service.events.normalise import normalise
from service.poller.reconcile import Reconciler
from service.runtime import Runtime
from tests.poller.fleet import Fleet, task_event
from tests.rig.aws_proxy import AwsProxy


def _messages(events: list[dict[str, Any]]) -> list[Message]:
    return [Message(message_id=str(uuid.uuid4()), body=json.dumps(e)) for e in events]


@pytest.fixture
async def describer(proxied_runtime: Runtime) -> AsyncIterator[Describer]:
    scopes = await proxied_runtime.aws_scopes()
    async with Describer(proxied_runtime.sessionmaker, scopes) as d:
        yield d


async def _wait_for(runtime: Runtime, sql: str, expected: Any, within: float = 10.0) -> Any:
    """Poll the database until ``sql``'s scalar equals ``expected`` (enrichment is async)."""
    value = None
    async with asyncio.timeout(within):
        while True:
            async with runtime.engine.connect() as conn:
                value = (await conn.execute(text(sql))).scalar()
            if value == expected:
                return value
            await asyncio.sleep(0.05)


async def test_task_events_bring_tags_and_details(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet, aws_proxy: AwsProxy
) -> None:
    enricher = Enricher(describer)
    handler = Handler(proxied_runtime.sessionmaker, after_commit=enricher.submit)
    events = [task_event(fleet, arn) for arn in fleet.task_arns]
    result = await handler.handle(_messages(events))
    assert len(result.done) == len(events)
    arns = ", ".join(f"'{a}'" for a in fleet.task_arns)
    # Tags of every task, through DescribeTasks include=TAGS.
    await _wait_for(
        proxied_runtime,
        f"SELECT count(*) FROM resource_tags WHERE resource_arn IN ({arns})"
        ' AND known AND tags = \'{"owner": "web-team"}\'::jsonb',
        len(fleet.task_arns),
    )
    # cpu and memory from the task definition, described once.
    await _wait_for(
        proxied_runtime,
        f"SELECT count(*) FROM tasks WHERE arn IN ({arns}) AND cpu = '256' AND memory = '512'",
        len(fleet.task_arns),
    )
    # The service the tasks name by group: created at once, then described.
    await _wait_for(
        proxied_runtime,
        f"SELECT desired_count FROM services WHERE arn = '{fleet.service_arn}'",
        3,
    )
    await _wait_for(
        proxied_runtime,
        f"SELECT tags->>'team' FROM resource_tags WHERE resource_arn = '{fleet.service_arn}'",
        "web",
    )
    await _wait_for(
        proxied_runtime,
        f"SELECT container_insights FROM clusters WHERE arn = '{fleet.cluster_arn}'",
        "enabled",
    )
    async with proxied_runtime.engine.connect() as conn:
        service = (
            (
                await conn.execute(
                    text(
                        "SELECT load_balancers, deployment_configuration, current_deployments"
                        f" FROM services WHERE arn = '{fleet.service_arn}'"
                    )
                )
            )
            .mappings()
            .one()
        )
        version = (
            await conn.execute(text(f"SELECT max(version) FROM tasks WHERE arn IN ({arns})"))
        ).scalar()
    assert service["load_balancers"][0]["target_group_arn"] == fleet.blue_tg_arn
    assert service["load_balancers"][0]["alternate_target_group_arn"] == fleet.green_tg_arn
    # moto's DescribeServices leaves deploymentConfiguration out (test_writes.py maps it).
    assert service["deployment_configuration"]["maximum_percent"] is None
    assert service["current_deployments"][0]["rollout_state"] == "IN_PROGRESS"
    # The Describe (versionless in moto) never overwrote the event's versioned state.
    assert version == 1
    # One DescribeTasks for the three tasks; tags never one ListTagsForResource each.
    assert aws_proxy.count("DescribeTasks") == 1
    assert aws_proxy.count("ListTagsForResource") == 0
    assert aws_proxy.count("DescribeTaskDefinition") == 1


async def test_250_task_events_make_3_describe_tasks_calls(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet, aws_proxy: AwsProxy
) -> None:
    enricher = Enricher(describer)
    handler = Handler(proxied_runtime.sessionmaker, after_commit=enricher.submit)
    prefix = fleet.cluster_arn.replace(":cluster/", ":task/")
    events = []
    for _ in range(250):
        event = task_event(fleet, f"{prefix}/{uuid.uuid4().hex}")
        event["detail"]["group"] = "family:batch"  # no service to describe
        events.append(event)
    # As the consumer commits them: batches of up to 100 merged messages. A full
    # group leaves at once; the last 50 wait out the 50 ms window.
    for start in range(0, 250, 100):
        await handler.handle(_messages(events[start : start + 100]))
    async with asyncio.timeout(10):
        while describer.batcher.pending or aws_proxy.count("DescribeTasks") < 3:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # nothing more comes
    assert aws_proxy.count("DescribeTasks") == 3
    assert aws_proxy.count("DescribeClusters") == 1


async def test_throttled_lookups_succeed_after_backoff(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet, aws_proxy: AwsProxy
) -> None:
    before = telemetry.AWS_CALLS.labels("ecs", "DescribeTasks", "throttled")._value.get()
    aws_proxy.throttle("DescribeTasks", 3)
    enricher = Enricher(describer)
    handler = Handler(proxied_runtime.sessionmaker, after_commit=enricher.submit)
    result = await handler.handle(_messages([task_event(fleet, fleet.task_arns[0])]))
    assert len(result.done) == 1  # committed at once, whatever AWS says
    await _wait_for(
        proxied_runtime,
        f"SELECT known FROM resource_tags WHERE resource_arn = '{fleet.task_arns[0]}'",
        True,
    )
    assert aws_proxy.throttled[("ecs", "DescribeTasks")] == 3
    assert aws_proxy.count("DescribeTasks") == 4
    after = telemetry.AWS_CALLS.labels("ecs", "DescribeTasks", "throttled")._value.get()
    assert after - before == 3


async def test_unknown_service_triggers_a_reconcile_of_just_that_one(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet, aws_proxy: AwsProxy
) -> None:
    scopes = await proxied_runtime.aws_scopes()
    reconciler = Reconciler(proxied_runtime.sessionmaker, scopes, describer)
    enricher = Enricher(describer, reconcile_one=reconciler.reconcile_one)
    handler = Handler(proxied_runtime.sessionmaker, after_commit=enricher.submit)
    # One event names one task: the service and cluster are new, so their other
    # tasks and the container instance appear without any event naming them.
    await handler.handle(_messages([task_event(fleet, fleet.task_arns[0])]))
    await _wait_for(
        proxied_runtime,
        f"SELECT count(*) FROM tasks WHERE cluster_name = '{fleet.cluster}'",
        len(fleet.task_arns),
    )
    await _wait_for(
        proxied_runtime,
        f"SELECT count(*) FROM container_instances WHERE arn = '{fleet.instance_arn}'",
        1,
    )
    # Debounced: a second event for the same service does not reconcile it again.
    lists = aws_proxy.count("ListServices")
    await handler.handle(_messages([task_event(fleet, fleet.task_arns[1], version=2)]))
    await asyncio.sleep(0.3)
    assert aws_proxy.count("ListServices") == lists
    await enricher.close()


async def test_a_full_enrichment_queue_drops_and_counts(proxied_runtime: Runtime) -> None:
    """A full batcher refuses before any call is made; the drop is counted."""

    def event(task: str) -> Any:
        return normalise(
            {
                "id": str(uuid.uuid4()),
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "time": "2026-03-01T10:00:00Z",
                "detail": {
                    "taskArn": f"arn:aws:ecs:us-east-1:123456789012:task/prod/{task}",
                    "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
                    "group": "service:web",
                    "version": 1,
                },
            },
            received_at=datetime.now(UTC),
        )

    first = event("a")
    wanted = [(k, arn.rsplit("/", 1)[1], r) for k, _, arn, r in wanted_resources(first)]
    assert wanted == [
        ("clusters", "prod", False),
        ("tasks", "a", False),
        ("services", "web", False),
    ]
    dropped = telemetry.ENRICH_DROPPED.labels("queue_full")._value.get()
    scopes = await proxied_runtime.aws_scopes()
    async with Describer(
        proxied_runtime.sessionmaker, scopes, window_s=30, max_pending=3
    ) as describer:
        enricher = Enricher(describer)
        enricher.submit([first, event("b")])
        # cluster, task a and service fit; task b does not.
        assert describer.batcher.pending == 3
        assert telemetry.ENRICH_DROPPED.labels("queue_full")._value.get() - dropped == 1
        enricher.submit([first])  # asked already: not again, not dropped again
        assert telemetry.ENRICH_DROPPED.labels("queue_full")._value.get() - dropped == 1


async def test_a_container_instance_event_brings_its_tags(
    proxied_runtime: Runtime, describer: Describer, fleet: Fleet, aws_proxy: AwsProxy
) -> None:
    """moto cannot tag a container instance (HTTP 500): its tags are known to be none."""
    enricher = Enricher(describer)
    handler = Handler(proxied_runtime.sessionmaker, after_commit=enricher.submit)
    event = {
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Container Instance State Change",
        "source": "aws.ecs",
        "time": "2026-12-01T10:00:00Z",
        "detail": {
            "containerInstanceArn": fleet.instance_arn,
            "clusterArn": fleet.cluster_arn,
            "status": "ACTIVE",
            "agentConnected": True,
            "version": 3,
        },
    }
    await handler.handle(_messages([event]))
    await _wait_for(
        proxied_runtime,
        f"SELECT known FROM resource_tags WHERE resource_arn = '{fleet.instance_arn}'",
        True,
    )
    assert aws_proxy.count("DescribeContainerInstances") == 1
    # The event's versioned state stands: moto's Describe carries no version.
    async with proxied_runtime.engine.connect() as conn:
        version = (
            await conn.execute(
                text(f"SELECT version FROM container_instances WHERE arn = '{fleet.instance_arn}'")
            )
        ).scalar()
    assert version == 3
