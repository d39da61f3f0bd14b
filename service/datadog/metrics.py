"""The metric registry: every metric ecswatch sends to Datadog, as a closed set.

Names here are unprefixed; the sender puts ``ECSWATCH_METRIC_PREFIX`` in front.
``docs/metrics.md`` lists the same set (a test compares the two), and the
dashboard and monitors in ``service/datadog/assets`` may only use these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Literal


class MetricName(StrEnum):
    """Every metric name ecswatch sends (without the prefix)."""

    # State gauges, computed from Postgres every metrics interval.
    SERVICE_DESIRED = "service.desired"
    SERVICE_RUNNING = "service.running"
    SERVICE_PENDING = "service.pending"
    TASKS = "tasks"
    CONTAINER_INSTANCES = "container_instances"
    DEPLOYMENTS_IN_PROGRESS = "deployments.in_progress"
    # Counters, built from committed outbox rows (each fact counted once).
    TASKS_STARTED = "tasks.started"
    TASKS_STOPPED = "tasks.stopped"
    CONTAINERS_EXITED = "containers.exited"
    CONTAINERS_OOM_KILLED = "containers.oom_killed"
    DEPLOYMENTS_FINISHED = "deployments.finished"
    DEPLOYMENT_DURATION = "deployment.duration"
    ALERTS = "alerts"
    # CloudWatch AWS/ECS.
    ECS_CPU_UTILIZATION = "aws.ecs.cpu_utilization"
    ECS_MEMORY_UTILIZATION = "aws.ecs.memory_utilization"
    # CloudWatch ECS/ContainerInsights.
    CI_CPU_UTILIZED = "aws.ecs.containerinsights.cpu_utilized"
    CI_CPU_RESERVED = "aws.ecs.containerinsights.cpu_reserved"
    CI_MEMORY_UTILIZED = "aws.ecs.containerinsights.memory_utilized"
    CI_MEMORY_RESERVED = "aws.ecs.containerinsights.memory_reserved"
    CI_RUNNING_TASKS = "aws.ecs.containerinsights.running_task_count"
    CI_PENDING_TASKS = "aws.ecs.containerinsights.pending_task_count"
    CI_DESIRED_TASKS = "aws.ecs.containerinsights.desired_task_count"
    CI_NETWORK_RX = "aws.ecs.containerinsights.network_rx_bytes"
    CI_NETWORK_TX = "aws.ecs.containerinsights.network_tx_bytes"
    CI_STORAGE_READ = "aws.ecs.containerinsights.storage_read_bytes"
    CI_STORAGE_WRITE = "aws.ecs.containerinsights.storage_write_bytes"
    # CloudWatch AWS/ApplicationELB, per target group of a service.
    ALB_HEALTHY_HOSTS = "aws.alb.healthy_host_count"
    ALB_UNHEALTHY_HOSTS = "aws.alb.unhealthy_host_count"
    ALB_TARGET_5XX = "aws.alb.target_5xx_count"
    ALB_ELB_5XX = "aws.alb.elb_5xx_count"
    ALB_REQUESTS = "aws.alb.request_count"
    ALB_RESPONSE_TIME = "aws.alb.target_response_time"
    # ecswatch's own health, from Postgres and this process.
    SELF_EVENT_LAG = "self.event_lag"
    SELF_OUTBOX_PENDING = "self.outbox.pending"
    SELF_OUTBOX_OLDEST_AGE = "self.outbox.oldest_age"
    SELF_AWS_THROTTLES = "self.aws_throttles"


class SeriesType(IntEnum):
    """The v2 series intake's metric types (``MetricIntakeType``)."""

    UNSPECIFIED = 0
    COUNT = 1
    RATE = 2
    GAUGE = 3


MetricKind = Literal["gauge", "count"]

