"""Deployment projection against the database: rollback, task failures, CodeDeploy mapping."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import ServiceRef
from service.consumer.handler import Handler, Message
from service.demo.events import deployment_events, task_lifecycle
from service.runtime import Runtime

START = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


async def _apply(runtime: Runtime, events: list[dict[str, Any]], **kwargs: Any) -> None:
    handler = Handler(runtime.sessionmaker, **kwargs)
    result = await handler.handle([Message(str(i), json.dumps(e)) for i, e in enumerate(events)])
    assert not result.retry


async def _deployments(engine: AsyncEngine) -> dict[str, tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, outcome, rollback_target, failed_tasks, finished_at IS NOT NULL,"
                " service_name, cluster_name, task_definition FROM deployments"
            )
        )
        return {r[0]: tuple(r[1:]) for r in rows}


async def test_circuit_breaker_rollback_to_an_earlier_deployment(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    earlier = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/1", start=START, outcome="completed"
    )
    failing = deployment_events(
        cluster="prod",
        service="web",
        deployment_id="ecs-svc/2",
        start=START.replace(hour=11),
        outcome="failed",
    )
    rollback = failing[1:2]  # FAILED, then the rolling-back notice:
    notice = json.loads(json.dumps(failing[1]))
    notice["id"] = "rollback-notice"
    notice["detail"]["eventName"] = "SERVICE_DEPLOYMENT_IN_PROGRESS"
    notice["detail"]["reason"] = (
        "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/1."
    )
    notice["detail"]["updatedAt"] = "2026-11-03T11:05:00Z"
    # ECS restores ecs-svc/1, which completes again.
    again = json.loads(json.dumps(earlier[-1]))
    again["id"] = "restored"
    again["detail"]["updatedAt"] = "2026-11-03T11:09:00Z"
    await _apply(runtime, [*earlier, failing[0], *rollback, notice])
    state = await _deployments(engine)
    assert state["ecs-svc/2"][:3] == ("failed", "ecs-svc/1", 0)
    await _apply(runtime, [again])
    state = await _deployments(engine)
    assert state["ecs-svc/2"][:2] == ("rolled_back", "ecs-svc/1")
    assert state["ecs-svc/2"][3] is True  # finished
    assert state["ecs-svc/1"][0] == "succeeded"


async def test_failed_tasks_are_counted_on_their_deployment(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    rng = random.Random(5)
    events: list[dict[str, Any]] = []
    for n in range(5):
        events += task_lifecycle(rng, deployment_id="ecs-svc/9", fail=n < 3, start=START)
    await _apply(runtime, events)
    state = await _deployments(engine)
    outcome, _, failed, finished, service, cluster, task_def = state["ecs-svc/9"]
    # Three failed starts within ECSWATCH_CRASHLOOP_WINDOW_S (default 3 in 10 min):
    # failed, without any circuit breaker.
    assert (outcome, failed, finished, service, cluster) == ("failed", 3, False, "web", "prod")
    assert task_def == "arn:aws:ecs:us-east-1:123456789012:task-definition/web:7"


async def test_codedeploy_group_maps_to_service(runtime: Runtime, engine: AsyncEngine) -> None:
    event = {
        "version": "0",
        "id": "cd-1",
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": "123456789012",
        "time": "2026-11-03T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "application": "shop",
            "deploymentGroup": "shop-blue",
            "deploymentId": "d-ABCDEF123",
            "state": "FAILURE",
            "region": "us-east-1",
        },
    }
    groups = {"shop/shop-blue": ServiceRef(cluster="prod", service="shop")}
    await _apply(runtime, [event], codedeploy_groups=groups)
    state = await _deployments(engine)
    assert state["d-ABCDEF123"][0] == "failed"
    assert state["d-ABCDEF123"][4:6] == ("shop", "prod")
