"""Raise alerts inside the writing transaction (the consumer's, or the stuck sweep's).

After a batch's state writes, :func:`raise_alerts`:

1. marks deployments failed whose tasks crash-loop (no circuit breaker needed);
2. attaches Service Action reasons (start impaired, placement or configuration
   failure) to the service's in-progress deployment;
3. reads the touched deployments back (and those that roll back to them) and
   asks the pure rules (:mod:`service.alerts.rules`) which alerts they deserve,
   plus the noisy per-event alerts;
4. inserts the alerts (``ON CONFLICT DO NOTHING`` on their dedupe key: a repeat
   raises nothing) and, for each alert that is new, one ``webhook`` outbox row
   per matching active subscription. The outbox trigger notifies the dispatcher
   when the transaction commits.

It only flushes: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.alerts.rules import (
    IMPAIRED_EVENTS,
    AlertDraft,
    AlertRules,
    AlertType,
    DeploymentSnapshot,
    Subscription,
    crash_loop_reason,
    crash_looping,
    deployment_alerts,
    is_failed_start,
    is_stuck,
    matches,
    noisy_alert,
    target_groups,
)
from service.config import Settings
from service.events.models import (
    ContainerInstanceStateChange,
    NormalisedEvent,
    ServiceAction,
    TaskStateChange,
)
from service.logging import get_logger
from service.outbox.models import OutboxItem, OutboxKind

log = get_logger(__name__)


def rules_from_settings(settings: Settings) -> AlertRules:
    """The alert thresholds of ``settings`` (``ECSWATCH_CRASHLOOP_*`` and friends)."""
    return AlertRules(
        crashloop_tasks=settings.crashloop_tasks,
        crashloop_window_s=settings.crashloop_window_s,
        stuck_after_s=settings.stuck_after_s,
        cooldown_s=settings.alert_cooldown_s,
        codedeploy_hold_s=codedeploy_hold_s(settings),
    )


def codedeploy_hold_s(settings: Settings) -> float:
    """How long alerts of a CodeDeploy deployment of a group not yet mapped wait for
    the poller's mapping: four of its runs (``ECSWATCH_CODEDEPLOY_INTERVAL_S``)."""
    return 4.0 * settings.codedeploy_interval_s


