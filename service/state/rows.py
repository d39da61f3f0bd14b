"""Pure builders: a normalised event becomes the row values its upsert writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.config import ServiceRef
from service.deployments.outcome import (
    RANK,
    DeploymentKind,
    Outcome,
    Step,
    codedeploy_step,
    daemon_deployment_step,
    ecs_deployment_step,
    hook_step,
)
from service.events.models import (
    CodeDeployDeploymentStateChange,
    ContainerInstanceHealthChange,
    ContainerInstanceStateChange,
    DaemonDeploymentStateChange,
    DeploymentStateChange,
    HealthCheck,
    HookStateChange,
    NormalisedEvent,
    TaskStateChange,
)

Row = dict[str, Any]


def parse_arn(arn: str) -> tuple[str | None, str | None, str]:
    """``(region, account, resource)`` of an ARN; Nones where it is not one."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn":
        return parts[3] or None, parts[4] or None, parts[5]
    return None, None, arn


class JsonText:
    """A JSON document already serialised: it goes into the bulk payload verbatim.

    Deliberately not a dataclass: orjson would serialise a dataclass field by field
    instead of handing it to the payload's ``default``.
    """

    __slots__ = ("text",)

    def __init__(self, text: str | bytes) -> None:
        self.text = text


def raw_event_row(event: NormalisedEvent) -> Row:
    """The ``raw_events`` row; ``detail`` is the text validation already produced."""
    env = event.envelope
    detail: Any = event.raw.get("detail")
    if event.detail_json is not None:
        detail = JsonText(event.detail_json)
    elif not isinstance(detail, dict):
        detail = {}
    return {
        "id": env.id,
        "detail_type": env.detail_type,
        "source": env.source,
        "account": env.account,
        "region": env.region,
        "time": env.time,
        "resources": env.resources,
        "detail": detail,
        "cluster_arn": event.cluster_arn,
        "cluster_name": event.cluster_name,
        "natural_key": event.natural_key,
        "received_at": event.received_at,
    }


#: The columns of :func:`raw_event_row`.
RAW_EVENT_COLUMNS = (
    "id",
    "detail_type",
    "source",
    "account",
    "region",
    "time",
    "resources",
    "detail",
    "cluster_arn",
    "cluster_name",
    "natural_key",
    "received_at",
)


def cluster_row(cluster_arn: str, cluster_name: str | None) -> Row | None:
    region, account, resource = parse_arn(cluster_arn)
    name = cluster_name or resource.rpartition("/")[2]
    if not name:
        return None
    return {"arn": cluster_arn, "name": name, "account": account, "region": region}


def task_row(event: NormalisedEvent, task: TaskStateChange) -> Row:
    return {
        "arn": task.task_arn,
        "id": task.task_id,
        "cluster_arn": task.cluster_arn,
        "cluster_name": task.cluster_name,
        "service_name": task.service_name,
        "group": task.group,
        "started_by": task.started_by,
        "deployment_id": task.deployment_id,
        "task_definition_arn": task.task_definition_arn,
        "family": task.family,
        "revision": task.revision,
        "launch_type": task.launch_type,
        "capacity_provider_name": task.capacity_provider_name,
        "platform_version": task.platform_version,
        "last_status": task.last_status,
        "desired_status": task.desired_status,
        "health_status": task.health_status,
        "stop_code": task.stop_code,
        "stopped_reason": task.stopped_reason,
        "version": task.version,
        "container_instance_arn": task.container_instance_arn,
        "availability_zone": task.availability_zone,
        "cpu": task.cpu,
        "memory": task.memory,
        # Container dataclasses: the payload writes them as objects keyed by field.
        "containers": task.containers,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "stopping_at": task.stopping_at,
        "stopped_at": task.stopped_at,
        "updated_at": task.updated_at or event.envelope.time,
    }


