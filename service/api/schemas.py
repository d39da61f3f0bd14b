"""Response and request models of the REST API, with the examples shown in /docs.

Field names follow docs/api.md exactly. Columns whose values ECS owns (statuses,
launch types, stop codes) are plain strings in responses, so a value AWS adds
tomorrow is passed through instead of turning into a 500; closed sets that
ecswatch owns (deployment kinds and outcomes, webhook event types) are
``Literal``/``StrEnum`` in filters and requests.
"""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

ACCOUNT = "123456789012"
REGION = "us-east-1"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod"
SERVICE_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/prod/web"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/prod/0d2b8c1e5f7a4b2c9e1f3a5b7c9d1e3f"
INSTANCE_ARN = (
    f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/prod/4f8e2c6a1b3d4e5f8a9b0c1d2e3f4a5b"
)
TASK_DEFINITION = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:42"
#: Text may hold anything but NUL, which PostgreSQL text cannot store.
NO_NUL = r"^[^\x00]*$"
NEXT_CURSOR = "eyJrIjoidGFza3MiLCJ2IjpbImFybjphd3M6ZWNzOnVzLWVhc3QtMTpkZW1vIl19"


class LaunchType(StrEnum):
    """ECS launch types."""

    EC2 = "EC2"
    FARGATE = "FARGATE"
    EXTERNAL = "EXTERNAL"


class ServiceStatus(StrEnum):
    """ECS service states."""

    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    INACTIVE = "INACTIVE"


class ContainerInstanceStatus(StrEnum):
    """ECS container instance states."""

    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    REGISTERING = "REGISTERING"
    DEREGISTERING = "DEREGISTERING"
    REGISTRATION_FAILED = "REGISTRATION_FAILED"
    INACTIVE = "INACTIVE"


class WebhookEventType(StrEnum):
    """Alert types a webhook subscription can ask for."""

    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_STUCK = "deployment.stuck"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
    DEPLOYMENT_RECOVERED = "deployment.recovered"
    TASK_FAILED_TO_START = "task.failed_to_start"
    SERVICE_PLACEMENT_FAILURE = "service.placement_failure"
    CONTAINER_INSTANCE_DISCONNECTED = "container_instance.disconnected"


def _example(value: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [value]})


class Problem(BaseModel):
    """An error, as ``application/problem+json`` (RFC 9457)."""

    type: str = Field(description="Stable URI naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path.")
    param: str | None = Field(
        default=None, description="The offending parameter, when one is to blame."
    )
    scopes: list[dict[str, str]] | None = Field(
        default=None,
        description=(
            "409: the scopes (`account_id`, `region` and, where known, `service_arn`) "
            "a name or a deployment id matches."
        ),
    )

    model_config = _example(
        {
            "type": "https://ecswatch.dev/problems/invalid-parameter",
            "title": "Invalid parameter",
            "status": 400,
            "detail": "since must be an RFC 3339 timestamp such as 2025-01-31T12:00:00Z",
            "instance": "/v1/tasks",
            "param": "since",
        }
    )


def _tags() -> Any:
    return Field(description="ECS tags of the resource, as an object.")


def _tags_known() -> Any:
    return Field(
        description="False while the tags have not been fetched yet (`tags` may be incomplete)."
    )


def _account_id() -> Any:
    return Field(
        default=None,
        description="The AWS account the resource is in (from its ARN); null without an ARN.",
    )


def _region() -> Any:
    return Field(
        default=None,
        description="The AWS region the resource is in (from its ARN); null without an ARN.",
    )


def _gone_at() -> Any:
    return Field(
        default=None,
        description=(
            "When ECS stopped listing or describing the resource (kept, never deleted); "
            "null while it exists."
        ),
    )


# ---------------------------------------------------------------- clusters

CLUSTER_EXAMPLE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "region": REGION,
    "arn": CLUSTER_ARN,
    "name": "prod",
    "status": "ACTIVE",
    "active_services_count": 12,
    "running_tasks_count": 87,
    "pending_tasks_count": 1,
    "registered_container_instances_count": 6,
    "tags": {"team": "platform", "env": "prod"},
    "tags_known": True,
    "container_insights": "enabled",
    "gone_at": None,
}


class Cluster(BaseModel):
    """An ECS cluster."""

    arn: str
    name: str
    status: str | None
    active_services_count: int | None
    running_tasks_count: int | None
    pending_tasks_count: int | None
    registered_container_instances_count: int | None
    tags: dict[str, str] = _tags()
    tags_known: bool = _tags_known()
    container_insights: str | None = Field(
        default=None,
        description="The cluster's containerInsights setting (enabled, enhanced, disabled).",
    )
    gone_at: datetime | None = _gone_at()

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(CLUSTER_EXAMPLE)