# The tags every ECS metric carries (Datadog's ECS conventions); ECS resource tags
# come on top, as ``key:value``.
ECS_TAGS: tuple[str, ...] = (
    "ecs_cluster_name",
    "clustername",
    "region",
    "aws_account",
)
SERVICE_TAGS: tuple[str, ...] = (*ECS_TAGS, "ecs_service", "servicename", "launch_type")
TASK_TAGS: tuple[str, ...] = (*SERVICE_TAGS, "task_family", "task_version")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What a metric is: its Datadog type, unit, tags and meaning."""

    name: MetricName
    kind: MetricKind
    unit: str
    tags: tuple[str, ...]
    meaning: str

    @property
    def series_type(self) -> SeriesType:
        return SeriesType.COUNT if self.kind == "count" else SeriesType.GAUGE


def _spec(
    name: MetricName, kind: MetricKind, unit: str, tags: tuple[str, ...], meaning: str
) -> MetricSpec:
    return MetricSpec(name, kind, unit, tags, meaning)


_CW = (*SERVICE_TAGS, "statistic")
_ALB = (*_CW, "target_group", "load_balancer")

REGISTRY: dict[MetricName, MetricSpec] = {
    s.name: s
    for s in (
        _spec(
            MetricName.SERVICE_DESIRED, "gauge", "task", SERVICE_TAGS, "Desired tasks of a service"
        ),
        _spec(
            MetricName.SERVICE_RUNNING, "gauge", "task", SERVICE_TAGS, "Running tasks of a service"
        ),
        _spec(
            MetricName.SERVICE_PENDING, "gauge", "task", SERVICE_TAGS, "Pending tasks of a service"
        ),
        _spec(
            MetricName.TASKS,
            "gauge",
            "task",
            (*TASK_TAGS, "task_status"),
            "Tasks known to ecswatch by last status (STOPPED excluded)",
        ),
        _spec(
            MetricName.CONTAINER_INSTANCES,
            "gauge",
            "host",
            (*ECS_TAGS, "status", "agent_connected"),
            "Container instances by status and agent connection",
        ),
        _spec(
            MetricName.DEPLOYMENTS_IN_PROGRESS,
            "gauge",
            "item",
            SERVICE_TAGS,
            "Deployments in progress per service",
        ),
        _spec(MetricName.TASKS_STARTED, "count", "task", TASK_TAGS, "Tasks that reached RUNNING"),
        _spec(
            MetricName.TASKS_STOPPED,
            "count",
            "task",
            (*TASK_TAGS, "stop_code"),
            "Tasks that stopped, by stop code",
        ),
        _spec(
            MetricName.CONTAINERS_EXITED,
            "count",
            "container",
            (*TASK_TAGS, "exit_class"),
            "Containers of stopped tasks that exited, by exit class",
        ),
        _spec(
            MetricName.CONTAINERS_OOM_KILLED,
            "count",
            "container",
            TASK_TAGS,
            "Containers killed for running out of memory",
        ),
        _spec(
            MetricName.DEPLOYMENTS_FINISHED,
            "count",
            "item",
            (*SERVICE_TAGS, "outcome", "deployment_kind"),
            "Deployments that reached an outcome",
        ),
        _spec(
            MetricName.DEPLOYMENT_DURATION,
            "gauge",
            "second",
            (*SERVICE_TAGS, "outcome", "deployment_kind"),
            "Duration of each finished deployment, stamped at its end",
        ),
        _spec(
            MetricName.ALERTS,
            "count",
            "event",
            (*SERVICE_TAGS, "alert_type"),
            "Alerts raised, by type",
        ),
        _spec(MetricName.ECS_CPU_UTILIZATION, "gauge", "percent", _CW, "AWS/ECS CPUUtilization"),
        _spec(
            MetricName.ECS_MEMORY_UTILIZATION, "gauge", "percent", _CW, "AWS/ECS MemoryUtilization"
        ),
        _spec(
            MetricName.CI_CPU_UTILIZED,
            "gauge",
            "unit",
            _CW,
            "Container Insights CpuUtilized (CPU units)",
        ),
        _spec(
            MetricName.CI_CPU_RESERVED,
            "gauge",
            "unit",
            _CW,
            "Container Insights CpuReserved (CPU units)",
        ),
        _spec(
            MetricName.CI_MEMORY_UTILIZED,
            "gauge",
            "mebibyte",
            _CW,
            "Container Insights MemoryUtilized",
        ),
        _spec(
            MetricName.CI_MEMORY_RESERVED,
            "gauge",
            "mebibyte",
            _CW,
            "Container Insights MemoryReserved",
        ),
        _spec(
            MetricName.CI_RUNNING_TASKS, "gauge", "task", _CW, "Container Insights RunningTaskCount"
        ),
        _spec(
            MetricName.CI_PENDING_TASKS, "gauge", "task", _CW, "Container Insights PendingTaskCount"
        ),
        _spec(
            MetricName.CI_DESIRED_TASKS, "gauge", "task", _CW, "Container Insights DesiredTaskCount"
        ),
        _spec(MetricName.CI_NETWORK_RX, "gauge", "byte", _CW, "Container Insights NetworkRxBytes"),
        _spec(MetricName.CI_NETWORK_TX, "gauge", "byte", _CW, "Container Insights NetworkTxBytes"),
        _spec(
            MetricName.CI_STORAGE_READ, "gauge", "byte", _CW, "Container Insights StorageReadBytes"
        ),
        _spec(
            MetricName.CI_STORAGE_WRITE,
            "gauge",
            "byte",
            _CW,
            "Container Insights StorageWriteBytes",
        ),
        _spec(
            MetricName.ALB_HEALTHY_HOSTS,
            "gauge",
            "host",
            _ALB,
            "ALB HealthyHostCount of a service's target group",
        ),
        _spec(
            MetricName.ALB_UNHEALTHY_HOSTS,
            "gauge",
            "host",
            _ALB,
            "ALB UnHealthyHostCount of a service's target group",
        ),
        _spec(
            MetricName.ALB_TARGET_5XX, "gauge", "response", _ALB, "ALB HTTPCode_Target_5XX_Count"
        ),
        _spec(MetricName.ALB_ELB_5XX, "gauge", "response", _ALB, "ALB HTTPCode_ELB_5XX_Count"),
        _spec(MetricName.ALB_REQUESTS, "gauge", "request", _ALB, "ALB RequestCount"),
        _spec(MetricName.ALB_RESPONSE_TIME, "gauge", "second", _ALB, "ALB TargetResponseTime"),
        _spec(
            MetricName.SELF_EVENT_LAG,
            "gauge",
            "second",
            (),
            "Longest delay from an ECS event's time to its storage, over the last interval",
        ),
        _spec(
            MetricName.SELF_OUTBOX_PENDING, "gauge", "item", ("outbox_kind",), "Pending outbox rows"
        ),
        _spec(
            MetricName.SELF_OUTBOX_OLDEST_AGE,
            "gauge",
            "second",
            (),
            "Age of the oldest pending outbox row",
        ),
        _spec(
            MetricName.SELF_AWS_THROTTLES,
            "count",
            "request",
            ("operation",),
            "AWS calls throttled in this process",
        ),
    )
}

# CloudWatch (namespace, metric name) -> registry name. A point of a metric not
# listed here is not forwarded (counted as dropped, reason "unregistered").
CLOUDWATCH_NAMES: dict[tuple[str, str], MetricName] = {
    ("AWS/ECS", "CPUUtilization"): MetricName.ECS_CPU_UTILIZATION,
    ("AWS/ECS", "MemoryUtilization"): MetricName.ECS_MEMORY_UTILIZATION,
    ("ECS/ContainerInsights", "CpuUtilized"): MetricName.CI_CPU_UTILIZED,
    ("ECS/ContainerInsights", "CpuReserved"): MetricName.CI_CPU_RESERVED,
    ("ECS/ContainerInsights", "MemoryUtilized"): MetricName.CI_MEMORY_UTILIZED,
    ("ECS/ContainerInsights", "MemoryReserved"): MetricName.CI_MEMORY_RESERVED,
    ("ECS/ContainerInsights", "RunningTaskCount"): MetricName.CI_RUNNING_TASKS,
    ("ECS/ContainerInsights", "PendingTaskCount"): MetricName.CI_PENDING_TASKS,
    ("ECS/ContainerInsights", "DesiredTaskCount"): MetricName.CI_DESIRED_TASKS,
    ("ECS/ContainerInsights", "NetworkRxBytes"): MetricName.CI_NETWORK_RX,
    ("ECS/ContainerInsights", "NetworkTxBytes"): MetricName.CI_NETWORK_TX,
    ("ECS/ContainerInsights", "StorageReadBytes"): MetricName.CI_STORAGE_READ,
    ("ECS/ContainerInsights", "StorageWriteBytes"): MetricName.CI_STORAGE_WRITE,
    ("AWS/ApplicationELB", "HealthyHostCount"): MetricName.ALB_HEALTHY_HOSTS,
    ("AWS/ApplicationELB", "UnHealthyHostCount"): MetricName.ALB_UNHEALTHY_HOSTS,
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): MetricName.ALB_TARGET_5XX,
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): MetricName.ALB_ELB_5XX,
    ("AWS/ApplicationELB", "RequestCount"): MetricName.ALB_REQUESTS,
    ("AWS/ApplicationELB", "TargetResponseTime"): MetricName.ALB_RESPONSE_TIME,
}


def exit_class(exit_code: int) -> str:
    """The exit-class tag value of a container exit code."""
    if exit_code == 0:
        return "0"
    if exit_code in (137, 139, 143):
        return str(exit_code)
    if 1 <= exit_code <= 127:
        return "1-127"
    return "other"
