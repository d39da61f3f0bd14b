"""The metric registry: every metric ecswatch sends to Datadog, as a closed set.

Names here are unprefixed; the sender puts ``ECSWATCH_METRIC_PREFIX`` in front.
``docs/metrics.md`` lists the same set (a test compares the two), and the
dashboard and monitors in ``service/datadog/assets`` may only use these names.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    # CloudWatch AWS/ECS, per cluster and per service (two names, as Datadog keeps them).
    CLUSTER_CPU_UTILIZATION = "aws.ecs.cluster.cpu_utilization"
    CLUSTER_MEMORY_UTILIZATION = "aws.ecs.cluster.memory_utilization"
    SERVICE_CPU_UTILIZATION = "aws.ecs.service.cpu_utilization"
    SERVICE_MEMORY_UTILIZATION = "aws.ecs.service.memory_utilization"
    # CloudWatch ECS/ContainerInsights, per service.
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
    ALB_REQUESTS = "aws.alb.request_count"
    ALB_RESPONSE_TIME = "aws.alb.target_response_time"
    # ecswatch's own health, from Postgres and this process.
    SELF_EVENT_LAG = "self.event_lag"
    SELF_OUTBOX_PENDING = "self.outbox.pending"
    SELF_OUTBOX_OLDEST_AGE = "self.outbox.oldest_age"
    SELF_AWS_THROTTLES = "self.aws_throttles"
    SELF_OUTBOX_DEAD = "self.outbox.dead"
    SELF_HEARTBEAT_AGE = "self.heartbeat.age"
    SELF_POLLER_LEADERS = "self.poller.leaders"
    SELF_SCOPE_HEARTBEAT_AGE = "self.scope.heartbeat.age"
    SELF_SCOPE_ERROR = "self.scope.error"


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
#: The tags of a scope's own series: its account and region.
SCOPE_TAGS: tuple[str, ...] = ("aws_account", "region")
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


_CLUSTER_CW = (*ECS_TAGS, "statistic")
_CW = (*SERVICE_TAGS, "statistic")
# Datadog's AWS integration tags ALB series ``targetgroup`` and ``loadbalancer``
# (the CloudWatch dimension values): the same names let ecswatch's series join them.
_ALB = (*_CW, "targetgroup", "loadbalancer")

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
        _spec(
            MetricName.CLUSTER_CPU_UTILIZATION,
            "gauge",
            "percent",
            _CLUSTER_CW,
            "AWS/ECS CPUUtilization of a cluster",
        ),
        _spec(
            MetricName.CLUSTER_MEMORY_UTILIZATION,
            "gauge",
            "percent",
            _CLUSTER_CW,
            "AWS/ECS MemoryUtilization of a cluster",
        ),
        _spec(
            MetricName.SERVICE_CPU_UTILIZATION,
            "gauge",
            "percent",
            _CW,
            "AWS/ECS CPUUtilization of a service",
        ),
        _spec(
            MetricName.SERVICE_MEMORY_UTILIZATION,
            "gauge",
            "percent",
            _CW,
            "AWS/ECS MemoryUtilization of a service",
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
        _spec(
            MetricName.CI_NETWORK_RX,
            "gauge",
            "byte",
            _CW,
            "Container Insights NetworkRxBytes (bytes a second)",
        ),
        _spec(
            MetricName.CI_NETWORK_TX,
            "gauge",
            "byte",
            _CW,
            "Container Insights NetworkTxBytes (bytes a second)",
        ),
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
        _spec(
            MetricName.SELF_OUTBOX_DEAD,
            "gauge",
            "item",
            ("outbox_kind",),
            "Outbox rows whose retry budget is spent (status dead)",
        ),
        _spec(
            MetricName.SELF_HEARTBEAT_AGE,
            "gauge",
            "second",
            (),
            "Seconds since the time of the newest heartbeat consumed off the queue",
        ),
        _spec(
            MetricName.SELF_POLLER_LEADERS,
            "gauge",
            "process",
            (),
            "Processes holding the poller's leader lock (1 when healthy)",
        ),
        _spec(
            MetricName.SELF_SCOPE_HEARTBEAT_AGE,
            "gauge",
            "second",
            SCOPE_TAGS,
            "Per watched scope, seconds since the time of the newest heartbeat consumed from it",
        ),
        _spec(
            MetricName.SELF_SCOPE_ERROR,
            "gauge",
            "item",
            SCOPE_TAGS,
            "Per watched scope, 1 while its last reconcile or metrics round failed, else 0",
        ),
    )
}

#: The scopes a CloudWatch point belongs to, from its dimensions.
CloudWatchScope = Literal["cluster", "service", "target_group"]

# CloudWatch (namespace, metric name, scope) -> registry name. A point of a metric
# not listed here is not forwarded (counted as dropped, reason "unregistered").
CLOUDWATCH_NAMES: dict[tuple[str, str, CloudWatchScope], MetricName] = {
    ("AWS/ECS", "CPUUtilization", "cluster"): MetricName.CLUSTER_CPU_UTILIZATION,
    ("AWS/ECS", "MemoryUtilization", "cluster"): MetricName.CLUSTER_MEMORY_UTILIZATION,
    ("AWS/ECS", "CPUUtilization", "service"): MetricName.SERVICE_CPU_UTILIZATION,
    ("AWS/ECS", "MemoryUtilization", "service"): MetricName.SERVICE_MEMORY_UTILIZATION,
    ("ECS/ContainerInsights", "CpuUtilized", "service"): MetricName.CI_CPU_UTILIZED,
    ("ECS/ContainerInsights", "CpuReserved", "service"): MetricName.CI_CPU_RESERVED,
    ("ECS/ContainerInsights", "MemoryUtilized", "service"): MetricName.CI_MEMORY_UTILIZED,
    ("ECS/ContainerInsights", "MemoryReserved", "service"): MetricName.CI_MEMORY_RESERVED,
    ("ECS/ContainerInsights", "RunningTaskCount", "service"): MetricName.CI_RUNNING_TASKS,
    ("ECS/ContainerInsights", "PendingTaskCount", "service"): MetricName.CI_PENDING_TASKS,
    ("ECS/ContainerInsights", "DesiredTaskCount", "service"): MetricName.CI_DESIRED_TASKS,
    ("ECS/ContainerInsights", "NetworkRxBytes", "service"): MetricName.CI_NETWORK_RX,
    ("ECS/ContainerInsights", "NetworkTxBytes", "service"): MetricName.CI_NETWORK_TX,
    ("ECS/ContainerInsights", "StorageReadBytes", "service"): MetricName.CI_STORAGE_READ,
    ("ECS/ContainerInsights", "StorageWriteBytes", "service"): MetricName.CI_STORAGE_WRITE,
    ("AWS/ApplicationELB", "HealthyHostCount", "target_group"): MetricName.ALB_HEALTHY_HOSTS,
    ("AWS/ApplicationELB", "UnHealthyHostCount", "target_group"): MetricName.ALB_UNHEALTHY_HOSTS,
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "target_group"): MetricName.ALB_TARGET_5XX,
    ("AWS/ApplicationELB", "RequestCount", "target_group"): MetricName.ALB_REQUESTS,
    ("AWS/ApplicationELB", "TargetResponseTime", "target_group"): MetricName.ALB_RESPONSE_TIME,
}


def cloudwatch_scope(dimensions: Mapping[str, object]) -> CloudWatchScope:
    """Whether a CloudWatch point is a target group's, a service's or a cluster's."""
    if "TargetGroup" in dimensions:
        return "target_group"
    if "ServiceName" in dimensions:
        return "service"
    return "cluster"


def cloudwatch_name(
    namespace: str, name: str, dimensions: Mapping[str, object]
) -> MetricName | None:
    """The registry name of a CloudWatch point; None when it is not forwarded."""
    return CLOUDWATCH_NAMES.get((namespace, name, cloudwatch_scope(dimensions)))


def exit_class(exit_code: int) -> str:
    """The exit-class tag value of a container exit code."""
    if exit_code == 0:
        return "0"
    if exit_code in (137, 139, 143):
        return str(exit_code)
    if 1 <= exit_code <= 127:
        return "1-127"
    return "other"