# ---------------------------------------------------------------- deployments

DEPLOYMENT_EXAMPLE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "region": REGION,
    "id": "ecs-svc/1234567890123456789",
    "cluster": "prod",
    "cluster_arn": CLUSTER_ARN,
    "service": "web",
    "service_arn": SERVICE_ARN,
    "kind": "rolling",
    "outcome": "rolled_back",
    "reason": (
        "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/9876543210987654321"
    ),
    "task_definition": TASK_DEFINITION,
    "rollback_target": "ecs-svc/9876543210987654321",
    "started_at": "2025-03-01T10:00:00Z",
    "updated_at": "2025-03-01T10:14:03.120000Z",
    "finished_at": "2025-03-01T10:14:03.120000Z",
    "failed_tasks": 3,
    "stuck": False,
    "strategy": "ROLLING",
}


STRATEGY_DESCRIPTION = (
    "ROLLING, BLUE_GREEN, LINEAR or CANARY, as ECS's service deployment record says "
    "(DescribeServiceDeployments); null until the poller has matched one."
)


class Deployment(BaseModel):
    """One deployment of a service and how it ended."""

    id: str
    cluster: str | None
    cluster_arn: str | None
    service: str | None
    service_arn: str | None
    kind: str = Field(description="rolling, blue_green or codedeploy.")
    outcome: str = Field(
        description="in_progress, succeeded, failed, rolled_back, rollback_failed or stopped."
    )
    reason: str | None
    task_definition: str | None
    rollback_target: str | None = Field(
        description="The deployment ECS restores when this one rolls back."
    )
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    failed_tasks: int
    stuck: bool = Field(
        default=False,
        description=(
            "In progress with no running task of its task definition after "
            "ECSWATCH_STUCK_AFTER_S seconds."
        ),
    )
    strategy: str | None = Field(
        default=None,
        description=STRATEGY_DESCRIPTION,
    )

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(DEPLOYMENT_EXAMPLE)


CAUSE_EXAMPLE: dict[str, Any] = {
    "category": "out_of_memory",
    "summary": "container web was killed for memory (exit 137, OutOfMemoryError) in 3 of 3 "
    "failed tasks",
    "container": "web",
    "exit_code": 137,
    "evidence": [
        {
            "at": "2025-03-01T10:03:12.400000Z",
            "kind": "task_stopped",
            "detail": "task 0d2b8c1e5f7a4b2c9e1f3a5b7c9d1e3f stopped (EssentialContainerExited): "
            "Essential container in task exited; container web exit 137 "
            "(OutOfMemoryError: Container killed due to memory usage)",
        }
    ],
}


class CauseEvidence(BaseModel):
    """One fact a cause rests on."""

    at: datetime | None
    kind: Literal["task_stopped", "service_action", "hook", "alarm", "target_health", "codedeploy"]
    detail: str


class DeploymentCause(BaseModel):
    """Why a deployment failed (docs/alerts.md, "Why it failed")."""

    category: Literal[
        "image_pull",
        "secrets_or_config",
        "out_of_memory",
        "container_exit",
        "health_check",
        "placement",
        "hook",
        "alarm",
        "timeout",
        "codedeploy",
        "unknown",
    ]
    summary: str = Field(description="One sentence a person can act on.")
    container: str | None = Field(description="The container that explains it, if one does.")
    exit_code: int | None = Field(description="That container's exit code.")
    evidence: list[CauseEvidence] = Field(description="The facts it rests on, oldest first.")

    model_config = _example(CAUSE_EXAMPLE)


class TimelineEntry(BaseModel):
    """One event of the deployment, of one of its tasks, or of its service's actions."""

    at: datetime
    kind: str = Field(description="task, deployment, service_action, hook, codedeploy or event.")
    summary: str
    event_id: str = Field(description="The stored event (`GET /v1/events?resource=…`).")


class FailedTaskContainer(BaseModel):
    """A container of a failed task."""

    name: str | None
    exit_code: int | None
    reason: str | None


class FailedTask(BaseModel):
    """A task of the deployment that failed (replaced tasks are not listed)."""

    arn: str
    stop_code: str | None
    stopped_reason: str | None
    containers: list[FailedTaskContainer]


class TargetHealthPoint(BaseModel):
    """One ALB point of a target group of the deployment's service."""

    target_group: str = Field(description="The CloudWatch dimension, targetgroup/<name>/<id>.")
    name: str = Field(description="The metric, e.g. UnHealthyHostCount.")
    statistic: str
    timestamp: datetime
    value: float


