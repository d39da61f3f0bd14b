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


OTHER_ACCOUNT, OTHER_REGION = "210987654321", "eu-west-1"


def _elsewhere(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` as the same names and ids in another account and region (new
    EventBridge ids): another scope's deployment that happens to share its id."""
    text_ = json.dumps(events).replace(
        ":us-east-1:123456789012:", f":{OTHER_REGION}:{OTHER_ACCOUNT}:"
    )
    moved: list[dict[str, Any]] = json.loads(text_)
    for event in moved:
        event["id"] = f"there-{event['id']}"
        event["account"], event["region"] = OTHER_ACCOUNT, OTHER_REGION
    return moved


async def test_one_deployment_id_in_two_scopes_stays_two_deployments(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    """ECS deployment ids are unique only within an account and region: the same id in
    another scope is another deployment, with its own outcome, its own tasks and its
    own alerts (each scope's failure raises one)."""
    rng = random.Random(7)
    here: list[dict[str, Any]] = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/5", start=START, outcome="completed"
    )
    crashing: list[dict[str, Any]] = []
    for n in range(4):
        crashing += task_lifecycle(rng, deployment_id="ecs-svc/5", fail=n < 3, start=START)
    there_started = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/5", start=START, outcome="failed"
    )[:1]
    # Here it completes; there it crash-loops (its tasks only), then it is said started.
    await _apply(runtime, [*here, *_elsewhere(crashing), *_elsewhere(there_started)])
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT account_id, region, outcome, failed_tasks, cluster_arn FROM deployments"
                    " WHERE id = 'ecs-svc/5' ORDER BY account_id"
                )
            )
        ).all()
        alerts = (
            await conn.execute(
                text(
                    "SELECT type, payload->>'account_id', payload->>'region' FROM alerts"
                    " WHERE deployment_id = 'ecs-svc/5' AND type LIKE 'deployment.%' ORDER BY 2, 1"
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (
            "123456789012",
            "us-east-1",
            "succeeded",
            0,
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        ),
        (
            OTHER_ACCOUNT,
            OTHER_REGION,
            "failed",
            3,
            f"arn:aws:ecs:{OTHER_REGION}:{OTHER_ACCOUNT}:cluster/prod",
        ),
    ]
    assert [tuple(a) for a in alerts] == [
        ("deployment.succeeded", "123456789012", "us-east-1"),
        ("deployment.failed", OTHER_ACCOUNT, OTHER_REGION),
    ]

    # The same failure here too: each scope's deployment raises its own alert.
    failing_here = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/6", start=START, outcome="failed"
    )
    await _apply(runtime, [*failing_here, *_elsewhere(failing_here)])
    async with engine.connect() as conn:
        failed = (
            await conn.execute(
                text(
                    "SELECT payload->>'account_id', payload->'deployment'->>'outcome' FROM alerts"
                    " WHERE deployment_id = 'ecs-svc/6' AND type = 'deployment.failed' ORDER BY 1"
                )
            )
        ).all()
    assert [tuple(f) for f in failed] == [("123456789012", "failed"), (OTHER_ACCOUNT, "failed")]
