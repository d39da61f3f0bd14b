"""Rows in every ecswatch table, written as of a given time (retention and db tests).

``write_rows(session, at, tag)`` writes one set: history (a raw event, a metric
point, an alert with its delivery log, outbox rows in each status, a stopped task
with tags) and current state (a cluster, a service, a running task, a container
instance, a deployment, a subscription, a quarantined message). ``tag`` keeps the
keys of several sets apart.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Tables whose rows are history (pruned past retention) vs. current state (never).
HISTORY_TABLES = ("raw_events", "metric_points", "alerts", "webhook_deliveries", "outbox")
STATE_TABLES = (
    "clusters",
    "services",
    "container_instances",
    "deployments",
    "webhook_subscriptions",
    "quarantine",
)


def _arn(kind: str, tag: str) -> str:
    return f"arn:aws:ecs:eu-west-1:123456789012:{kind}/prod/{tag}"


async def write_rows(session: AsyncSession, at: datetime, tag: str) -> None:
    """One row of each kind, every time column set to ``at``."""
    p = {"at": at, "tag": tag}

    async def run(sql: str, **extra: object) -> None:
        await session.execute(text(sql), {**p, **extra})

    await run(
        "INSERT INTO raw_events (id, detail_type, source, time, detail, cluster_name, "
        "received_at) VALUES ('ev-' || :tag, 'ECS Task State Change', 'aws.ecs', :at, "
        "'{}'::jsonb, 'prod', :at)"
    )
    await run(
        "INSERT INTO metric_points (namespace, name, statistic, cluster_name, dimensions_key, "
        "timestamp, value) VALUES ('AWS/ECS', 'CPUUtilization', 'Average', 'prod', "
        "'ClusterName=prod;k=' || :tag, :at, 1.5)"
    )
    await run(
        "INSERT INTO webhook_subscriptions (id, url, secret, created_at) "
        "VALUES ('wh-' || :tag, 'https://example.com/hook', 'whsec_x', :at)"
    )
    await run(
        "INSERT INTO alerts (id, type, dedupe_key, summary, payload, created_at) "
        "VALUES ('al-' || :tag, 'deployment.failed', 'dk-' || :tag, 'failed', "
        "'{}'::jsonb, :at)"
    )
    # One attempt logged for the alert, one test delivery without an alert.
    await run(
        "INSERT INTO webhook_deliveries (webhook_id, alert_id, message_id, event_type, "
        "attempt, attempted_at) VALUES ('wh-' || :tag, 'al-' || :tag, 'm1-' || :tag, "
        "'deployment.failed', 1, :at), ('wh-' || :tag, NULL, 'm2-' || :tag, "
        "'deployment.failed', 1, :at)"
    )
    for status in ("pending", "delivered", "dead"):
        await run(
            "INSERT INTO outbox (kind, dedupe_key, payload, status, created_at, "
            "next_attempt_at) VALUES ('webhook', :status || '-' || :tag, '{}'::jsonb, "
            ":status, :at, :at)",
            status=status,
        )
    await run(
        "INSERT INTO clusters (arn, name, created_at, updated_at) "
        "VALUES (:arn, 'prod-' || :tag, :at, :at)",
        arn=_arn("cluster", tag),
    )
    await run(
        "INSERT INTO services (arn, name, cluster_name, status, created_at, updated_at) "
        "VALUES (:arn, 'web-' || :tag, 'prod', 'ACTIVE', :at, :at)",
        arn=_arn("service", tag),
    )
    await run(
        "INSERT INTO container_instances (arn, cluster_name, status, updated_at, seen_at) "
        "VALUES (:arn, 'prod', 'ACTIVE', :at, :at)",
        arn=_arn("container-instance", tag),
    )
    await run(
        "INSERT INTO deployments (id, cluster_name, service_name, outcome, started_at, "
        "updated_at, finished_at) VALUES ('ecs-svc/' || :tag, 'prod', 'web', 'succeeded', "
        ":at, :at, :at)"
    )
    await run(
        "INSERT INTO quarantine (body_sha256, body, error, first_seen, last_seen) "
        "VALUES ('sha-' || :tag, 'not json', 'not JSON', :at, :at)"
    )
    for state, stopped in (("RUNNING", None), ("STOPPED", at)):
        arn = _arn("task", f"{tag}-{state.lower()}")
        await run(
            "INSERT INTO tasks (arn, id, cluster_name, last_status, desired_status, "
            "started_at, stopped_at, updated_at, seen_at) VALUES (:arn, :arn, 'prod', "
            ":state, :state, :at, :stopped, :at, :at)",
            arn=arn,
            state=state,
            stopped=stopped,
        )
        await run(
            "INSERT INTO resource_tags (resource_arn, tags, known, fetched_at) "
            "VALUES (:arn, CAST(:tags AS jsonb), true, :at)",
            arn=arn,
            tags=json.dumps({"team": "core"}),
        )


async def count_rows(session: AsyncSession) -> dict[str, int]:
    """Rows in every table that write_rows fills, plus tasks by status and tags."""
    counts: dict[str, int] = {}
    for table in (*HISTORY_TABLES, *STATE_TABLES, "tasks", "resource_tags"):
        counts[table] = int(
            (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
        )
    return counts