DEPLOYMENT_DETAIL_EXAMPLE: dict[str, Any] = {
    **DEPLOYMENT_EXAMPLE,
    "cause": CAUSE_EXAMPLE,
    "timeline": [
        {
            "at": "2025-03-01T10:00:00Z",
            "kind": "deployment",
            "summary": "SERVICE_DEPLOYMENT_IN_PROGRESS: ECS deployment ecs-svc/1234567890123456789 "
            "in progress.",
            "event_id": "9f8e7d6c-5b4a-3f2e-1d0c-9b8a7f6e5d4c",
        },
        {
            "at": "2025-03-01T10:03:12Z",
            "kind": "task",
            "summary": "task 0d2b8c1e5f7a4b2c9e1f3a5b7c9d1e3f STOPPED: EssentialContainerExited: "
            "Essential container in task exited",
            "event_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        },
    ],
    "failed_tasks": [
        {
            "arn": TASK_ARN,
            "stop_code": "EssentialContainerExited",
            "stopped_reason": "Essential container in task exited",
            "containers": [
                {
                    "name": "web",
                    "exit_code": 137,
                    "reason": "OutOfMemoryError: Container killed due to memory usage",
                }
            ],
        }
    ],
    "failed_tasks_count": 3,
    "target_health": [
        {
            "target_group": "targetgroup/web/0123456789abcdef",
            "name": "UnHealthyHostCount",
            "statistic": "Maximum",
            "timestamp": "2025-03-01T10:04:00Z",
            "value": 2.0,
        }
    ],
}


class DeploymentDetail(BaseModel):
    """One deployment with why it failed, its timeline, failed tasks and target health.

    The fields of `/v1/deployments` items, except that `failed_tasks` lists the
    failed tasks and `failed_tasks_count` counts them.
    """

    id: str
    cluster: str | None
    cluster_arn: str | None
    service: str | None
    service_arn: str | None
    kind: str = Field(description="rolling, blue_green or codedeploy.")
    outcome: str = Field(
        description="in_progress, succeeded, failed, rolled_back, rollback_failed or stopped."
    )
    reason: str | None
    task_definition: str | None
    rollback_target: str | None
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    stuck: bool
    strategy: str | None = Field(description=STRATEGY_DESCRIPTION)
    cause: DeploymentCause | None = Field(
        description="Why it failed; null unless failed, rolled back or stuck."
    )
    timeline: list[TimelineEntry] = Field(
        description="Its events, its tasks' and its service's actions, oldest first (≤ 500)."
    )
    failed_tasks: list[FailedTask] = Field(description="Its failed tasks (≤ 200).")
    failed_tasks_count: int = Field(description="How many of its tasks failed (as listed).")
    target_health: list[TargetHealthPoint] = Field(
        description=(
            "ALB points of its service's target groups from its start to 10 minutes after "
            "its end; empty when it is not behind a load balancer."
        )
    )

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(DEPLOYMENT_DETAIL_EXAMPLE)


# ---------------------------------------------------------------- services

SERVICE_EXAMPLE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "region": REGION,
    "arn": SERVICE_ARN,
    "name": "web",
    "cluster": "prod",
    "cluster_arn": CLUSTER_ARN,
    "status": "ACTIVE",
    "desired_count": 4,
    "running_count": 4,
    "pending_count": 0,
    "launch_type": "EC2",
    "task_definition": TASK_DEFINITION,
    "deployment_controller": "ECS",
    "tags": {"team": "web"},
    "tags_known": True,
    "updated_at": "2025-03-01T10:14:03.120000Z",
    "gone_at": None,
}


class Service(BaseModel):
    """An ECS service (or daemon)."""

    arn: str
    name: str
    cluster: str | None
    cluster_arn: str | None
    status: str | None
    desired_count: int | None
    running_count: int | None
    pending_count: int | None
    launch_type: str | None
    task_definition: str | None
    deployment_controller: str | None
    tags: dict[str, str] = _tags()
    tags_known: bool = _tags_known()
    updated_at: datetime
    gone_at: datetime | None = _gone_at()

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(SERVICE_EXAMPLE)


class CapacityProviderItem(BaseModel):
    """One entry of a service's capacity provider strategy."""

    capacity_provider: str | None = None
    weight: int | None = None
    base: int | None = None


class CircuitBreaker(BaseModel):
    """The deployment circuit breaker."""

    enable: bool | None = None
    rollback: bool | None = None


class DeploymentAlarms(BaseModel):
    """CloudWatch alarms that fail a deployment."""

    names: list[str] = Field(default_factory=list)
    enable: bool | None = None
    rollback: bool | None = None


