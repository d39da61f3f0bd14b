"""Typed, immutable forms of ECS and CodeDeploy events.

One frozen dataclass per detail-type, built only by ``service.events.normalise``.
Every field except the identifying one is optional because real events drop
fields freely (FIELDS.md). Values from open sets (statuses, stop codes, event
names) stay ``str`` so an unknown value from a newer ECS passes through; the
StrEnums below name the values known today for code that compares against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict


class DetailType(StrEnum):
    """The ``detail-type`` values ecswatch understands (the dispatch key)."""

    TASK_STATE_CHANGE = "ECS Task State Change"
    CONTAINER_INSTANCE_STATE_CHANGE = "ECS Container Instance State Change"
    CONTAINER_INSTANCE_HEALTH_CHANGE = "ECS Container Instance Health Change"
    SERVICE_ACTION = "ECS Service Action"
    DEPLOYMENT_STATE_CHANGE = "ECS Deployment State Change"
    HOOK_STATE_CHANGE = "ECS Hook State Change"
    DAEMON_SERVICE_ACTION = "ECS Daemon Service Action"
    DAEMON_DEPLOYMENT_STATE_CHANGE = "ECS Daemon Deployment State Change"
    CODEDEPLOY_DEPLOYMENT_STATE_CHANGE = "CodeDeploy Deployment State-change Notification"
    # Not ECS-relevant: normalised to UnknownDetail (stored, counted, not applied).
    CODEDEPLOY_INSTANCE_STATE_CHANGE = "CodeDeploy Instance State-change Notification"


class TaskStatus(StrEnum):
    """Task ``lastStatus`` / ``desiredStatus`` values documented today."""

    PROVISIONING = "PROVISIONING"
    PENDING = "PENDING"
    ACTIVATING = "ACTIVATING"
    RUNNING = "RUNNING"
    DEACTIVATING = "DEACTIVATING"
    STOPPING = "STOPPING"
    DEPROVISIONING = "DEPROVISIONING"
    STOPPED = "STOPPED"
    DELETED = "DELETED"


class StopCode(StrEnum):
    """Task ``stopCode`` values documented today (others may appear)."""

    TASK_FAILED_TO_START = "TaskFailedToStart"
    ESSENTIAL_CONTAINER_EXITED = "EssentialContainerExited"
    USER_INITIATED = "UserInitiated"
    SERVICE_SCHEDULER_INITIATED = "ServiceSchedulerInitiated"
    SPOT_INTERRUPTION = "SpotInterruption"
    TERMINATION_NOTICE = "TerminationNotice"
    INFRASTRUCTURE_HEALTH = "InfrastructureHealth"


class ResourceEntry(TypedDict):
    """One registered/remaining resource of a container instance, value unwrapped.

    ECS spreads the value over ``integerValue`` / ``longValue`` / ``doubleValue`` /
    ``stringSetValue`` by ``type``; ``value`` holds whichever applies.
    """

    name: str
    type: str | None
    value: int | float | list[str] | None


class AttributeEntry(TypedDict):
    """One ``{name, value}`` attribute; most ECS capability attributes have no value."""

    name: str
    value: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """The EventBridge fields around ``detail``.

    ``time`` is always UTC and tz-aware; when the event had no usable ``time`` it
    comes from ``detail.updatedAt``, then ``detail.createdAt``, then the receive
    time, and ``time_was_missing`` says so.
    """

    id: str
    detail_type: str
    source: str
    account: str | None
    region: str | None
    time: datetime
    resources: tuple[str, ...]
    time_was_missing: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """One container of a task event. ``exit_code`` is absent until the container stops."""

    name: str | None = None
    container_arn: str | None = None
    last_status: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    image: str | None = None
    image_digest: str | None = None
    runtime_id: str | None = None
    cpu: str | None = None
    memory: str | None = None
    health_status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStateChange:
    """``ECS Task State Change``: ordered per task by ``version`` (newer wins)."""

    task_arn: str
    task_id: str
    cluster_arn: str | None = None
    cluster_name: str | None = None
    task_definition_arn: str | None = None
    family: str | None = None
    revision: int | None = None
    group: str | None = None
    service_name: str | None = None
    started_by: str | None = None
    deployment_id: str | None = None
    last_status: str | None = None
    desired_status: str | None = None
    health_status: str | None = None
    stop_code: str | None = None
    stopped_reason: str | None = None
    launch_type: str | None = None
    capacity_provider_name: str | None = None
    platform_version: str | None = None
    availability_zone: str | None = None
    container_instance_arn: str | None = None
    connectivity: str | None = None
    version: int | None = None
    cpu: str | None = None
    memory: str | None = None
    containers: tuple[Container, ...] = ()
    created_at: datetime | None = None
    connectivity_at: datetime | None = None
    pull_started_at: datetime | None = None
    pull_stopped_at: datetime | None = None
    started_at: datetime | None = None
    stopping_at: datetime | None = None
    execution_stopped_at: datetime | None = None
    stopped_at: datetime | None = None
    updated_at: datetime | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    overrides: dict[str, Any] | None = None
    attributes: tuple[AttributeEntry, ...] = ()

    @property
    def is_stopping(self) -> bool:
        """ECS has decided to stop the task but it has not reached STOPPED yet."""
        return self.desired_status == TaskStatus.STOPPED and self.last_status != TaskStatus.STOPPED


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerInstanceStateChange:
    """``ECS Container Instance State Change``: ordered per instance by ``version``."""

    container_instance_arn: str
    ec2_instance_id: str | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    status: str | None = None
    status_reason: str | None = None
    agent_connected: bool | None = None
    agent_update_status: str | None = None
    version: int | None = None
    running_tasks_count: int | None = None
    pending_tasks_count: int | None = None
    registered_resources: tuple[ResourceEntry, ...] = ()
    remaining_resources: tuple[ResourceEntry, ...] = ()
    attributes: tuple[AttributeEntry, ...] = ()
    version_info: dict[str, Any] | None = None
    capacity_provider_name: str | None = None
    registered_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """One entry of ``healthChecks`` in a container instance health event."""

    type: str | None = None
    status: str | None = None
    last_status_change: datetime | None = None
    last_updated: datetime | None = None
    status_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerInstanceHealthChange:
    """``ECS Container Instance Health Change``: versionless; ``updated_at`` orders it.

    ``updated_at`` is the newest ``lastUpdated`` of the checks, else the envelope time.
    """

    container_instance_arn: str
    updated_at: datetime
    ec2_instance_id: str | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    capacity_provider_name: str | None = None
    overall_status: str | None = None
    health_checks: tuple[HealthCheck, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAction:
    """``ECS Service Action`` (steady state, placement failure, ...): versionless."""

    event_name: str
    event_type: str | None = None
    service_arn: str | None = None
    service_name: str | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    created_at: datetime | None = None
    reason: str | None = None
    capacity_provider_arns: tuple[str, ...] = ()
    container_instance_arns: tuple[str, ...] = ()
    task_arns: tuple[str, ...] = ()
    desired_count: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentStateChange:
    """``ECS Deployment State Change`` of a rolling deployment.

    A circuit-breaker rollback is announced only in ``reason`` ("rolling back to
    deploymentId X"); ``rollback_target`` is that X, the deployment ECS restores.
    """

    deployment_id: str
    event_type: str | None = None
    event_name: str | None = None
    service_arn: str | None = None
    service_name: str | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    updated_at: datetime | None = None
    reason: str | None = None
    rollback_target: str | None = None

    @property
    def is_rollback(self) -> bool:
        """The reason says ECS is rolling this service back to ``rollback_target``."""
        return self.rollback_target is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class HookStateChange:
    """``ECS Hook State Change``: a lifecycle hook of an ECS native blue/green deployment."""

    hook_id: str
    event_type: str | None = None
    event_name: str | None = None
    hook_type: str | None = None
    lifecycle_stage: str | None = None
    expires_at: datetime | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    service_arn: str | None = None
    service_name: str | None = None
    service_deployment_arn: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonServiceAction:
    """``ECS Daemon Service Action`` (a daemon task failed to be created or to run)."""

    daemon_arn: str
    daemon_name: str | None = None
    event_type: str | None = None
    event_name: str | None = None
    failure_type: str | None = None
    daemon_revision_arn: str | None = None
    daemon_task_definition_arn: str | None = None
    container_instance_arn: str | None = None
    task_arn: str | None = None
    capacity_provider_name: str | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    created_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonDeploymentStateChange:
    """``ECS Daemon Deployment State Change``."""

    daemon_deployment_arn: str
    daemon_arn: str | None = None
    daemon_name: str | None = None
    event_type: str | None = None
    event_name: str | None = None
    target_daemon_revision_arn: str | None = None
    cluster_arn: str | None = None
    cluster_name: str | None = None
    updated_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeDeployDeploymentStateChange:
    """``CodeDeploy Deployment State-change Notification``.

    It names no ECS cluster or service: the deployment group is mapped to a
    service out of band (GetDeploymentGroup or ``ECSWATCH_CODEDEPLOY_GROUPS``).
    """

    deployment_id: str
    application: str | None = None
    deployment_group: str | None = None
    state: str | None = None
    instance_group_id: str | None = None
    region: str | None = None
    application_arn: str | None = None
    deployment_group_arn: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownDetail:
    """An event of a detail-type ecswatch does not model: stored raw and counted, not applied."""

    detail_type: str
    detail: dict[str, Any]


EventDetail = (
    TaskStateChange
    | ContainerInstanceStateChange
    | ContainerInstanceHealthChange
    | ServiceAction
    | DeploymentStateChange
    | HookStateChange
    | DaemonServiceAction
    | DaemonDeploymentStateChange
    | CodeDeployDeploymentStateChange
    | UnknownDetail
)
"""The typed ``detail`` of a :class:`NormalisedEvent`; match on the class."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NormalisedEvent:
    """A validated event: envelope, typed detail, and the raw dict to store as received.

    ``natural_key`` deduplicates versionless events re-sent under a new EventBridge
    id (FIELDS.md rule 6); it is ``None`` for task and container-instance state
    changes, which dedupe by ``detail.version``, and for unknown detail-types.
    """

    envelope: Envelope
    detail: EventDetail
    raw: dict[str, Any]
    cluster_arn: str | None
    cluster_name: str | None
    natural_key: str | None
    received_at: datetime
    # ``raw["detail"]`` as JSON text (UTF-8 bytes from the fast check) when
    # validation produced it: the raw event is stored from it, not serialised
    # again. Not part of the event's identity.
    detail_json: str | bytes | None = field(default=None, compare=False, repr=False)

    @property
    def detail_type(self) -> str:
        """The event's ``detail-type`` exactly as received."""
        return self.envelope.detail_type

    @property
    def is_known(self) -> bool:
        """False for detail-types that are stored but not modelled."""
        return not isinstance(self.detail, UnknownDetail)
