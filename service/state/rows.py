"""Pure builders: a normalised event becomes the row values its upsert writes."""

from __future__ import annotations

from typing import Any

from service.events.arns import parse_arn, resource_name
from service.events.models import (
    ContainerInstanceHealthChange,
    ContainerInstanceStateChange,
    HealthCheck,
    NormalisedEvent,
    TaskStateChange,
)
from service.events.times import iso

Row = dict[str, Any]


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
    arn = parse_arn(cluster_arn)
    region, account = (arn.region or None, arn.account or None) if arn else (None, None)
    name = cluster_name or resource_name(cluster_arn)
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
        "last_status_change": iso(check.last_status_change),
        "last_updated": iso(check.last_updated),
        "status_reason": check.status_reason,
    }


def service_row(
    arn: str, name: str | None, cluster_arn: str | None, cluster_name: str | None
) -> Row | None:
    name = name or resource_name(arn)
    if not name:
        return None
    return {"arn": arn, "name": name, "cluster_arn": cluster_arn, "cluster_name": cluster_name}


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