class DeploymentConfiguration(BaseModel):
    """How ECS rolls out a new deployment of the service."""

    circuit_breaker: CircuitBreaker | None = None
    alarms: DeploymentAlarms | None = None
    maximum_percent: int | None = None
    minimum_healthy_percent: int | None = None
    strategy: str | None = Field(default=None, description="ROLLING, BLUE_GREEN, ...")


class CurrentDeployment(BaseModel):
    """A deployment as DescribeServices reports it now, with its rollout state."""

    id: str | None = None
    status: str | None = Field(default=None, description="PRIMARY, ACTIVE or INACTIVE.")
    task_definition: str | None = None
    desired_count: int | None = None
    running_count: int | None = None
    pending_count: int | None = None
    failed_tasks: int | None = None
    rollout_state: str | None = Field(default=None, description="IN_PROGRESS, COMPLETED, FAILED.")
    rollout_state_reason: str | None = None
    launch_type: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class LoadBalancer(BaseModel):
    """A target group the service registers its tasks with."""

    target_group_arn: str | None = None
    load_balancer_name: str | None = None
    container_name: str | None = None
    container_port: int | None = None
    alternate_target_group_arn: str | None = Field(
        default=None,
        description="ECS native blue/green: the target group of the other colour.",
    )


SERVICE_DETAIL_EXAMPLE: dict[str, Any] = {
    **SERVICE_EXAMPLE,
    "deployments": [DEPLOYMENT_EXAMPLE],
    "capacity_provider_strategy": [],
    "deployment_configuration": {
        "circuit_breaker": {"enable": True, "rollback": True},
        "alarms": {"names": ["web-5xx"], "enable": True, "rollback": True},
        "maximum_percent": 200,
        "minimum_healthy_percent": 100,
        "strategy": "ROLLING",
    },
    "current_deployments": [
        {
            "id": "ecs-svc/1234567890123456789",
            "status": "PRIMARY",
            "task_definition": TASK_DEFINITION,
            "desired_count": 4,
            "running_count": 4,
            "pending_count": 0,
            "failed_tasks": 0,
            "rollout_state": "COMPLETED",
            "rollout_state_reason": "ECS deployment ecs-svc/1234567890123456789 completed.",
            "launch_type": "EC2",
            "created_at": "2025-03-01T10:00:00Z",
            "updated_at": "2025-03-01T10:14:03.120000Z",
        }
    ],
    "load_balancers": [
        {
            "target_group_arn": (
                f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/web-blue/73e2d6bc24d8a067"
            ),
            "load_balancer_name": None,
            "container_name": "app",
            "container_port": 8080,
            "alternate_target_group_arn": (
                f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/web-green/2453ed029918f21f"
            ),
        }
    ],
    "described_at": "2025-03-01T10:15:00Z",
}


class ServiceDetail(Service):
    """One service with its most recent deployments, newest first, and its Describe details."""

    deployments: list[Deployment] = Field(description="Up to 10 most recent deployments.")
    capacity_provider_strategy: list[CapacityProviderItem] = Field(default_factory=list)
    deployment_configuration: DeploymentConfiguration | None = None
    current_deployments: list[CurrentDeployment] = Field(
        default_factory=list, description="The deployments ECS reports now (DescribeServices)."
    )
    load_balancers: list[LoadBalancer] = Field(default_factory=list)
    described_at: datetime | None = Field(
        default=None, description="When DescribeServices last changed these details; null: never."
    )

    model_config = _example(SERVICE_DETAIL_EXAMPLE)


# ---------------------------------------------------------------- tasks


class Container(BaseModel):
    """One container of a task."""

    name: str | None = None
    last_status: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    image: str | None = None


TASK_EXAMPLE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "region": REGION,
    "arn": TASK_ARN,
    "id": "0d2b8c1e5f7a4b2c9e1f3a5b7c9d1e3f",
    "cluster": "prod",
    "cluster_arn": CLUSTER_ARN,
    "service": "web",
    "service_arn": SERVICE_ARN,
    "family": "web",
    "revision": 42,
    "launch_type": "EC2",
    "last_status": "STOPPED",
    "desired_status": "STOPPED",
    "health_status": "UNKNOWN",
    "stop_code": "EssentialContainerExited",
    "stopped_reason": "Essential container in task exited",
    "version": 5,
    "container_instance_arn": INSTANCE_ARN,
    "availability_zone": "us-east-1a",
    "containers": [
        {
            "name": "app",
            "last_status": "STOPPED",
            "exit_code": 137,
            "reason": "OutOfMemoryError: Container killed due to memory usage",
            "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/web:1.4.2",
        }
    ],
    "tags": {"team": "web"},
    "tags_known": True,
    "created_at": "2025-03-01T10:02:11.518000Z",
    "started_at": "2025-03-01T10:02:40.001000Z",
    "stopped_at": "2025-03-01T10:05:12.870000Z",
    "updated_at": "2025-03-01T10:05:12.870000Z",
    "task_definition_arn": TASK_DEFINITION,
    "cpu": "512",
    "memory": "1024",
    "gone_at": None,
}


