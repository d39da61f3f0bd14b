"""Realistic synthetic ECS events: task lifecycles, deployments, container instances.

Shaped like the AWS samples (see ``tests/fixtures/ecs-events``): ISO timestamps with
varying fractional digits, ``detail.version`` growing with gaps, ``group`` and
``startedBy`` naming the service and deployment. Used by the tests, the
benchmarks and ``ecswatch demo``; deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"

Event = dict[str, Any]


def iso(t: datetime, digits: int = 3) -> str:
    """RFC 3339 UTC with ``digits`` fractional digits (0 to 9), as ECS varies them."""
    base = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if digits <= 0:
        return base + "Z"
    frac = f"{t.microsecond:06d}000"[:digits]
    return f"{base}.{frac}Z"


def cluster_arn(cluster: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"


def service_arn(cluster: str, service: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{service}"


def envelope(detail_type: str, resources: list[str], detail: Event, t: datetime) -> Event:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.ecs",
        "account": ACCOUNT,
        "time": iso(t, 0),
        "region": REGION,
        "resources": resources,
        "detail": detail,
    }


# The statuses a task passes through, with the version bump ECS gives each.
_LIFECYCLE = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING")
_STOPPING = ("DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED")


def task_lifecycle(
    rng: random.Random,
    *,
    cluster: str = "prod",
    service: str = "web",
    family: str = "web",
    revision: int = 7,
    deployment_id: str = "ecs-svc/1234567890123456789",
    start: datetime | None = None,
    launch_type: str = "FARGATE",
    fail: bool = False,
    stop: bool = True,
    task_arn: str | None = None,
    container_instance_arn: str | None = None,
    capacity_provider: str | None = None,
    stop_code: str | None = None,
    exit_code: int | None = None,
    stopped_reason: str | None = None,
    only_stop: bool = False,
    first_version: int | None = None,
    container_reason: str | None = None,
    container_ran: bool = True,
) -> list[Event]:
    """Every state-change event of one task, in order, versions with gaps.

    ``fail`` makes the essential container exit 137 (OOM) after running briefly.
    ``task_arn`` names an existing task (the demo's tasks live in moto);
    ``stop_code``, ``exit_code`` and ``stopped_reason`` override the stop's;
    ``only_stop`` leaves out the events up to RUNNING (the task already runs);
    ``container_reason`` is the stopped container's reason, and a container that
    never ran (``container_ran`` false, e.g. its image could not be pulled) has no
    exit code.
    """
    start = start or datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    task_id = uuid.UUID(int=rng.getrandbits(128)).hex
    if task_arn is None:
        task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task_id}"
    else:
        task_id = task_arn.rsplit("/", 1)[1]
    created = start + timedelta(milliseconds=rng.randint(0, 10_000))
    version = rng.randint(1, 3)
    if first_version is not None:
        version = first_version
    statuses: list[tuple[str, str]] = [(s, "RUNNING") for s in _LIFECYCLE]
    if stop:
        statuses += [("RUNNING", "STOPPED")] + [(s, "STOPPED") for s in _STOPPING]
    events: list[Event] = []
    t = created
    for last_status, desired_status in statuses:
        t += timedelta(milliseconds=rng.randint(200, 5000))
        stopping = desired_status == "STOPPED"
        exited = stopping and last_status == "STOPPED"
        container: Event = {
            "containerArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/{cluster}/{task_id}/app",
            "name": "app",
            "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{family}:v{revision}",
            "lastStatus": "STOPPED"
            if exited
            else ("RUNNING" if last_status in ("RUNNING",) else "PENDING"),
            "cpu": "256",
            "memory": "null",
        }
        if exited and container_ran:
            container["exitCode"] = exit_code if exit_code is not None else (137 if fail else 0)
            if fail and exit_code is None:
                container["reason"] = "OutOfMemoryError: Container killed due to memory usage"
        if exited and container_reason:
            container["reason"] = container_reason
        detail: Event = {
            "clusterArn": cluster_arn(cluster),
            "taskArn": task_arn,
            "taskDefinitionArn": (
                f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"
            ),
            "group": f"service:{service}",
            "startedBy": deployment_id,
            "launchType": launch_type,
            "lastStatus": last_status,
            "desiredStatus": desired_status,
            "availabilityZone": rng.choice(["us-east-1a", "us-east-1b", "us-east-1c"]),
            "containers": [container],
            "cpu": "256",
            "memory": "512",
            "createdAt": iso(created, rng.randint(0, 9)),
            "updatedAt": iso(t, rng.randint(0, 9)),
            "version": version,
        }
        if last_status in ("RUNNING",) or stopping:
            detail["startedAt"] = iso(created + timedelta(seconds=3), 3)
        if container_instance_arn:
            detail["containerInstanceArn"] = container_instance_arn
        if capacity_provider:
            detail["capacityProviderName"] = capacity_provider
        if stopping:
            detail["stopCode"] = stop_code or (
                "EssentialContainerExited" if fail else "ServiceSchedulerInitiated"
            )
            detail["stoppedReason"] = stopped_reason or (
                "Essential container in task exited"
                if fail
                else f"Scaling activity initiated by (deployment {deployment_id})"
            )
            detail["stoppingAt"] = iso(t, 3)
        if exited:
            detail["stoppedAt"] = iso(t, 3)
            detail["executionStoppedAt"] = iso(t, 0)
        events.append(envelope("ECS Task State Change", [task_arn], detail, t))
        version += rng.choice((1, 1, 1, 2))  # versions have gaps
    if only_stop:
        return events[len(_LIFECYCLE) :]
    return events


def deployment_events(
    *,
    cluster: str,
    service: str,
    deployment_id: str,
    start: datetime,
    outcome: str = "completed",
    rollback_to: str | None = None,
) -> list[Event]:
    """ECS Deployment State Change events of one rolling deployment."""
    arn = service_arn(cluster, service)

    def event(name: str, event_type: str, reason: str, t: datetime) -> Event:
        detail = {
            "eventType": event_type,
            "eventName": name,
            "clusterArn": cluster_arn(cluster),
            "deploymentId": deployment_id,
            "updatedAt": iso(t, 3),
            "reason": reason,
        }
        return envelope("ECS Deployment State Change", [arn], detail, t)

    events = [
        event(
            "SERVICE_DEPLOYMENT_IN_PROGRESS",
            "INFO",
            f"ECS deployment {deployment_id} in progress.",
            start,
        )
    ]
    if outcome == "completed":
        events.append(
            event(
                "SERVICE_DEPLOYMENT_COMPLETED",
                "INFO",
                f"ECS deployment {deployment_id} completed.",
                start + timedelta(minutes=3),
            )
        )
    elif outcome == "failed":
        events.append(
            event(
                "SERVICE_DEPLOYMENT_FAILED",
                "ERROR",
                "ECS deployment circuit breaker: task failed to start.",
                start + timedelta(minutes=4),
            )
        )
        if rollback_to:
            events.append(
                event(
                    "SERVICE_DEPLOYMENT_IN_PROGRESS",
                    "INFO",
                    f"ECS deployment circuit breaker: rolling back to deploymentId {rollback_to}.",
                    start + timedelta(minutes=4, seconds=1),
                )
            )
            events.append(
                event(
                    "SERVICE_DEPLOYMENT_COMPLETED",
                    "INFO",
                    f"ECS deployment {deployment_id} completed.",
                    start + timedelta(minutes=7),
                )
            )
    return events


def container_instance_events(
    rng: random.Random,
    *,
    cluster: str = "prod",
    count: int = 3,
    start: datetime | None = None,
    arn: str | None = None,
    ec2_instance_id: str | None = None,
    status: str = "ACTIVE",
    agent_connected: bool | None = None,
    first_version: int = 10,
) -> list[Event]:
    """A few versioned container-instance state changes (agent flapping included).

    ``arn`` and ``ec2_instance_id`` name an existing instance; ``status`` and
    ``agent_connected`` (when given) hold for every event instead of the flapping.
    """
    start = start or datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    instance = uuid.UUID(int=rng.getrandbits(128)).hex
    arn = arn or f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{instance}"
    ec2 = f"i-{rng.getrandbits(64):017x}"[:19]
    ec2 = ec2_instance_id or ec2
    events = []
    version = first_version
    for i in range(count):
        t = start + timedelta(seconds=30 * i)
        detail = {
            "clusterArn": cluster_arn(cluster),
            "containerInstanceArn": arn,
            "ec2InstanceId": ec2,
            "status": status,
            "agentConnected": i % 3 != 1 if agent_connected is None else agent_connected,
            "version": version,
            "runningTasksCount": i,
            "pendingTasksCount": 0,
            "registeredResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 3904},
            ],
            "remainingResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 2048 - 256 * i},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 3904 - 512 * i},
            ],
            "updatedAt": iso(t, 3),
            "versionInfo": {"agentVersion": "1.89.0"},
        }
        events.append(envelope("ECS Container Instance State Change", [arn], detail, t))
        version += rng.choice((1, 2))
    return events