# Only deployments still in progress can start crash-looping, and only stops that
# may be failed starts are read (is_failed_start decides on the rest).
_STOPPED_TASKS = text(
    "SELECT t.deployment_id, t.stop_code, t.stopped_reason, t.containers,"
    " coalesce(t.stopped_at, t.updated_at) AS at FROM tasks AS t"
    " JOIN deployments AS d ON d.id = t.deployment_id AND d.outcome = 'in_progress'"
    " WHERE t.deployment_id = ANY(:ids) AND t.last_status = 'STOPPED'"
    " AND (t.stop_code IN ('TaskFailedToStart', 'EssentialContainerExited')"
    " OR t.stopped_reason LIKE '%CannotPullContainerError%'"
    " OR t.stopped_reason LIKE '%ResourceInitializationError%')"
    " ORDER BY t.deployment_id, t.arn"
)
_MARK_CRASH_LOOP = text(
    "UPDATE deployments SET outcome = 'failed', reason = :reason"
    " WHERE id = :id AND outcome = 'in_progress'"
)
_ATTACH_REASON = text(
    "UPDATE deployments SET reason = :reason WHERE id = ("
    " SELECT id FROM deployments WHERE outcome = 'in_progress' AND (service_arn = :arn"
    " OR (cluster_name = :cluster AND service_name = :service))"
    " ORDER BY started_at DESC NULLS LAST, id DESC LIMIT 1)"
)
_SNAPSHOT_COLUMNS = (
    "d.id, d.kind, d.outcome, d.cluster_name, d.service_name, d.service_arn, d.reason,"
    " d.rollback_target, d.stuck, d.task_definition, d.lifecycle_stage, d.failed_tasks,"
    " d.started_at, d.finished_at, d.event_ids, d.codedeploy_application, d.codedeploy_group,"
    " EXISTS (SELECT 1 FROM deployments AS o WHERE o.rollback_target = d.id)"
    " AS is_rollback_target, d.last_event_at,"
    # The CodeDeploy mapping (0007) and the service's load balancers (DescribeServices).
    " (d.codedeploy_application IS NULL OR EXISTS (SELECT 1 FROM codedeploy_groups AS g"
    "  WHERE g.application = d.codedeploy_application"
    "  AND g.deployment_group = d.codedeploy_group)) AS group_resolved,"
    " (SELECT g.target_groups FROM codedeploy_groups AS g"
    "  WHERE g.application = d.codedeploy_application"
    "  AND g.deployment_group = d.codedeploy_group) AS codedeploy_target_groups,"
    " coalesce((SELECT s.load_balancers FROM services AS s WHERE s.arn = d.service_arn),"
    "  (SELECT s.load_balancers FROM services AS s WHERE d.service_arn IS NULL"
    "   AND s.cluster_name = d.cluster_name AND s.name = d.service_name"
    "   ORDER BY s.gone_at DESC NULLS FIRST LIMIT 1)) AS load_balancers"
)
_SNAPSHOTS = text(
    f"SELECT {_SNAPSHOT_COLUMNS} FROM deployments AS d"
    " WHERE d.id = ANY(:ids) OR d.rollback_target = ANY(:ids) ORDER BY d.id"
)
_STUCK_CANDIDATES = text(
    f"SELECT {_SNAPSHOT_COLUMNS} FROM deployments AS d"
    # Known from a deployment event (not only from its tasks' startedBy: a service's
    # long-finished deployment seen mid-life through its tasks is no rollout).
    " WHERE d.outcome = 'in_progress' AND NOT d.stuck AND d.started_at <= :cutoff"
    " AND d.last_event_at IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.last_status = 'RUNNING'"
    "  AND (t.deployment_id = d.id OR (d.task_definition IS NOT NULL"
    "  AND t.task_definition_arn = d.task_definition AND t.cluster_arn = d.cluster_arn)))"
    " ORDER BY d.started_at LIMIT 500 FOR UPDATE OF d SKIP LOCKED"
)
_MARK_STUCK = text("UPDATE deployments SET stuck = true WHERE id = ANY(:ids)")
_SUBSCRIPTIONS = text(
    "SELECT id, events, filter FROM webhook_subscriptions WHERE active ORDER BY id"
)
_TAGS = text("SELECT resource_arn, tags FROM resource_tags WHERE resource_arn = ANY(:arns)")


def _snapshot(row: Any) -> DeploymentSnapshot:
    return DeploymentSnapshot(
        id=row.id,
        kind=row.kind,
        outcome=row.outcome,
        cluster=row.cluster_name,
        service=row.service_name,
        service_arn=row.service_arn,
        reason=row.reason,
        rollback_target=row.rollback_target,
        stuck=row.stuck,
        task_definition=row.task_definition,
        lifecycle_stage=row.lifecycle_stage,
        failed_tasks=row.failed_tasks,
        started_at=row.started_at,
        finished_at=row.finished_at,
        event_ids=tuple(str(e) for e in (row.event_ids or [])),
        is_rollback_target=row.is_rollback_target,
        codedeploy_application=row.codedeploy_application,
        codedeploy_group=row.codedeploy_group,
        last_event_at=row.last_event_at,
        group_resolved=row.group_resolved,
        target_groups=target_groups(row.load_balancers, row.codedeploy_target_groups),
    )