class Task(BaseModel):
    """An ECS task with its containers."""

    arn: str
    id: str
    cluster: str | None
    cluster_arn: str | None
    service: str | None
    service_arn: str | None = Field(description="Derived from the task ARN and the service name.")
    family: str | None
    revision: int | None
    launch_type: str | None
    last_status: str | None
    desired_status: str | None
    health_status: str | None
    stop_code: str | None
    stopped_reason: str | None
    version: int | None = Field(description="ECS `detail.version` of the last applied change.")
    container_instance_arn: str | None
    availability_zone: str | None
    containers: list[Container]
    tags: dict[str, str] = _tags()
    tags_known: bool = _tags_known()
    created_at: datetime | None
    started_at: datetime | None
    stopped_at: datetime | None
    updated_at: datetime | None = Field(description="Time of the ECS change behind this state.")
    task_definition_arn: str | None = None
    cpu: str | None = Field(
        default=None, description="CPU units of the task (from its task definition when unset)."
    )
    memory: str | None = Field(
        default=None, description="MiB of memory of the task (from its task definition when unset)."
    )
    gone_at: datetime | None = _gone_at()

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(TASK_EXAMPLE)


# ---------------------------------------------------------------- container instances

CONTAINER_INSTANCE_EXAMPLE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "region": REGION,
    "arn": INSTANCE_ARN,
    "ec2_instance_id": "i-0abc123def4567890",
    "cluster": "prod",
    "cluster_arn": CLUSTER_ARN,
    "status": "ACTIVE",
    "agent_connected": False,
    "running_tasks_count": 3,
    "pending_tasks_count": 0,
    "registered_resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}],
    "remaining_resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 512}],
    "version": 14,
    "attributes": [{"name": "ecs.os-type", "value": "linux"}],
    "tags": {},
    "tags_known": False,
    "updated_at": "2025-03-01T09:58:40Z",
    "health_status": "OK",
    "gone_at": None,
}


class ContainerInstance(BaseModel):
    """An EC2 or external instance registered to a cluster."""

    arn: str
    ec2_instance_id: str | None
    cluster: str | None
    cluster_arn: str | None
    status: str | None
    agent_connected: bool | None
    running_tasks_count: int | None
    pending_tasks_count: int | None
    registered_resources: list[dict[str, Any]]
    remaining_resources: list[dict[str, Any]]
    version: int | None
    attributes: list[dict[str, Any]]
    tags: dict[str, str] = _tags()
    tags_known: bool = _tags_known()
    updated_at: datetime | None
    health_status: str | None = Field(
        default=None, description="Overall health (OK, IMPAIRED, INSUFFICIENT_DATA, INITIALIZING)."
    )
    gone_at: datetime | None = _gone_at()

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(CONTAINER_INSTANCE_EXAMPLE)


# ---------------------------------------------------------------- events

EVENT_EXAMPLE: dict[str, Any] = {
    "id": "8f07d6e2-0b0c-4c5b-9ec5-0e5f4e1c2d3a",
    "detail_type": "ECS Deployment State Change",
    "source": "aws.ecs",
    "account": ACCOUNT,
    "region": REGION,
    "time": "2025-03-01T10:14:03Z",
    "resources": [SERVICE_ARN],
    "detail": {
        "eventType": "ERROR",
        "eventName": "SERVICE_DEPLOYMENT_FAILED",
        "deploymentId": "ecs-svc/1234567890123456789",
        "updatedAt": "2025-03-01T10:14:03.120Z",
        "reason": "ECS deployment circuit breaker: task failed to start.",
    },
    "received_at": "2025-03-01T10:14:04.410000Z",
}


class Event(BaseModel):
    """One stored EventBridge event, as received."""

    id: str
    detail_type: str
    source: str
    account: str | None
    region: str | None
    time: datetime
    resources: list[Any]
    detail: dict[str, Any]
    received_at: datetime

    model_config = _example(EVENT_EXAMPLE)


# ---------------------------------------------------------------- metrics

METRIC_EXAMPLE: dict[str, Any] = {
    "namespace": "AWS/ECS",
    "name": "CPUUtilization",
    "statistic": "Average",
    "unit": "Percent",
    "cluster": "prod",
    "service": "web",
    "dimensions": {"ClusterName": "prod", "ServiceName": "web"},
    "timestamp": "2025-03-01T10:00:00Z",
    "value": 41.7,
}


