"""Raise alerts inside the writing transaction (the consumer's, the poller's, or the
stuck sweep's).

After the deployment step of a transaction (:mod:`service.deployments.lifecycle`),
:func:`raise_alerts`:

1. asks the pure rules (:mod:`service.alerts.rules`) which alerts the deployment
   snapshots deserve, plus the noisy per-event alerts;
2. inserts the alerts (``ON CONFLICT DO NOTHING`` on their dedupe key: a repeat
   raises nothing) and, for each alert that is new, one ``webhook`` outbox row
   per matching active subscription. The outbox trigger notifies the dispatcher
   when the transaction commits (it reads the body then);
3. for each new ``deployment.failed``, ``rolled_back`` or ``stuck``, classifies
   the deployment's cause (:mod:`service.deployments.causes`: evidence gathered in
   this session, for these deployments only) and writes it into the new alert's
   body and onto the snapshot; a repeat reads nothing;
4. for each new ``deployment.succeeded``, asks whether it closes a failure
   (:func:`service.deployments.reads.closed_failures`) and raises
   ``deployment.recovered`` the same way.

The snapshots come back with the cause and the recovery (:class:`Raised`), for
the Datadog facts of the same transaction.

It only flushes: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.alerts.rules import (
    CAUSE_ALERTS,
    AlertDraft,
    AlertRules,
    AlertType,
    Subscription,
    deployment_alerts,
    matches,
    noisy_alert,
    recovery_alert,
)
from service.config import Settings
from service.deployments.causes import attach_causes
from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.reads import closed_failures, read_snapshots
from service.deployments.rules import is_failed_start
from service.deployments.snapshot import FAILED_OUTCOMES, DeploymentKey, DeploymentSnapshot
from service.deployments.transitions import mark_stuck
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


_SUBSCRIPTIONS = text(
    "SELECT id, events, filter FROM webhook_subscriptions WHERE active ORDER BY id"
)
_TAGS = text("SELECT resource_arn, tags FROM resource_tags WHERE resource_arn = ANY(:arns)")


@dataclass(frozen=True, slots=True)
class Raised:
    """The new alerts of a transaction, and its snapshots with what those alerts found
    (the :attr:`~DeploymentSnapshot.cause` of a failure or stuck deployment alerted
    now, the failure a success :attr:`~DeploymentSnapshot.recovers` from): the
    Datadog facts read the same."""

    alerts: list[AlertDraft]
    snapshots: list[DeploymentSnapshot]


async def raise_alerts(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    snapshots: Sequence[DeploymentSnapshot],
    *,
    rules: AlertRules,
    now: datetime | None = None,
) -> Raised:
    """Decide and write the alerts of ``snapshots`` (deployments as they stand after
    the transaction's writes) and of ``events``, with their outbox rows (see the
    module doc); the new alerts (``deployment.recovered`` included)."""
    now = now or datetime.now(UTC)
    drafts: list[AlertDraft] = []
    for snapshot in snapshots:
        drafts.extend(deployment_alerts(snapshot, now=now, hold_s=rules.codedeploy_hold_s))
    drafts.extend(event_alerts(events, rules=rules, now=now))
    return await _raise(session, drafts, snapshots, rules=rules, now=now)


async def _raise(
    session: AsyncSession,
    drafts: Sequence[AlertDraft],
    snapshots: Sequence[DeploymentSnapshot],
    *,
    rules: AlertRules,
    now: datetime,
) -> Raised:
    new = await insert_alerts(session, drafts)
    new, caused = await _with_causes(session, new, snapshots, rules=rules, now=now)
    # Rare (a deployment's success, once): which failure it closes.
    succeeded = {a.deployment_key for a in new if a.type is AlertType.DEPLOYMENT_SUCCEEDED}
    if succeeded:
        closes = await closed_failures(session, sorted(k for k in succeeded if k))
        recovered = [recovery_alert(d, closes[d.key], now=now) for d in caused if d.key in closes]
        new += await insert_alerts(session, recovered)
        caused = [
            dataclasses.replace(d, recovers=closes[d.key]) if d.key in closes else d for d in caused
        ]
    return Raised(new, caused)


_SET_PAYLOAD = text("UPDATE alerts SET payload = CAST(:payload AS JSONB) WHERE id = :id")


async def _with_causes(
    session: AsyncSession,
    new: list[AlertDraft],
    snapshots: Sequence[DeploymentSnapshot],
    *,
    rules: AlertRules,
    now: datetime,
) -> tuple[list[AlertDraft], list[DeploymentSnapshot]]:
    """The cause (:mod:`service.deployments.causes`) of each deployment whose
    ``deployment.failed``, ``rolled_back`` or ``stuck`` alert is among the ``new``
    ones, written into those alerts' bodies and put on its snapshot. Nothing is read
    for a batch that raised no such alert: a repeat of a raised one costs nothing."""
    owed = {a.deployment_key for a in new if a.type in CAUSE_ALERTS and a.deployment_key}
    if not owed:
        return new, list(snapshots)
    caused = await attach_causes(session, snapshots, owed, now=now)
    # The same bodies, built again from the snapshots that now carry the cause.
    rebuilt = {
        a.id: a
        for d in caused
        if d.key in owed and d.cause is not None
        for a in deployment_alerts(d, now=now, hold_s=rules.codedeploy_hold_s)
    }
    updated = [rebuilt.get(a.id, a) if a.type in CAUSE_ALERTS else a for a in new]
    changed = [a for a in updated if a.type in CAUSE_ALERTS and a.id in rebuilt]
    if changed:
        await session.execute(
            _SET_PAYLOAD, [{"id": a.id, "payload": json.dumps(a.body)} for a in changed]
        )
    return updated, caused


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
                    account_id=event.envelope.account,
                    region=event.envelope.region,
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
                    account_id=event.envelope.account,
                    region=event.envelope.region,
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
                    account_id=event.envelope.account,
                    region=event.envelope.region,
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


ALERT_COLUMNS = (
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
    f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)})"
    " SELECT a.id, a.type, a.dedupe_key, a.cluster_name, a.service_name, a.deployment_id,"
    " a.summary, CAST(a.payload AS JSONB) FROM unnest("
    + ", ".join(f"CAST(:{c} AS TEXT[])" for c in ALERT_COLUMNS)
    + f") WITH ORDINALITY AS a({', '.join(ALERT_COLUMNS)}, n)"
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
            account_id=(row.filter or {}).get("account_id"),
            region=(row.filter or {}).get("region"),
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


async def sweep_stuck(
    session: AsyncSession, *, rules: AlertRules, now: datetime
) -> list[DeploymentKey]:
    """Flag in-progress deployments with no running task after ``stuck_after_s``
    (:func:`service.deployments.transitions.mark_stuck`) and raise their
    ``deployment.stuck``. Returns the keys flagged. Run periodically (the dispatcher
    role does), in the caller's transaction.
    """
    stuck = await mark_stuck(session, now=now, after_s=rules.stuck_after_s)
    drafts = [
        a
        for d in stuck
        for a in deployment_alerts(d, now=now, hold_s=rules.codedeploy_hold_s)
        if a.type is AlertType.DEPLOYMENT_STUCK
    ]
    await _raise(session, drafts, stuck, rules=rules, now=now)
    return [d.key for d in stuck]


# CodeDeploy deployments with no service whose alerts were held for the group mapping
# and are still owed: an outcome that alerts, no alert yet (about the deployment of
# that scope: the alert body's account_id and region), and the group of its scope
# now mapped (CodeDeploy names no service for it) or the hold over. The mapper
# passes the keys it back-filled with a service itself.
_ALERTING = ", ".join(f"'{o}'" for o in sorted({*FAILED_OUTCOMES, Outcome.SUCCEEDED}))
_HELD = text(
    "SELECT d.account_id, d.region, d.id FROM deployments AS d"
    f" WHERE d.codedeploy_application IS NOT NULL AND d.kind = '{DeploymentKind.CODEDEPLOY}'"
    " AND d.service_name IS NULL"
    f" AND (d.outcome IN ({_ALERTING}) OR d.stuck)"
    " AND NOT EXISTS (SELECT 1 FROM alerts AS a WHERE a.deployment_id = d.id"
    "  AND coalesce(a.payload->>'account_id', '') = d.account_id"
    "  AND coalesce(a.payload->>'region', '') = d.region)"
    " AND (EXISTS (SELECT 1 FROM codedeploy_groups AS g WHERE g.account_id = d.account_id"
    "  AND g.region = d.region AND g.application = d.codedeploy_application"
    "  AND g.deployment_group = d.codedeploy_group)"
    "  OR coalesce(d.last_event_at, d.started_at) <= :cutoff)"
    " ORDER BY d.id, d.account_id, d.region LIMIT 500"
)


async def release_held(
    session: AsyncSession,
    *,
    rules: AlertRules,
    now: datetime,
    keys: Sequence[DeploymentKey] = (),
) -> list[AlertDraft]:
    """Raise the alerts that CodeDeploy deployments held for their group's mapping
    (:func:`~service.alerts.rules.awaiting_service`), plus those of ``keys``: once
    the mapper has mapped the group, or when the hold is over. Idempotent (the
    alerts' dedupe keys); several processes may run it. The new alerts."""
    cutoff = now - timedelta(seconds=rules.codedeploy_hold_s)
    held = [DeploymentKey(*row) for row in await session.execute(_HELD, {"cutoff": cutoff})]
    wanted = sorted(set(held) | set(keys))
    if not wanted:
        return []
    snapshots = await read_snapshots(session, wanted)
    return (await raise_alerts(session, [], snapshots, rules=rules, now=now)).alerts