def container_instance_row(event: NormalisedEvent, ci: ContainerInstanceStateChange) -> Row:
    return {
        "arn": ci.container_instance_arn,
        "ec2_instance_id": ci.ec2_instance_id,
        "cluster_arn": ci.cluster_arn,
        "cluster_name": ci.cluster_name,
        "status": ci.status,
        "status_reason": ci.status_reason,
        "agent_connected": ci.agent_connected,
        "agent_update_status": ci.agent_update_status,
        "running_tasks_count": ci.running_tasks_count,
        "pending_tasks_count": ci.pending_tasks_count,
        "registered_resources": [dict(r) for r in ci.registered_resources],
        "remaining_resources": [dict(r) for r in ci.remaining_resources],
        "attributes": [dict(a) for a in ci.attributes],
        "version_info": ci.version_info or {},
        "capacity_provider_name": ci.capacity_provider_name,
        "version": ci.version,
        "registered_at": ci.registered_at,
        "updated_at": ci.updated_at or event.envelope.time,
    }


def health_row(health: ContainerInstanceHealthChange) -> Row:
    return {
        "arn": health.container_instance_arn,
        "ec2_instance_id": health.ec2_instance_id,
        "cluster_arn": health.cluster_arn,
        "cluster_name": health.cluster_name,
        "capacity_provider_name": health.capacity_provider_name,
        "health_status": health.overall_status,
        "health_checks": [_health_check(c) for c in health.health_checks],
        "health_updated_at": health.updated_at,
    }


