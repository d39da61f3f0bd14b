"""ORM models of the ECS state copy, raw events, quarantine and metric points.

Alembic migrations are the schema's source of truth; these models must match
them exactly (a test runs autogenerate and expects no difference).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base
from service.deployments.outcome import DeploymentKind, Outcome


class RawEvent(Base):
    """Every accepted event as received, once per EventBridge id.

    Partitioned by day on ``time`` (docs/architecture.md, "Raw event partitions"):
    the primary key includes it, as a partitioned table's unique keys must; a
    re-delivered event carries the same ``time``, so ``(id, time)`` still finds it.
    """

    __tablename__ = "raw_events"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    detail_type: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    account: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(primary_key=True)
    resources: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    detail: Mapped[dict[str, Any]]
    cluster_arn: Mapped[str | None] = mapped_column(Text)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    # Versionless events re-sent under a new EventBridge id share this key; it is
    # unique in raw_event_natural_keys (a partitioned table cannot enforce it).
    natural_key: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_raw_events_time_id", text("time DESC"), text("id DESC")),
        Index("ix_raw_events_detail_type_time", "detail_type", text("time DESC")),
        Index("ix_raw_events_cluster_name_time", "cluster_name", text("time DESC")),
        Index("ix_raw_events_cluster_arn_time", "cluster_arn", text("time DESC")),
        Index(
            "ix_raw_events_resources",
            "resources",
            postgresql_using="gin",
            postgresql_ops={"resources": "jsonb_path_ops"},
        ),
        {"postgresql_partition_by": "RANGE (time)"},
    )


_PARTITION_NAME = re.compile(r"raw_events_(p[0-9]{8}|default)")


def is_raw_event_partition(table_name: str) -> bool:
    """A partition of ``raw_events``: created at run time, so in no model."""
    return _PARTITION_NAME.fullmatch(table_name) is not None


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: autogenerate leaves the partitions alone."""
    return not (type_ == "table" and name is not None and is_raw_event_partition(name))


class RawEventNaturalKey(Base):
    """The event that claimed a natural key first: the key's one raw event."""

    __tablename__ = "raw_event_natural_keys"

    natural_key: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(index=True)


