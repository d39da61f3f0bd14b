"""Which alerts a change deserves, and for whom. Pure: no I/O, ``now`` is an argument.

Every alert has a **dedupe key** that names what it is about, never when it was
seen or under which EventBridge id, so re-deliveries and re-sends find the alert
already there (``alerts.dedupe_key`` is unique) and raise nothing new:

* deployment alerts: ``<type>:<deployment id>``, one per deployment and type
  (``deployment.recovered`` is keyed by the deployment that succeeded);
* noisy alerts (task failures, placement failures, disconnections): the scope
  (service, or container instance) and the cool-down window the *event's own*
  time falls in, ``<type>:<scope>:<window>``: at most one per scope and window,
  whatever the arrival order.

The alert id is derived from the dedupe key, so two consumers that decide the
same alert at once write the same row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.snapshot import (
    BLUE_GREEN_KINDS,
    FAILED_OUTCOMES,
    DeploymentKey,
    DeploymentSnapshot,
    failure_summary,
    where,
)
from service.events.arns import parse_arn
from service.events.times import iso


class AlertType(StrEnum):
    """The alert types of webhooks and Slack (docs/alerts.md)."""

    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_STUCK = "deployment.stuck"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
    DEPLOYMENT_RECOVERED = "deployment.recovered"
    TASK_FAILED_TO_START = "task.failed_to_start"
    SERVICE_PLACEMENT_FAILURE = "service.placement_failure"
    CONTAINER_INSTANCE_DISCONNECTED = "container_instance.disconnected"


@dataclass(frozen=True, slots=True)
class AlertRules:
    """Tunable thresholds (``ECSWATCH_CRASHLOOP_*``, ``_STUCK_AFTER_S``, ``_ALERT_COOLDOWN_S``)."""

    crashloop_tasks: int = 3
    crashloop_window_s: float = 600.0
    stuck_after_s: float = 1800.0
    cooldown_s: float = 900.0
    # How long the alerts of a CodeDeploy deployment whose group the poller has not
    # mapped yet wait for the mapping (so that they name the service); 0: no wait.
    codedeploy_hold_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """An alert to insert (once) and to fan out to matching subscriptions."""

    type: AlertType
    dedupe_key: str
    summary: str
    cluster: str | None
    service: str | None
    service_arn: str | None
    deployment_id: str | None
    body: dict[str, Any] = field(compare=False)
    # The deployment an alert is about, in its scope (ids are unique only there).
    deployment_key: DeploymentKey | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return alert_id(self.dedupe_key)

    @property
    def account_id(self) -> str | None:
        return self.body.get("account_id")

    @property
    def region(self) -> str | None:
        return self.body.get("region")


def scope_of(*arns: str | None) -> tuple[str | None, str | None]:
    """(account, region) of the first ARN that names them; (None, None) for none."""
    for arn in arns:
        parsed = parse_arn(arn)
        if parsed is not None and parsed.account and parsed.region:
            return parsed.account, parsed.region
    return None, None


def alert_id(dedupe_key: str) -> str:
    """A stable alert id: the same decision always names the same alert."""
    return "alrt_" + hashlib.sha256(dedupe_key.encode()).hexdigest()[:20]


def _body(
    kind: AlertType,
    dedupe_key: str,
    *,
    now: datetime,
    cluster: str | None,
    service: str | None,
    service_arn: str | None,
    summary: str,
    deployment: dict[str, Any] | None,
    events: Sequence[str],
    scope: tuple[str | None, str | None],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind.value,
        "id": alert_id(dedupe_key),
        "created_at": iso(now),
        "account_id": scope[0],
        "region": scope[1],
        "cluster": cluster,
        "service": service,
        "service_arn": service_arn,
        "deployment": deployment,
        "summary": summary,
        "events": list(events),
    }
    body.update(extra or {})
    return body


def deployment_body(d: DeploymentSnapshot) -> dict[str, Any]:
    """The ``deployment`` object of an alert body."""
    return {
        "id": d.id,
        "kind": str(d.kind),
        "outcome": str(d.outcome),
        "reason": d.reason,
        "rollback_target": d.rollback_target,
        "stuck": d.stuck,
        "task_definition": d.task_definition,
        "lifecycle_stage": d.lifecycle_stage,
        "failed_tasks": d.failed_tasks,
        "started_at": iso(d.started_at),
        "finished_at": iso(d.finished_at),
        "codedeploy_application": d.codedeploy_application,
        "codedeploy_group": d.codedeploy_group,
        "target_groups": [dict(tg) for tg in d.target_groups],
        "cause": None if d.cause is None else d.cause.as_dict(),
    }


#: The alerts whose ``deployment.cause`` is classified (docs/alerts.md, "Why it failed").
CAUSE_ALERTS = frozenset(
    {AlertType.DEPLOYMENT_FAILED, AlertType.DEPLOYMENT_ROLLED_BACK, AlertType.DEPLOYMENT_STUCK}
)


def awaiting_service(d: DeploymentSnapshot, *, now: datetime, hold_s: float) -> bool:
    """A CodeDeploy deployment whose group the poller has not mapped yet, seen less
    than ``hold_s`` ago: its alerts wait for the mapping, so that they name the
    service (and reach subscriptions filtered by cluster or service)."""
    if d.kind != DeploymentKind.CODEDEPLOY or d.service is not None or d.group_resolved:
        return False
    if hold_s <= 0:
        return False
    seen = d.last_event_at or d.started_at
    return seen is not None and now - seen < timedelta(seconds=hold_s)


def deployment_alerts(
    d: DeploymentSnapshot, *, now: datetime, hold_s: float = 0.0
) -> list[AlertDraft]:
    """The alerts a deployment in its current state deserves (each raised once).

    ``deployment.failed`` for any failure, as soon as it is known (a deployment
    seen first already rolled back still gets it, before ``rolled_back``);
    ``deployment.rolled_back`` once the restore completed; ``deployment.succeeded``
    for a completion that restores nothing; ``deployment.stuck`` while flagged.
    None yet for a CodeDeploy deployment :func:`awaiting_service` (``hold_s``).
    Blue/green summaries name the target groups where they are known.
    """
    if awaiting_service(d, now=now, hold_s=hold_s):
        return []
    place = where(d.cluster, d.service)
    wanted: list[tuple[AlertType, str]] = []
    if d.outcome in FAILED_OUTCOMES:
        wanted.append((AlertType.DEPLOYMENT_FAILED, failure_summary(d)))
    if d.outcome == Outcome.ROLLED_BACK:
        to = f" to {d.rollback_target}" if d.rollback_target else ""
        wanted.append(
            (AlertType.DEPLOYMENT_ROLLED_BACK, f"Deployment {d.id} of {place} was rolled back{to}")
        )
    # rollback_failed: deployment.failed above already says it; the body's outcome tells the rest
    if d.outcome == Outcome.SUCCEEDED and not d.is_rollback_target:
        wanted.append((AlertType.DEPLOYMENT_SUCCEEDED, f"Deployment {d.id} of {place} succeeded"))
    if d.stuck and d.outcome == Outcome.IN_PROGRESS:
        wanted.append(
            (
                AlertType.DEPLOYMENT_STUCK,
                f"Deployment {d.id} of {place} has no running task of its task definition",
            )
        )
    if d.kind in BLUE_GREEN_KINDS and d.target_groups:
        names = ", ".join(str(tg["name"]) for tg in d.target_groups)
        wanted = [(kind, f"{summary} (target groups {names})") for kind, summary in wanted]
    return [_deployment_draft(d, kind, summary, now=now) for kind, summary in wanted]


def _deployment_draft(
    d: DeploymentSnapshot,
    kind: AlertType,
    summary: str,
    *,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> AlertDraft:
    """The alert of kind ``kind`` about deployment ``d``: one per deployment (in its
    scope: ids are unique only within an account and region) and kind."""
    key = (
        f"{kind.value}:{d.account_id}/{d.region}/{d.id}"
        if d.account_id and d.region
        else f"{kind.value}:{d.id}"
    )
    body = _body(
        kind,
        key,
        now=now,
        cluster=d.cluster,
        service=d.service,
        service_arn=d.service_arn,
        summary=summary,
        deployment=deployment_body(d),
        events=d.event_ids,
        scope=(d.account_id, d.region)
        if d.account_id and d.region
        else scope_of(d.service_arn, d.cluster_arn),
        extra=extra,
    )
    return AlertDraft(kind, key, summary, d.cluster, d.service, d.service_arn, d.id, body, d.key)


def recovery_alert(d: DeploymentSnapshot, closes: str, *, now: datetime) -> AlertDraft:
    """``deployment.recovered``: ``d`` succeeded after the service's last deployment
    ``closes`` failed (a roll-forward fix). Once per succeeding deployment; the body's
    ``recovers`` names the failed deployment."""
    place = where(d.cluster, d.service)
    summary = f"{place} recovered: deployment {d.id} succeeded after {closes} failed"
    return _deployment_draft(
        d, AlertType.DEPLOYMENT_RECOVERED, summary, now=now, extra={"recovers": closes}
    )


# ------------------------------------------------------------------ noisy alerts


def cooldown_window(at: datetime, cooldown_s: float) -> int:
    """The index of the cool-down window ``at`` falls in (0 when there is no cool-down)."""
    if cooldown_s <= 0:
        return int(at.timestamp() * 1000)  # one per distinct millisecond: no cool-down
    return int(at.timestamp() // cooldown_s)


def noisy_alert(
    kind: AlertType,
    *,
    scope: str,
    account_id: str | None,
    region: str | None,
    at: datetime,
    rules: AlertRules,
    now: datetime,
    cluster: str | None,
    service: str | None,
    service_arn: str | None,
    summary: str,
    event_id: str,
    deployment_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AlertDraft:
    """One alert of a noisy type, at most once per ``scope`` and cool-down window.

    ``scope`` names the resource; names are unique only within an account and a
    region, so the key starts with those when the event gives them."""
    where = f"{account_id}/{region}/{scope}" if account_id and region else scope
    key = f"{kind.value}:{where}:{cooldown_window(at, rules.cooldown_s)}"
    deployment = None if deployment_id is None else {"id": deployment_id}
    body = _body(
        kind,
        key,
        now=now,
        cluster=cluster,
        service=service,
        service_arn=service_arn,
        summary=summary,
        deployment=deployment,
        events=[event_id],
        scope=(account_id, region),
        extra=extra,
    )
    return AlertDraft(kind, key, summary, cluster, service, service_arn, deployment_id, body)


# ---------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a subscription asks for (its ``events`` and ``filter``)."""

    id: str
    events: frozenset[str]
    cluster: str | None = None
    service: str | None = None
    tag: str | None = None
    account_id: str | None = None
    region: str | None = None


def _names(value: str | None) -> set[str]:
    """A name or an ARN: both forms that a filter may use."""
    if not value:
        return set()
    return {value, value.rsplit("/", 1)[-1]}


def matches(sub: Subscription, alert: AlertDraft, tags: Mapping[str, str]) -> bool:
    """Whether ``sub`` wants ``alert``; ``tags`` are the service's known ECS tags."""
    if alert.type.value not in sub.events:
        return False
    if sub.account_id and sub.account_id != alert.account_id:
        return False
    if sub.region and sub.region != alert.region:
        return False
    if sub.cluster and not (_names(sub.cluster) & _names(alert.cluster)):
        return False
    if sub.service and not (_names(sub.service) & (_names(alert.service) | {alert.service_arn})):
        return False
    if sub.tag:
        key, _, value = sub.tag.partition(":")
        if tags.get(key) != value:
            return False
    return True
