"""Event sequences the alert tests send: rollbacks, crash loops, CodeDeploy, hooks."""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from service.demo.events import cluster_arn, envelope, iso, service_arn, task_lifecycle

Event = dict[str, Any]
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"


def sample(name: str) -> Event:
    loaded: Event = json.loads((SAMPLES / name).read_text())
    return loaded


def deployment_event(
    cluster: str, service: str, deployment_id: str, name: str, at: datetime, reason: str
) -> Event:
    detail = {
        "eventType": "ERROR" if name.endswith("FAILED") else "INFO",
        "eventName": name,
        "clusterArn": cluster_arn(cluster),
        "deploymentId": deployment_id,
        "updatedAt": iso(at, 3),
        "reason": reason,
    }
    return envelope("ECS Deployment State Change", [service_arn(cluster, service)], detail, at)


def circuit_breaker_rollback(
    cluster: str, service: str, failed: str, target: str, start: datetime
) -> list[Event]:
    """``target`` completed long ago; ``failed`` starts, fails, ECS restores ``target``."""

    def ev(dep: str, name: str, minutes: float, reason: str) -> Event:
        return deployment_event(
            cluster, service, dep, name, start + timedelta(minutes=minutes), reason
        )

    return [
        ev(target, "SERVICE_DEPLOYMENT_IN_PROGRESS", -60, f"ECS deployment {target} in progress."),
        ev(target, "SERVICE_DEPLOYMENT_COMPLETED", -55, f"ECS deployment {target} completed."),
        ev(failed, "SERVICE_DEPLOYMENT_IN_PROGRESS", 0, f"ECS deployment {failed} in progress."),
        # ECS announces the rollback, then the failure, stamped the same second.
        ev(
            failed,
            "SERVICE_DEPLOYMENT_IN_PROGRESS",
            6,
            f"ECS deployment circuit breaker: rolling back to deploymentId {target}.",
        ),
        ev(
            failed,
            "SERVICE_DEPLOYMENT_FAILED",
            6,
            "ECS deployment circuit breaker: task failed to start.",
        ),
        ev(target, "SERVICE_DEPLOYMENT_IN_PROGRESS", 6.1, f"ECS deployment {target} in progress."),
        ev(target, "SERVICE_DEPLOYMENT_COMPLETED", 9, f"ECS deployment {target} completed."),
    ]


def with_new_ids(events: list[Event]) -> list[Event]:
    """The same events re-sent under new EventBridge ids."""
    resent = copy.deepcopy(events)
    for event in resent:
        event["id"] = str(uuid.uuid4())
    return resent


def crash_loop(
    cluster: str, service: str, deployment_id: str, start: datetime, *, tasks: int = 3
) -> list[Event]:
    """Tasks of a deployment without circuit breaker that exit 137 one after another."""
    rng = random.Random(deployment_id)
    events: list[Event] = []
    for n in range(tasks):
        events += task_lifecycle(
            rng,
            cluster=cluster,
            service=service,
            deployment_id=deployment_id,
            start=start + timedelta(minutes=n),
            fail=True,
        )
    return events


def codedeploy(deployment_id: str, state: str, at: datetime, group: str = "shop-blue") -> Event:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": "123456789012",
        "time": iso(at, 0),
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "application": "shop",
            "deploymentGroup": group,
            "deploymentId": deployment_id,
            "state": state,
            "region": "us-east-1",
        },
    }


def hook_failed(at: datetime) -> Event:
    event = sample("hook_state_change_pause_awaiting_action_docs.json")
    event["id"] = str(uuid.uuid4())
    event["detail"]["eventName"] = "HOOK_FAILED"
    event["detail"]["eventType"] = "ERROR"
    event["detail"]["updatedAt"] = iso(at, 9)
    event["time"] = iso(at, 0)
    return event


ECR_NOT_FOUND = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to"
    " resolve ref 123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v9: not found"
)
ELB_UNHEALTHY = (
    "Task failed ELB health checks in (target-group arn:aws:elasticloadbalancing:us-east-1:"
    "123456789012:targetgroup/web-tg/73e2d6bc24d8a067)"
)


def stopped_tasks(
    cluster: str,
    service: str,
    deployment_id: str,
    start: datetime,
    *,
    stop_code: str,
    stopped_reason: str,
    exit_code: int | None = None,
    tasks: int = 3,
) -> list[Event]:
    """``tasks`` tasks of a deployment that stop one after another with ``stop_code``
    and ``stopped_reason`` (the wording ECS writes)."""
    rng = random.Random(f"{deployment_id}:{stopped_reason}")
    events: list[Event] = []
    for n in range(tasks):
        events += task_lifecycle(
            rng,
            cluster=cluster,
            service=service,
            deployment_id=deployment_id,
            start=start + timedelta(minutes=n),
            stop_code=stop_code,
            stopped_reason=stopped_reason,
            exit_code=exit_code,
        )
    return events


def placement_failure(cluster: str, service: str, at: datetime, resource: str) -> Event:
    """``SERVICE_TASK_PLACEMENT_FAILURE`` of a service (``reason`` ``RESOURCE:<resource>``)."""
    event = sample("service_action_task_placement_failure_ec2_cpu.json")
    event["id"] = str(uuid.uuid4())
    event["account"], event["region"] = "123456789012", "us-east-1"
    event["time"] = iso(at, 0)
    event["resources"] = [service_arn(cluster, service)]
    event["detail"]["clusterArn"] = cluster_arn(cluster)
    event["detail"]["containerInstanceArns"] = []
    event["detail"]["reason"] = f"RESOURCE:{resource}"
    event["detail"]["createdAt"] = iso(at, 3)
    return event