class QuarantinedMessage(Base):
    """A message that can never be processed, with the reason; repeats bump ``count``."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    body_sha256: Mapped[str] = mapped_column(Text, unique=True)
    body: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    source_message_id: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen: Mapped[datetime] = mapped_column(server_default=func.now())
    count: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (Index("ix_quarantine_last_seen_id", text("last_seen DESC"), text("id DESC")),)


class Cluster(Base):
    """An ECS cluster, created on first sight and refreshed by DescribeClusters."""

    __tablename__ = "clusters"

    arn: Mapped[str] = mapped_column(Text, primary_key=True)
    # Not unique: two accounts or regions may each have a cluster "prod".
    name: Mapped[str] = mapped_column(Text, index=True)
    account: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text)
    active_services_count: Mapped[int | None] = mapped_column(Integer)
    running_tasks_count: Mapped[int | None] = mapped_column(Integer)
    pending_tasks_count: Mapped[int | None] = mapped_column(Integer)
    registered_container_instances_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Written by DescribeClusters (enrichment and reconciliation, 0004).
    container_insights: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    described_at: Mapped[datetime | None]
    gone_at: Mapped[datetime | None]


class Service(Base):
    """An ECS service (or a daemon), keyed by its ARN."""

    __tablename__ = "services"

    arn: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    cluster_arn: Mapped[str | None] = mapped_column(Text)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text)
    desired_count: Mapped[int | None] = mapped_column(Integer)
    running_count: Mapped[int | None] = mapped_column(Integer)
    pending_count: Mapped[int | None] = mapped_column(Integer)
    launch_type: Mapped[str | None] = mapped_column(Text)
    task_definition: Mapped[str | None] = mapped_column(Text)
    deployment_controller: Mapped[str | None] = mapped_column(Text)
    last_event_name: Mapped[str | None] = mapped_column(Text)
    last_event_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Written by DescribeServices (enrichment and reconciliation, 0004).
    capacity_provider_strategy: Mapped[list[Any]] = mapped_column(
        server_default=text("'[]'::jsonb")
    )
    deployment_configuration: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("'{}'::jsonb")
    )
    current_deployments: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    load_balancers: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    described_at: Mapped[datetime | None]
    gone_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_services_cluster_name_name", "cluster_name", "name"),
        Index("ix_services_name_arn", "name", "arn"),
        Index("ix_services_status_arn", "status", "arn"),
        Index("ix_services_launch_type_arn", "launch_type", "arn"),
    )


class Deployment(Base):
    """One deployment: rolling, ECS native blue/green or CodeDeploy blue/green."""

    __tablename__ = "deployments"

    # Deployment ids are unique only within a scope (account and region, migration
    # 0014): '' where the scope of a deployment stored before was not known.
    account_id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    region: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    cluster_arn: Mapped[str | None] = mapped_column(Text)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    service_arn: Mapped[str | None] = mapped_column(Text)
    service_name: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, server_default=text(f"'{DeploymentKind.ROLLING}'"))
    outcome: Mapped[str] = mapped_column(Text, server_default=text(f"'{Outcome.IN_PROGRESS}'"))
    reason: Mapped[str | None] = mapped_column(Text)
    task_definition: Mapped[str | None] = mapped_column(Text)
    rollback_target: Mapped[str | None] = mapped_column(Text)
    lifecycle_stage: Mapped[str | None] = mapped_column(Text)
    codedeploy_application: Mapped[str | None] = mapped_column(Text)
    codedeploy_group: Mapped[str | None] = mapped_column(Text)
    failed_tasks: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # ECS's service deployment record (docs/events.md, "Service deployments"): the
    # strategy, the CloudWatch alarms that triggered, the matched service deployment.
    strategy: Mapped[str | None] = mapped_column(Text)
    triggered_alarms: Mapped[list[Any] | None]
    service_deployment_arn: Mapped[str | None] = mapped_column(Text)
    # No running task of its task definition ECSWATCH_STUCK_AFTER_S after it started.
    stuck: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Ordering key of versionless deployment events (detail.updatedAt, then time).
    last_event_at: Mapped[datetime | None]
    last_event_name: Mapped[str | None] = mapped_column(Text)
    event_ids: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_deployments_service", "cluster_name", "service_name", text("started_at DESC")),
        # Lookups of an id in every scope (the detail route without a scope).
        Index("ix_deployments_id", "id"),
        # /v1/deployments?account_id=… and ?region=…, newest first (0014).
        Index(
            "ix_deployments_account_id_started_at_id",
            "account_id",
            text("started_at DESC"),
            text("id DESC"),
        ),
        Index(
            "ix_deployments_region_started_at_id",
            "region",
            text("started_at DESC"),
            text("id DESC"),
        ),
        # /v1/deployments pages by (started_at DESC, id DESC), optionally by outcome.
        Index("ix_deployments_started_at_id", text("started_at DESC"), text("id DESC")),
        Index(
            "ix_deployments_outcome_started_at_id",
            "outcome",
            text("started_at DESC"),
            text("id DESC"),
        ),
        # CodeDeploy deployments by group: the mapper's back-fill (0007).
        Index(
            "ix_deployments_codedeploy_group",
            "codedeploy_application",
            "codedeploy_group",
            postgresql_where=text("codedeploy_application IS NOT NULL"),
        ),
    )


class Task(Base):
    """An ECS task with its containers; applied only when ``version`` grows."""

    __tablename__ = "tasks"

    arn: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text, index=True)
    cluster_arn: Mapped[str | None] = mapped_column(Text)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    service_name: Mapped[str | None] = mapped_column(Text)
    group: Mapped[str | None] = mapped_column(Text)
    started_by: Mapped[str | None] = mapped_column(Text)
    deployment_id: Mapped[str | None] = mapped_column(Text)
    task_definition_arn: Mapped[str | None] = mapped_column(Text)
    family: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int | None] = mapped_column(Integer)
    launch_type: Mapped[str | None] = mapped_column(Text)
    capacity_provider_name: Mapped[str | None] = mapped_column(Text)
    platform_version: Mapped[str | None] = mapped_column(Text)
    last_status: Mapped[str | None] = mapped_column(Text)
    desired_status: Mapped[str | None] = mapped_column(Text)
    health_status: Mapped[str | None] = mapped_column(Text)
    stop_code: Mapped[str | None] = mapped_column(Text)
    stopped_reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(BigInteger)
    container_instance_arn: Mapped[str | None] = mapped_column(Text)
    availability_zone: Mapped[str | None] = mapped_column(Text)
    cpu: Mapped[str | None] = mapped_column(Text)
    memory: Mapped[str | None] = mapped_column(Text)
    containers: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    stopping_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    # Time of the ECS change (detail.updatedAt) that produced this row.
    updated_at: Mapped[datetime | None]
    # When ecswatch last wrote the row (keyset order of /v1/tasks).
    seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set when ECS no longer lists or describes the task (reconciliation, 0004).
    gone_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_tasks_cluster_service", "cluster_name", "service_name", text("arn")),
        Index("ix_tasks_cluster_name_arn", "cluster_name", "arn"),
        Index("ix_tasks_service_name", "service_name", "arn"),
        Index("ix_tasks_family_revision", "family", "revision"),
        Index("ix_tasks_last_status", "last_status", "arn"),
        Index("ix_tasks_desired_status", "desired_status", "arn"),
        Index("ix_tasks_launch_type", "launch_type", "arn"),
        Index("ix_tasks_container_instance_arn", "container_instance_arn"),
        Index("ix_tasks_stop_code", "stop_code", "arn"),
        Index("ix_tasks_deployment_id", "deployment_id"),
        Index("ix_tasks_updated_at", text("updated_at DESC")),
        Index("ix_tasks_cluster_arn", "cluster_arn", "arn"),
    )


class ContainerInstance(Base):
    """An EC2 or external container instance; applied only when ``version`` grows."""

    __tablename__ = "container_instances"

    arn: Mapped[str] = mapped_column(Text, primary_key=True)
    ec2_instance_id: Mapped[str | None] = mapped_column(Text, index=True)
    cluster_arn: Mapped[str | None] = mapped_column(Text)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text)
    status_reason: Mapped[str | None] = mapped_column(Text)
    agent_connected: Mapped[bool | None] = mapped_column(Boolean)
    agent_update_status: Mapped[str | None] = mapped_column(Text)
    running_tasks_count: Mapped[int | None] = mapped_column(Integer)
    pending_tasks_count: Mapped[int | None] = mapped_column(Integer)
    registered_resources: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    remaining_resources: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    attributes: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    version_info: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    capacity_provider_name: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(BigInteger)
    health_status: Mapped[str | None] = mapped_column(Text)
    health_checks: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    health_updated_at: Mapped[datetime | None]
    registered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set when ECS no longer lists or describes the instance (reconciliation, 0004).
    gone_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_container_instances_cluster_name", "cluster_name", "arn"),
        Index("ix_container_instances_status", "status", "arn"),
        Index("ix_container_instances_agent_connected", "agent_connected", "arn"),
    )


class ResourceTags(Base):
    """ECS tags of one resource; ``known`` is false until they have been fetched.

    "Unknown" is not "none": a resource with ``known=false`` may have tags we have
    not seen yet, and the API says so with ``tags_known: false``.
    """

    __tablename__ = "resource_tags"

    resource_arn: Mapped[str] = mapped_column(Text, primary_key=True)
    tags: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    known: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    fetched_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_resource_tags_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        ),
    )


class MetricPoint(Base):
    """One CloudWatch datapoint; unique on metric, statistic, dimensions and time."""

    __tablename__ = "metric_points"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    statistic: Mapped[str] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(Text)
    # The scope the point was read in: CloudWatch dimensions hold names, which are
    # unique only within an account and region ('' on points stored before migration 0013).
    account_id: Mapped[str] = mapped_column(Text, server_default=text("''"))
    region: Mapped[str] = mapped_column(Text, server_default=text("''"))
    cluster_name: Mapped[str | None] = mapped_column(Text)
    service_name: Mapped[str | None] = mapped_column(Text)
    dimensions: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # Canonical "k=v;k=v" form of the dimensions, sorted, for the unique key.
    dimensions_key: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime]
    value: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        UniqueConstraint(
            "account_id",
            "region",
            "namespace",
            "name",
            "statistic",
            "dimensions_key",
            "timestamp",
            name="uq_metric_points_scope_series_timestamp",
        ),
        Index(
            "ix_metric_points_cluster_service_time",
            "cluster_name",
            "service_name",
            text("timestamp DESC"),
        ),
        Index("ix_metric_points_name_time", "name", text("timestamp DESC")),
        Index("ix_metric_points_time_id", text("timestamp DESC"), text("id DESC")),
    )


class TaskDefinition(Base):
    """A task definition as DescribeTaskDefinition gave it; immutable, fetched once."""

    __tablename__ = "task_definitions"

    arn: Mapped[str] = mapped_column(Text, primary_key=True)
    family: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int | None] = mapped_column(Integer)
    cpu: Mapped[str | None] = mapped_column(Text)
    memory: Mapped[str | None] = mapped_column(Text)
    network_mode: Mapped[str | None] = mapped_column(Text)
    requires_compatibilities: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    # [{name, image, cpu, memory, essential}] of each container definition.
    containers: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    fetched_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CodeDeployGroup(Base):
    """What a CodeDeploy deployment group deploys, as GetDeploymentGroup said (0007).

    Written by the poller's CodeDeploy mapper; read by the consumer (the service of
    a CodeDeploy deployment) and by alert raising (the blue/green target groups).
    A row with no service means CodeDeploy names none (or does not know the group).
    """

    __tablename__ = "codedeploy_groups"

    # Group names are unique only within a scope: the one GetDeploymentGroup was
    # asked in (migration 0014; '' where a mapping stored before had none).
    account_id: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    region: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    application: Mapped[str] = mapped_column(Text, primary_key=True)
    deployment_group: Mapped[str] = mapped_column(Text, primary_key=True)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    service_name: Mapped[str | None] = mapped_column(Text)
    # [{"name": ..., "arn": null}] of the group's blue/green target group pair.
    target_groups: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    resolved_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ScopeStatus(Base):
    """One watched (account, region) and how its AWS jobs last went (migration 0008).

    Written by the poller (reconcile and metrics rounds) and, for a scope that
    ecswatch holds no credentials for, by the consumer when its first event
    arrives (``monitored`` false). Read by ``GET /v1/accounts``.
    """

    __tablename__ = "scopes"

    account_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region: Mapped[str] = mapped_column(Text, primary_key=True)
    monitored: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    last_reconcile_at: Mapped[datetime | None]
    last_metrics_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Heartbeat(Base):
    """The newest heartbeat the consumer took off the queue, per scope (migration 0010).

    ``last_at`` is the heartbeat's own time (when the poller's leader put it on
    the bus), never later than when it was consumed; ``consumed_at`` is when a
    consumer recorded it. ``/metrics`` and the Datadog gauges report
    ``now - last_at`` (docs/runbook.md, "ecswatch is blind").
    """

    __tablename__ = "heartbeats"

    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    last_at: Mapped[datetime]
    consumed_at: Mapped[datetime] = mapped_column(server_default=func.now())