def _health_check(check: HealthCheck) -> Row:
    return {
        "type": check.type,
        "status": check.status,
        "last_status_change": _iso(check.last_status_change),
        "last_updated": _iso(check.last_updated),
        "status_reason": check.status_reason,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def service_row(
    arn: str, name: str | None, cluster_arn: str | None, cluster_name: str | None
) -> Row | None:
    name = name or parse_arn(arn)[2].rpartition("/")[2]
    if not name:
        return None
    return {"arn": arn, "name": name, "cluster_arn": cluster_arn, "cluster_name": cluster_name}


def _deployment_base(
    event: NormalisedEvent,
    *,
    deployment_id: str,
    kind: DeploymentKind,
    step: Step,
    at: datetime,
    event_name: str | None,
) -> Row:
    return {
        "id": deployment_id,
        "cluster_arn": None,
        "cluster_name": None,
        "service_arn": None,
        "service_name": None,
        "kind": kind.value,
        "outcome": step.outcome.value,
        "reason": None,
        "rollback_target": None,
        "lifecycle_stage": None,
        "codedeploy_application": None,
        "codedeploy_group": None,
        "task_definition": None,
        "last_event_at": at,
        "last_event_name": event_name,
        "event_ids": [event.envelope.id],
        "started_at": at,
        "updated_at": at,
        "finished_at": at if step.finished else None,
        "rank": RANK[step.outcome],
    }


def codedeploy_deployment_row(
    *,
    deployment_id: str,
    application: str | None,
    group: str | None,
    state: str | None,
    at: datetime,
    event_ids: list[str],
    codedeploy_groups: dict[str, ServiceRef],
    reason: str | None = None,
) -> Row:
    """The deployment upsert of a CodeDeploy state (``START`` … ``FAILURE``, ``STOP``):
    from its event, or from the poller's BatchGetDeployments check (no event id)."""
    step = codedeploy_step(state)
    target = codedeploy_groups.get(f"{application}/{group}")
    return {
        "id": deployment_id,
        "cluster_arn": None,
        "cluster_name": target.cluster if target else None,
        "service_arn": None,
        "service_name": target.service if target else None,
        "kind": DeploymentKind.CODEDEPLOY.value,
        "outcome": step.outcome.value,
        "reason": reason or (f"CodeDeploy {state}" if state else None),
        "rollback_target": None,
        "lifecycle_stage": None,
        "codedeploy_application": application,
        "codedeploy_group": group,
        "task_definition": None,
        "last_event_at": at,
        "last_event_name": state,
        "event_ids": event_ids,
        "started_at": at,
        "updated_at": at,
        "finished_at": at if step.finished else None,
        "rank": RANK[step.outcome],
    }


def deployment_row(event: NormalisedEvent, codedeploy_groups: dict[str, ServiceRef]) -> Row | None:
    """The deployment upsert of a deployment-related event, or None for other types.

    The ``rank`` key is not a column: the upsert uses it to order events that
    share a timestamp.
    """
    detail = event.detail
    time = event.envelope.time
    if isinstance(detail, DeploymentStateChange):
        row = _deployment_base(
            event,
            deployment_id=detail.deployment_id,
            kind=DeploymentKind.ROLLING,
            step=ecs_deployment_step(detail.event_name, detail.rollback_target),
            at=detail.updated_at or time,
            event_name=detail.event_name,
        )
        row.update(
            cluster_arn=detail.cluster_arn,
            cluster_name=detail.cluster_name,
            service_arn=detail.service_arn,
            service_name=detail.service_name,
            reason=detail.reason,
            rollback_target=detail.rollback_target,
        )
        return row
    if isinstance(detail, HookStateChange):
        deployment_id = detail.service_deployment_arn or (
            f"{detail.service_arn}/{detail.hook_id}" if detail.service_arn else detail.hook_id
        )
        row = _deployment_base(
            event,
            deployment_id=deployment_id,
            kind=DeploymentKind.BLUE_GREEN,
            step=hook_step(detail.event_name),
            at=detail.updated_at or time,
            event_name=detail.event_name,
        )
        stage = detail.lifecycle_stage
        row.update(
            cluster_arn=detail.cluster_arn,
            cluster_name=detail.cluster_name,
            service_arn=detail.service_arn,
            service_name=detail.service_name,
            lifecycle_stage=stage,
            reason=f"{detail.event_name} at {stage}" if detail.event_name and stage else None,
        )
        return row
    if isinstance(detail, CodeDeployDeploymentStateChange):
        return codedeploy_deployment_row(
            deployment_id=detail.deployment_id,
            application=detail.application,
            group=detail.deployment_group,
            state=detail.state,
            at=time,
            event_ids=[event.envelope.id],
            codedeploy_groups=codedeploy_groups,
        )
    if isinstance(detail, DaemonDeploymentStateChange):
        row = _deployment_base(
            event,
            deployment_id=detail.daemon_deployment_arn,
            kind=DeploymentKind.ROLLING,
            step=daemon_deployment_step(detail.event_name),
            at=detail.updated_at or time,
            event_name=detail.event_name,
        )
        row.update(
            cluster_arn=detail.cluster_arn,
            cluster_name=detail.cluster_name,
            service_arn=detail.daemon_arn,
            service_name=detail.daemon_name,
            reason=detail.reason,
            task_definition=detail.target_daemon_revision_arn,
        )
        return row
    return None


def task_deployment_row(task: TaskStateChange, at: datetime) -> Row | None:
    """A deployment seen only through its tasks' ``startedBy`` (no deployment events yet)."""
    if not task.deployment_id:
        return None
    return {
        "id": task.deployment_id,
        "cluster_arn": task.cluster_arn,
        "cluster_name": task.cluster_name,
        "service_name": task.service_name,
        "kind": DeploymentKind.ROLLING.value,
        "outcome": Outcome.IN_PROGRESS.value,
        "task_definition": task.task_definition_arn,
        "started_at": task.created_at or at,
        "updated_at": at,
    }


def service_arn_of_task(task_arn: str, cluster_name: str | None, service: str | None) -> str | None:
    """The ARN of the service a task belongs to, from the task's ARN (as /v1/tasks derives
    it): ``arn:…:task/c/id`` -> ``arn:…:service/c/<service>``."""
    head, sep, _ = task_arn.partition(":task/")
    if not (sep and head.startswith("arn:") and cluster_name and service):
        return None
    return f"{head}:service/{cluster_name}/{service}"


def service_row_of_task(task: TaskStateChange) -> Row | None:
    """A service named only by a task's ``group`` (``service:NAME``), created at once."""
    arn = service_arn_of_task(task.task_arn, task.cluster_name, task.service_name)
    if arn is None:
        return None
    return service_row(arn, task.service_name, task.cluster_arn, task.cluster_name)