async def raise_alerts(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    deployment_ids: Sequence[str],
    *,
    rules: AlertRules,
    now: datetime | None = None,
) -> list[AlertDraft]:
    """Decide and write this batch's alerts and their outbox rows; the new alerts."""
    now = now or datetime.now(UTC)
    task_deployments = sorted(
        {
            e.detail.deployment_id
            for e in events
            if isinstance(e.detail, TaskStateChange) and e.detail.deployment_id
        }
    )
    if task_deployments:
        await _mark_crash_loops(session, task_deployments, rules)
    await _attach_service_reasons(session, events)

    drafts: list[AlertDraft] = []
    ids = sorted(set(deployment_ids) | set(task_deployments))
    if ids:
        found = await session.execute(_SNAPSHOTS, {"ids": ids})
        for row in found:
            drafts.extend(
                deployment_alerts(_snapshot(row), now=now, hold_s=rules.codedeploy_hold_s)
            )
    drafts.extend(event_alerts(events, rules=rules, now=now))
    return await insert_alerts(session, drafts)


def event_alerts(
    events: Sequence[NormalisedEvent], *, rules: AlertRules, now: datetime
) -> list[AlertDraft]:
    """The noisy, per-event alerts of a batch (each once per scope and cool-down)."""
    drafts: list[AlertDraft] = []
    for event in events:
        detail = event.detail
        if isinstance(detail, TaskStateChange):
            if detail.last_status != "STOPPED":
                continue
            containers = [{"exit_code": c.exit_code} for c in detail.containers]
            if not is_failed_start(detail.stop_code, detail.stopped_reason, containers):
                continue
            service = detail.service_name
            where = "/".join(p for p in (detail.cluster_name, service or detail.group) if p)
            reason = detail.stopped_reason or detail.stop_code or "stopped"
            drafts.append(
                noisy_alert(
                    AlertType.TASK_FAILED_TO_START,
                    scope=where or detail.task_arn,
                    at=detail.stopped_at or detail.updated_at or event.envelope.time,
                    rules=rules,
                    now=now,
                    cluster=detail.cluster_name,
                    service=service,
                    service_arn=None,
                    summary=f"Tasks of {where or detail.task_arn} fail to start: {reason}",
                    event_id=event.envelope.id,
                    deployment_id=detail.deployment_id,
                    extra={"task_arn": detail.task_arn, "stop_code": detail.stop_code},
                )
            )
        elif (
            isinstance(detail, ServiceAction)
            and detail.event_name == "SERVICE_TASK_PLACEMENT_FAILURE"
        ):
            where = "/".join(p for p in (detail.cluster_name, detail.service_name) if p)
            scope = where or detail.service_arn or event.envelope.id
            reason = f": {detail.reason}" if detail.reason else ""
            drafts.append(
                noisy_alert(
                    AlertType.SERVICE_PLACEMENT_FAILURE,
                    scope=scope,
                    at=detail.created_at or event.envelope.time,
                    rules=rules,
                    now=now,
                    cluster=detail.cluster_name,
                    service=detail.service_name,
                    service_arn=detail.service_arn,
                    summary=f"{where or 'A service'} cannot place tasks{reason}",
                    event_id=event.envelope.id,
                    extra={"reason": detail.reason},
                )
            )
        elif (
            isinstance(detail, ContainerInstanceStateChange)
            and detail.agent_connected is False
            and (detail.status or "ACTIVE") == "ACTIVE"
        ):
            name = detail.container_instance_arn.rsplit("/", 1)[-1]
            drafts.append(
                noisy_alert(
                    AlertType.CONTAINER_INSTANCE_DISCONNECTED,
                    scope=detail.container_instance_arn,
                    at=detail.updated_at or event.envelope.time,
                    rules=rules,
                    now=now,
                    cluster=detail.cluster_name,
                    service=None,
                    service_arn=None,
                    summary=(
                        f"Container instance {name} in {detail.cluster_name or 'a cluster'}"
                        " lost its agent connection"
                    ),
                    event_id=event.envelope.id,
                    extra={"container_instance_arn": detail.container_instance_arn},
                )
            )
    return drafts