class MetricPoint(BaseModel):
    """One CloudWatch datapoint."""

    namespace: str
    name: str = Field(description="The CloudWatch metric name, e.g. CPUUtilization.")
    statistic: str
    unit: str | None
    cluster: str | None
    service: str | None
    dimensions: dict[str, Any]
    timestamp: datetime
    value: float

    model_config = _example(METRIC_EXAMPLE)


# ---------------------------------------------------------------- alerts


class DeliveryCounts(BaseModel):
    """Webhook deliveries of one alert, one per subscription, by current state."""

    pending: int = Field(description="Queued or waiting for a retry.")
    delivered: int = Field(description="Answered with a 2xx.")
    failed: int = Field(description="Gave up after the retry budget (or refused permanently).")


ALERT_EXAMPLE: dict[str, Any] = {
    "account_id": ACCOUNT,
    "region": REGION,
    "id": "alrt_5f2a9c0d7e1b4a36",
    "type": "deployment.failed",
    "cluster": "prod",
    "service": "web",
    "deployment_id": "ecs-svc/1234567890123456789",
    "summary": "Deployment ecs-svc/1234567890123456789 of prod/web failed: circuit breaker",
    "created_at": "2025-03-01T10:14:04.530000Z",
    "deliveries": {"pending": 0, "delivered": 2, "failed": 1},
}


class Alert(BaseModel):
    """An alert ecswatch raised, with the state of its webhook deliveries."""

    id: str
    type: str
    cluster: str | None
    service: str | None
    deployment_id: str | None
    summary: str
    created_at: datetime
    deliveries: DeliveryCounts

    account_id: str | None = _account_id()
    region: str | None = _region()

    model_config = _example(ALERT_EXAMPLE)


# ---------------------------------------------------------------- quarantine

QUARANTINE_EXAMPLE: dict[str, Any] = {
    "id": 17,
    "body": '{"not": "an event"}',
    "error": "not an event: missing id, detail-type, source or detail",
    "first_seen": "2025-03-01T08:00:00Z",
    "last_seen": "2025-03-01T09:30:00Z",
    "count": 3,
}


class QuarantinedMessage(BaseModel):
    """A queue message that could never be processed."""

    id: int
    body: str
    error: str
    first_seen: datetime
    last_seen: datetime
    count: int

    model_config = _example(QUARANTINE_EXAMPLE)


# ---------------------------------------------------------------- webhooks


WebhookFormat = Literal["standard", "slack"]


class WebhookFilter(BaseModel):
    """Which alerts a subscription receives; every given field must match."""

    cluster: str | None = Field(
        default=None, max_length=2048, pattern=NO_NUL, description="Cluster name or ARN."
    )
    service: str | None = Field(
        default=None, max_length=2048, pattern=NO_NUL, description="Service name or ARN."
    )
    tag: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^[^:\x00]+:[^\x00]*$",
        description="`key:value` that the service must carry.",
    )
    account_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{12}$",
        description="AWS account id (12 digits) the alert's resource is in.",
    )
    region: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
        description="AWS region the alert's resource is in, such as `eu-west-1`.",
    )

    model_config = ConfigDict(extra="forbid")


WEBHOOK_EXAMPLE: dict[str, Any] = {
    "id": "wh_3b9f1c2d4e5a6b7c8d9e0f1a",
    "url": "https://hooks.example.com/ecswatch",
    "events": ["deployment.failed", "deployment.rolled_back"],
    "filter": {
        "cluster": "prod",
        "service": None,
        "tag": None,
        "account_id": "123456789012",
        "region": None,
    },
    "format": "standard",
    "active": True,
    "created_at": "2025-03-01T08:00:00Z",
}
WEBHOOK_SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# `whsec_` + standard base64 of 24 to 64 bytes: 8 to 20 full groups of four
# characters (24 to 60 bytes) and at most one padded group (1 or 2 bytes more), or
# 21 full groups (63 bytes) and at most one byte more.
_B64 = "[A-Za-z0-9+/]"
SECRET_PATTERN = (
    rf"^whsec_(?:(?:{_B64}{{4}}){{8,20}}(?:{_B64}{{2}}==|{_B64}{{3}}=)?"
    rf"|(?:{_B64}{{4}}){{21}}(?:{_B64}{{2}}==)?)$"
)
#: Key sizes Standard Webhooks allows (bytes, after base64 decoding).
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64


