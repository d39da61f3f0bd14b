"""Row builders and bulk inserts that seed the database for API tests.

Rows go in through SQLAlchemy Core inserts on the real schema; builders fill
every column the API shows with plausible ECS values, and take overrides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from service.alerts import models as alerts
from service.cipher import cipher_for
from service.config import Settings
from service.outbox import models as outbox
from service.state import models as state

ACCOUNT = "123456789012"
REGION = "us-east-1"
BASE_TIME = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def webhook(settings: Settings, wid: str, url: str, **extra: Any) -> dict[str, Any]:
    """A ``webhook_subscriptions`` row with its URL and secret encrypted as the API
    stores them (with ``settings``' key)."""
    cipher = cipher_for(settings)
    secret = extra.pop("secret", "whsec_" + "A" * 32)
    return {"id": wid, "url": cipher.encrypt(url), "secret": cipher.encrypt(secret), **extra}


def cluster_arn(name: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}"


def service_arn(cluster: str, name: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{name}"


def task_arn(cluster: str, task_id: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task_id}"


def instance_arn(cluster: str, instance_id: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{instance_id}"


def at(minutes: float) -> datetime:
    """A time ``minutes`` after the fixed base time of the seeds."""
    return BASE_TIME + timedelta(minutes=minutes)


def cluster(name: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "arn": cluster_arn(name),
        "name": name,
        "account": ACCOUNT,
        "region": REGION,
        "status": "ACTIVE",
        "active_services_count": 2,
        "running_tasks_count": 5,
        "pending_tasks_count": 0,
        "registered_container_instances_count": 1,
    }
    return {**row, **overrides}


def service(cluster: str, name: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "arn": service_arn(cluster, name),
        "name": name,
        "cluster_arn": cluster_arn(cluster),
        "cluster_name": cluster,
        "status": "ACTIVE",
        "desired_count": 2,
        "running_count": 2,
        "pending_count": 0,
        "launch_type": "FARGATE",
        "task_definition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{name}:1",
        "deployment_controller": "ECS",
        "updated_at": at(0),
    }
    return {**row, **overrides}


def task(cluster: str, task_id: str, **overrides: Any) -> dict[str, Any]:
    service_name = overrides.pop("service", "web")
    row = {
        "arn": task_arn(cluster, task_id),
        "id": task_id,
        "cluster_arn": cluster_arn(cluster),
        "cluster_name": cluster,
        "service_name": service_name,
        "group": f"service:{service_name}" if service_name else "family:batch",
        "family": service_name or "batch",
        "revision": 3,
        "launch_type": "FARGATE",
        "last_status": "RUNNING",
        "desired_status": "RUNNING",
        "health_status": "HEALTHY",
        "version": 4,
        "availability_zone": "us-east-1a",
        "containers": [
            {
                "name": "app",
                "last_status": "RUNNING",
                "exit_code": None,
                "reason": None,
                "image": "web:1",
                "runtime_id": "abc",
            }
        ],
        "created_at": at(0),
        "started_at": at(1),
        "updated_at": at(1),
    }
    return {**row, **overrides}


def container_instance(cluster: str, instance_id: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "arn": instance_arn(cluster, instance_id),
        "ec2_instance_id": f"i-{instance_id}",
        "cluster_arn": cluster_arn(cluster),
        "cluster_name": cluster,
        "status": "ACTIVE",
        "agent_connected": True,
        "running_tasks_count": 1,
        "pending_tasks_count": 0,
        "registered_resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}],
        "remaining_resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024}],
        "attributes": [{"name": "ecs.os-type", "value": "linux"}],
        "version": 7,
        "updated_at": at(0),
    }
    return {**row, **overrides}


def deployment(cluster: str, svc: str, deployment_id: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": deployment_id,
        "cluster_arn": cluster_arn(cluster),
        "cluster_name": cluster,
        "service_arn": service_arn(cluster, svc),
        "service_name": svc,
        "kind": "rolling",
        "outcome": "succeeded",
        "task_definition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{svc}:1",
        "started_at": at(0),
        "updated_at": at(5),
        "finished_at": at(5),
    }
    row = {**row, **overrides}
    # A deployment's scope is that of its events: here, that of its ARNs.
    arn = (row["service_arn"] or row["cluster_arn"] or "").split(":")
    scope = {"account_id": arn[4], "region": arn[3]} if len(arn) > 5 else {}
    return {**scope, **row}


def event(event_id: str, minutes: float, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": event_id,
        "detail_type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": ACCOUNT,
        "region": REGION,
        "time": at(minutes),
        "resources": [task_arn("prod", event_id)],
        "detail": {"lastStatus": "RUNNING", "clusterArn": cluster_arn("prod")},
        "cluster_arn": cluster_arn("prod"),
        "cluster_name": "prod",
    }
    return {**row, **overrides}


def metric(minutes: float, **overrides: Any) -> dict[str, Any]:
    cluster_name = overrides.get("cluster_name", "prod")
    service_name = overrides.get("service_name", "web")
    row = {
        "namespace": "AWS/ECS",
        "name": "CPUUtilization",
        "statistic": "Average",
        "unit": "Percent",
        "cluster_name": cluster_name,
        "service_name": service_name,
        "dimensions": {"ClusterName": cluster_name, "ServiceName": service_name},
        "dimensions_key": f"ClusterName={cluster_name};ServiceName={service_name}",
        "timestamp": at(minutes),
        "value": 12.5,
    }
    return {**row, **overrides}


def tags(arn: str, values: Mapping[str, str], *, known: bool = True) -> dict[str, Any]:
    return {"resource_arn": arn, "tags": dict(values), "known": known, "fetched_at": at(0)}


TABLES: dict[str, Table] = {
    "clusters": state.Cluster.__table__,  # type: ignore[dict-item]
    "services": state.Service.__table__,  # type: ignore[dict-item]
    "tasks": state.Task.__table__,  # type: ignore[dict-item]
    "container_instances": state.ContainerInstance.__table__,  # type: ignore[dict-item]
    "deployments": state.Deployment.__table__,  # type: ignore[dict-item]
    "raw_events": state.RawEvent.__table__,  # type: ignore[dict-item]
    "metric_points": state.MetricPoint.__table__,  # type: ignore[dict-item]
    "resource_tags": state.ResourceTags.__table__,  # type: ignore[dict-item]
    "quarantine": state.QuarantinedMessage.__table__,  # type: ignore[dict-item]
    "scopes": state.ScopeStatus.__table__,  # type: ignore[dict-item]
    "alerts": alerts.Alert.__table__,  # type: ignore[dict-item]
    "webhook_subscriptions": alerts.WebhookSubscription.__table__,  # type: ignore[dict-item]
    "webhook_deliveries": alerts.WebhookDelivery.__table__,  # type: ignore[dict-item]
    "outbox": outbox.OutboxItem.__table__,  # type: ignore[dict-item]
}


async def insert_rows(engine: AsyncEngine, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` in one transaction.

    Rows are grouped by their key set: an executemany needs the same columns in
    every row, and filling gaps with NULL would defeat the server defaults.
    """
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(dict(row))
    if not groups:
        return
    async with engine.begin() as conn:
        for batch in groups.values():
            await conn.execute(insert(TABLES[table]), batch)