async def _mark_crash_loops(session: AsyncSession, ids: list[str], rules: AlertRules) -> None:
    stops: dict[str, list[datetime]] = {}
    last_reason: dict[str, str | None] = {}
    for row in await session.execute(_STOPPED_TASKS, {"ids": ids}):
        if row.at is None or not is_failed_start(
            row.stop_code, row.stopped_reason, row.containers or []
        ):
            continue
        stops.setdefault(row.deployment_id, []).append(row.at)
        last_reason[row.deployment_id] = row.stopped_reason or row.stop_code
    for deployment_id in sorted(stops):
        times = stops[deployment_id]
        if crash_looping(times, tasks=rules.crashloop_tasks, window_s=rules.crashloop_window_s):
            reason = crash_loop_reason(
                len(times), rules.crashloop_window_s, last_reason.get(deployment_id)
            )
            await session.execute(_MARK_CRASH_LOOP, {"id": deployment_id, "reason": reason})


async def _attach_service_reasons(session: AsyncSession, events: Sequence[NormalisedEvent]) -> None:
    for event in events:
        detail = event.detail
        if isinstance(detail, ServiceAction) and detail.event_name in IMPAIRED_EVENTS:
            reason = detail.event_name + (f": {detail.reason}" if detail.reason else "")
            await session.execute(
                _ATTACH_REASON,
                {
                    "reason": reason,
                    "arn": detail.service_arn,
                    "cluster": detail.cluster_name,
                    "service": detail.service_name,
                },
            )


_ALERT_COLUMNS = (
    "id",
    "type",
    "dedupe_key",
    "cluster_name",
    "service_name",
    "deployment_id",
    "summary",
    "payload",
)
_INSERT_ALERTS = text(
    f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)})"
    " SELECT a.id, a.type, a.dedupe_key, a.cluster_name, a.service_name, a.deployment_id,"
    " a.summary, CAST(a.payload AS JSONB) FROM unnest("
    + ", ".join(f"CAST(:{c} AS TEXT[])" for c in _ALERT_COLUMNS)
    + f") WITH ORDINALITY AS a({', '.join(_ALERT_COLUMNS)}, n)"
    " ORDER BY a.n ON CONFLICT DO NOTHING RETURNING id"
)


async def insert_alerts(session: AsyncSession, drafts: Sequence[AlertDraft]) -> list[AlertDraft]:
    """Insert ``drafts`` once each; fan the new ones out to subscriptions. The new ones."""
    unique = {d.dedupe_key: d for d in drafts}
    if not unique:
        return []
    ordered = [unique[k] for k in sorted(unique)]  # one lock order for every writer
    # One statement text whatever the number of alerts (a multi-row VALUES would be
    # compiled anew for every count): the columns travel as arrays.
    params = {
        "id": [d.id for d in ordered],
        "type": [d.type.value for d in ordered],
        "dedupe_key": [d.dedupe_key for d in ordered],
        "cluster_name": [d.cluster for d in ordered],
        "service_name": [d.service for d in ordered],
        "deployment_id": [d.deployment_id for d in ordered],
        "summary": [d.summary for d in ordered],
        "payload": [json.dumps(d.body) for d in ordered],
    }
    inserted = {row[0] for row in await session.execute(_INSERT_ALERTS, params)}
    new = [d for d in ordered if d.id in inserted]
    if new:
        await _fan_out(session, new)
        log.info("alerts_raised", alerts=[(d.type.value, d.deployment_id) for d in new])
    return new