class WebhookCreate(BaseModel):
    """A new webhook subscription."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=NO_NUL,
        description="http(s) URL that receives alerts.",
    )
    events: list[WebhookEventType] = Field(min_length=1, description="Alert types to send.")
    filter: WebhookFilter = Field(default_factory=WebhookFilter)
    format: WebhookFormat = Field(
        default="standard",
        description=(
            "`standard`: the Standard Webhooks JSON body; `slack`: a Slack incoming-webhook "
            "message (`text` and `blocks`). Both are signed."
        ),
    )
    secret: str | None = Field(
        default=None,
        max_length=256,
        pattern=SECRET_PATTERN,
        description=(
            "Signing secret: `whsec_` and the base64 of a key of 24 to 64 bytes "
            "(Standard Webhooks). Generated when omitted."
        ),
    )

    @field_validator("secret")
    @classmethod
    def _secret_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        size = len(base64.b64decode(value.removeprefix("whsec_")))
        if not SECRET_MIN_BYTES <= size <= SECRET_MAX_BYTES:
            raise ValueError(
                f"the key must be {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, not {size}"
            )
        return value

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/ecswatch",
                    "events": ["deployment.failed", "deployment.rolled_back"],
                    "filter": {"cluster": "prod"},
                    "format": "standard",
                }
            ]
        },
    )


class Webhook(BaseModel):
    """A webhook subscription (without its secret)."""

    id: str
    url: str
    events: list[str]
    filter: WebhookFilter
    format: WebhookFormat = "standard"
    active: bool
    created_at: datetime

    model_config = _example(WEBHOOK_EXAMPLE)


class WebhookCreated(Webhook):
    """The subscription just created, with its signing secret; it is never shown again."""

    secret: str

    model_config = _example({**WEBHOOK_EXAMPLE, "secret": WEBHOOK_SECRET_EXAMPLE})


class WebhookSecretRotated(BaseModel):
    """A subscription's new signing secret; it is never shown again."""

    id: str
    secret: str
    previous_secret_expires_at: datetime | None = Field(
        description=(
            "Until then deliveries are signed with both the new and the previous secret; "
            "null when there is no overlap (ECSWATCH_WEBHOOK_SECRET_OVERLAP_S=0)."
        )
    )

    model_config = _example(
        {
            "id": "wh_3b9f1c2d4e5a6b7c8d9e0f1a",
            "secret": WEBHOOK_SECRET_EXAMPLE,
            "previous_secret_expires_at": "2025-03-02T08:00:00Z",
        }
    )


DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": 981,
    "webhook_id": "wh_3b9f1c2d4e5a6b7c8d9e0f1a",
    "alert_id": "alrt_5f2a9c0d7e1b4a36",
    "event_type": "deployment.failed",
    "attempt": 2,
    "status_code": 503,
    "error": "HTTP 503",
    "attempted_at": "2025-03-01T10:14:09Z",
    "next_attempt_at": "2025-03-01T10:14:39Z",
}


class WebhookDelivery(BaseModel):
    """One delivery attempt."""

    id: int
    webhook_id: str
    alert_id: str | None
    event_type: str
    attempt: int
    status_code: int | None
    error: str | None
    attempted_at: datetime
    next_attempt_at: datetime | None = Field(
        description="When the next retry is due; null when none."
    )

    model_config = _example(DELIVERY_EXAMPLE)


class WebhookTestQueued(BaseModel):
    """A test delivery has been queued for the dispatcher."""

    webhook_id: str
    outbox_id: int = Field(description="The outbox row the dispatcher will deliver.")
    event_type: Literal["webhook.test"] = "webhook.test"
    status: Literal["queued"] = "queued"

    model_config = _example(
        {
            "webhook_id": "wh_3b9f1c2d4e5a6b7c8d9e0f1a",
            "outbox_id": 4242,
            "event_type": "webhook.test",
            "status": "queued",
        }
    )


# ---------------------------------------------------------------- pages