async def _fan_out(session: AsyncSession, alerts: list[AlertDraft]) -> None:
    subs = [
        Subscription(
            id=row.id,
            events=frozenset(str(e) for e in (row.events or [])),
            cluster=(row.filter or {}).get("cluster"),
            service=(row.filter or {}).get("service"),
            tag=(row.filter or {}).get("tag"),
        )
        for row in await session.execute(_SUBSCRIPTIONS)
    ]
    if not subs:
        return
    tags: dict[str, dict[str, str]] = {}
    arns = sorted({a.service_arn for a in alerts if a.service_arn})
    if arns and any(s.tag for s in subs):
        for row in await session.execute(_TAGS, {"arns": arns}):
            tags[row.resource_arn] = {str(k): str(v) for k, v in (row.tags or {}).items()}
    rows = [
        {
            "kind": OutboxKind.WEBHOOK.value,
            "dedupe_key": f"alert:{alert.id}:{sub.id}",
            "payload": {"webhook_id": sub.id, "alert_id": alert.id, "event_type": alert.type.value},
        }
        for alert in alerts
        for sub in subs
        if matches(sub, alert, tags.get(alert.service_arn or "", {}))
    ]
    if rows:
        await session.execute(pg_insert(OutboxItem).values(rows).on_conflict_do_nothing())


async def sweep_stuck(session: AsyncSession, *, rules: AlertRules, now: datetime) -> list[str]:
    """Flag in-progress deployments with no running task after ``stuck_after_s``; alert.

    Returns the ids flagged. Run periodically (the dispatcher role does), in the
    caller's transaction.
    """
    cutoff = now - timedelta(seconds=rules.stuck_after_s)
    found = [_snapshot(row) for row in await session.execute(_STUCK_CANDIDATES, {"cutoff": cutoff})]
    stuck = [
        d
        for d in found
        if is_stuck(
            outcome=d.outcome,
            started_at=d.started_at,
            running_tasks=0,
            now=now,
            after_s=rules.stuck_after_s,
        )
    ]
    if not stuck:
        return []
    await session.execute(_MARK_STUCK, {"ids": [d.id for d in stuck]})
    drafts: list[AlertDraft] = []
    for d in stuck:
        flagged = dataclasses.replace(d, stuck=True)
        drafts.extend(
            a
            for a in deployment_alerts(flagged, now=now, hold_s=rules.codedeploy_hold_s)
            if a.type is AlertType.DEPLOYMENT_STUCK
        )
    await insert_alerts(session, drafts)
    return [d.id for d in stuck]


# CodeDeploy deployments with no service whose alerts were held for the group mapping
# and are still owed: an outcome that alerts, no alert yet, and the group now mapped
# (CodeDeploy names no service for it) or the hold over. The mapper passes the ids it
# back-filled with a service itself.
_HELD = text(
    "SELECT d.id FROM deployments AS d"
    " WHERE d.codedeploy_application IS NOT NULL AND d.kind = 'codedeploy'"
    " AND d.service_name IS NULL"
    " AND (d.outcome IN ('failed', 'rolled_back', 'rollback_failed', 'succeeded') OR d.stuck)"
    " AND NOT EXISTS (SELECT 1 FROM alerts AS a WHERE a.deployment_id = d.id)"
    " AND (EXISTS (SELECT 1 FROM codedeploy_groups AS g WHERE g.application ="
    "  d.codedeploy_application AND g.deployment_group = d.codedeploy_group)"
    "  OR coalesce(d.last_event_at, d.started_at) <= :cutoff)"
    " ORDER BY d.id LIMIT 500"
)


async def release_held(
    session: AsyncSession, *, rules: AlertRules, now: datetime, ids: Sequence[str] = ()
) -> list[AlertDraft]:
    """Raise the alerts that CodeDeploy deployments held for their group's mapping
    (:func:`~service.alerts.rules.awaiting_service`), plus those of ``ids``: once
    the mapper has mapped the group, or when the hold is over. Idempotent (the
    alerts' dedupe keys); several processes may run it. The new alerts."""
    cutoff = now - timedelta(seconds=rules.codedeploy_hold_s)
    held = [row[0] for row in await session.execute(_HELD, {"cutoff": cutoff})]
    wanted = sorted(set(held) | set(ids))
    if not wanted:
        return []
    return await raise_alerts(session, [], wanted, rules=rules, now=now)