T = TypeVar("T", bound=BaseModel)


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` to get the next one."""

    items: list[T]
    next_cursor: str | None = Field(description="Null on the last page.")


def _page_example(item: dict[str, Any]) -> ConfigDict:
    return _example({"items": [item], "next_cursor": NEXT_CURSOR})


# ---------------------------------------------------------------- accounts

ACCOUNT_EXAMPLE: dict[str, Any] = {
    "account_id": "123456789012",
    "region": "us-east-1",
    "monitored": True,
    "last_reconcile_at": "2025-03-01T10:10:00Z",
    "last_metrics_at": "2025-03-01T10:14:00Z",
    "last_error": None,
    "last_error_at": None,
    "clusters_count": 2,
    "services_count": 14,
    "running_tasks_count": 57,
    "last_heartbeat_at": "2025-03-01T10:15:00Z",
}


class AccountScope(BaseModel):
    """One account in one region (a scope): watched or only seen in events."""

    account_id: str
    region: str
    monitored: bool = Field(
        description="True when ecswatch holds credentials for this scope and describes its"
        " resources; false for a scope only seen in events (kept, never described)."
    )
    last_reconcile_at: datetime | None = Field(
        default=None, description="The end of the last successful reconcile of this scope."
    )
    last_metrics_at: datetime | None = Field(
        default=None,
        description="The end of the last successful CloudWatch metrics poll of this scope.",
    )
    last_error: str | None = Field(
        default=None,
        description="The last error of this scope's reconcile or metrics poll (access"
        " denied, an expired trust, a region not enabled, ...); kept after a later success.",
    )
    last_error_at: datetime | None = Field(default=None, description="When it happened.")
    clusters_count: int = Field(description="Clusters of this scope that exist now.")
    services_count: int = Field(description="Services of this scope that exist now.")
    running_tasks_count: int = Field(description="Tasks of this scope that are RUNNING now.")
    last_heartbeat_at: datetime | None = Field(
        default=None,
        description="When the newest heartbeat consumed from this scope was put on its"
        " default bus (by its time); null when none came. A stale one means the scope's"
        " event path (its forwarding rule, the organization's bus and rule) is broken"
        ' (docs/runbook.md, "ecswatch is blind").',
    )

    model_config = _example(ACCOUNT_EXAMPLE)


class AccountPage(Page[AccountScope]):
    """A page of scopes, by account and region."""

    model_config = _page_example(ACCOUNT_EXAMPLE)


class ClusterPage(Page[Cluster]):
    """A page of clusters, by name."""

    model_config = _page_example(CLUSTER_EXAMPLE)


class ServicePage(Page[Service]):
    """A page of services, by ARN."""

    model_config = _page_example(SERVICE_EXAMPLE)


class TaskPage(Page[Task]):
    """A page of tasks, by ARN."""

    model_config = _page_example(TASK_EXAMPLE)


class ContainerInstancePage(Page[ContainerInstance]):
    """A page of container instances, by ARN."""

    model_config = _page_example(CONTAINER_INSTANCE_EXAMPLE)


class DeploymentPage(Page[Deployment]):
    """A page of deployments, newest start first."""

    model_config = _page_example(DEPLOYMENT_EXAMPLE)


class EventPage(Page[Event]):
    """A page of events, newest first."""

    model_config = _page_example(EVENT_EXAMPLE)


class MetricPage(Page[MetricPoint]):
    """A page of metric points, newest first."""

    model_config = _page_example(METRIC_EXAMPLE)


class AlertPage(Page[Alert]):
    """A page of alerts, newest first."""

    model_config = _page_example(ALERT_EXAMPLE)


class QuarantinePage(Page[QuarantinedMessage]):
    """A page of quarantined messages, newest first."""

    model_config = _page_example(QUARANTINE_EXAMPLE)


class WebhookPage(Page[Webhook]):
    """A page of webhook subscriptions, oldest first."""

    model_config = _page_example(WEBHOOK_EXAMPLE)


class WebhookDeliveryPage(Page[WebhookDelivery]):
    """A page of delivery attempts, newest first."""

    model_config = _page_example(DELIVERY_EXAMPLE)


# ---------------------------------------------------------------- OpenAPI responses

_ERROR_DESCRIPTIONS = {
    400: "A parameter is invalid; `param` names it.",
    401: "The bearer token is missing or not valid (see `WWW-Authenticate`).",
    403: "The token's scope does not allow this route.",
    404: "No such resource.",
    409: (
        "The names (or the id) match resources of several scopes; `scopes` lists each "
        "one's `account_id`, `region` and, where known, `service_arn`."
    ),
}


def responses(
    model: type[BaseModel] | None,
    *,
    status: int = 200,
    errors: tuple[int, ...] = (400, 401),
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the success example plus each problem it can answer.

    Problems are declared with the :class:`Problem` model; the app's OpenAPI hook
    files them under ``application/problem+json``, the media type they are sent with.
    """
    documented: dict[int | str, dict[str, Any]] = {}
    if model is not None:
        extra = model.model_config.get("json_schema_extra")
        examples = extra.get("examples") if isinstance(extra, dict) else None
        if isinstance(examples, list) and examples:
            documented[status] = {"content": {"application/json": {"example": examples[0]}}}
    for code in errors:
        documented[code] = {"model": Problem, "description": _ERROR_DESCRIPTIONS[code]}
    return documented
