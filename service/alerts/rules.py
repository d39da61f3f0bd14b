"""Which alerts a change deserves, and for whom. Pure: no I/O, ``now`` is an argument.

Every alert has a **dedupe key** that names what it is about, never when it was
seen or under which EventBridge id, so re-deliveries and re-sends find the alert
already there (``alerts.dedupe_key`` is unique) and raise nothing new:

* deployment alerts: ``<type>:<deployment id>``, one per deployment and type;
* noisy alerts (task failures, placement failures, disconnections): the scope
  (service, or container instance) and the cool-down window the *event's own*
  time falls in, ``<type>:<scope>:<window>``: at most one per scope and window,
  whatever the arrival order.

The alert id is derived from the dedupe key, so two consumers that decide the
same alert at once write the same row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

#: Stop reasons that mean the task never ran (the no-circuit-breaker crash loop).
START_FAILURE_MARKERS = ("CannotPullContainerError", "ResourceInitializationError")
#: Service Action events that say why a deployment is not progressing.
IMPAIRED_EVENTS = (
    "SERVICE_TASK_START_IMPAIRED",
    "SERVICE_TASK_PLACEMENT_FAILURE",
    "SERVICE_TASK_CONFIGURATION_FAILURE",
)


class AlertType(StrEnum):
    """The contract's alert types (DESIGN.md, Webhooks)."""

    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_STUCK = "deployment.stuck"
    DEPLOYMENT_SUCCEEDED = "deployment.succeeded"
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
class DeploymentSnapshot:
    """A deployment row as it stands after the transaction's writes."""

    id: str
    kind: str
    outcome: str
    cluster: str | None = None
    service: str | None = None
    service_arn: str | None = None
    reason: str | None = None
    rollback_target: str | None = None
    stuck: bool = False
    task_definition: str | None = None
    lifecycle_stage: str | None = None
    failed_tasks: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    event_ids: tuple[str, ...] = ()
    # Another deployment rolls back to this one: its completion is a restore,
    # not a success of its own to announce.
    is_rollback_target: bool = False
    codedeploy_application: str | None = None
    codedeploy_group: str | None = None
    # Ordering key of the deployment's latest event (for the CodeDeploy hold).
    last_event_at: datetime | None = None
    # The poller has mapped the CodeDeploy group (a codedeploy_groups row exists).
    group_resolved: bool = True
    # [{"name", "arn"}] of the deployment's target groups, where the poller knows them.
    target_groups: tuple[dict[str, str | None], ...] = ()


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

    @property
    def id(self) -> str:
        return alert_id(self.dedupe_key)


def alert_id(dedupe_key: str) -> str:
    """A stable alert id: the same decision always names the same alert."""
    return "alrt_" + hashlib.sha256(dedupe_key.encode()).hexdigest()[:20]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _where(cluster: str | None, service: str | None) -> str:
    return "/".join(p for p in (cluster, service) if p) or "an unknown service"


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
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": kind.value,
        "id": alert_id(dedupe_key),
        "created_at": _iso(now),
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
        "kind": d.kind,
        "outcome": d.outcome,
        "reason": d.reason,
        "rollback_target": d.rollback_target,
        "stuck": d.stuck,
        "task_definition": d.task_definition,
        "lifecycle_stage": d.lifecycle_stage,
        "failed_tasks": d.failed_tasks,
        "started_at": _iso(d.started_at),
        "finished_at": _iso(d.finished_at),
        "codedeploy_application": d.codedeploy_application,
        "codedeploy_group": d.codedeploy_group,
        "target_groups": [dict(tg) for tg in d.target_groups],
    }


BLUE_GREEN_KINDS = frozenset({"blue_green", "codedeploy"})


def _target_group_name(arn: str) -> str:
    """``web-blue`` of ``arn:aws:elasticloadbalancing:…:targetgroup/web-blue/0123…``."""
    resource = arn.rpartition(":")[2]
    parts = resource.split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == "targetgroup" else arn


def target_groups(
    load_balancers: Iterable[Mapping[str, Any]] | None,
    codedeploy_pair: Iterable[Mapping[str, Any]] | None,
) -> tuple[dict[str, str | None], ...]:
    """A deployment's target groups: CodeDeploy's pair (from the mapper) first, then
    the service's load balancers (``target_group_arn`` and ECS native blue/green's
    ``alternate_target_group_arn``, from DescribeServices); once each, by name."""
    found: dict[str, dict[str, str | None]] = {}
    for tg in codedeploy_pair or []:
        name, arn = tg.get("name"), tg.get("arn")
        if isinstance(name, str) and name:
            found.setdefault(name, {"name": name, "arn": arn if isinstance(arn, str) else None})
    for lb in load_balancers or []:
        for key in ("target_group_arn", "alternate_target_group_arn"):
            arn = lb.get(key)
            if isinstance(arn, str) and arn:
                name = _target_group_name(arn)
                known = found.setdefault(name, {"name": name, "arn": arn})
                if known["arn"] is None:
                    known["arn"] = arn
    return tuple(found.values())


def awaiting_service(d: DeploymentSnapshot, *, now: datetime, hold_s: float) -> bool:
    """A CodeDeploy deployment whose group the poller has not mapped yet, seen less
    than ``hold_s`` ago: its alerts wait for the mapping, so that they name the
    service (and reach subscriptions filtered by cluster or service)."""
    if d.kind != "codedeploy" or d.service is not None or d.group_resolved or hold_s <= 0:
        return False
    seen = d.last_event_at or d.started_at
    return seen is not None and now - seen < timedelta(seconds=hold_s)


FAILED_OUTCOMES = frozenset({"failed", "rolled_back", "rollback_failed"})


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
    where = _where(d.cluster, d.service)
    wanted: list[tuple[AlertType, str]] = []
    if d.outcome in FAILED_OUTCOMES:
        reason = f": {d.reason}" if d.reason else ""
        target = f"; rolling back to {d.rollback_target}" if d.rollback_target else ""
        wanted.append(
            (AlertType.DEPLOYMENT_FAILED, f"Deployment {d.id} of {where} failed{reason}{target}")
        )
    if d.outcome == "rolled_back":
        to = f" to {d.rollback_target}" if d.rollback_target else ""
        wanted.append(
            (AlertType.DEPLOYMENT_ROLLED_BACK, f"Deployment {d.id} of {where} was rolled back{to}")
        )
    if d.outcome == "rollback_failed":
        pass  # deployment.failed above already says it; the body's outcome tells the rest
    if d.outcome == "succeeded" and not d.is_rollback_target:
        wanted.append((AlertType.DEPLOYMENT_SUCCEEDED, f"Deployment {d.id} of {where} succeeded"))
    if d.stuck and d.outcome == "in_progress":
        wanted.append(
            (
                AlertType.DEPLOYMENT_STUCK,
                f"Deployment {d.id} of {where} has no running task of its task definition",
            )
        )
    if d.kind in BLUE_GREEN_KINDS and d.target_groups:
        names = ", ".join(str(tg["name"]) for tg in d.target_groups)
        wanted = [(kind, f"{summary} (target groups {names})") for kind, summary in wanted]
    drafts = []
    for kind, summary in wanted:
        key = f"{kind.value}:{d.id}"
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
        )
        drafts.append(
            AlertDraft(kind, key, summary, d.cluster, d.service, d.service_arn, d.id, body)
        )
    return drafts


# ------------------------------------------------------------ tasks and crash loops


def is_failed_start(
    stop_code: str | None, stopped_reason: str | None, containers: Iterable[Mapping[str, Any]]
) -> bool:
    """A stopped task that counts against its deployment (it never ran properly).

    TaskFailedToStart, CannotPullContainerError, ResourceInitializationError, or
    an essential container that exited non-zero.
    """
    if stop_code == "TaskFailedToStart":
        return True
    reason = stopped_reason or ""
    if any(marker in reason for marker in START_FAILURE_MARKERS):
        return True
    if stop_code == "EssentialContainerExited":
        for container in containers:
            code = container.get("exit_code")
            if code is None:
                code = container.get("exitCode")
            if isinstance(code, int) and code != 0:
                return True
    return False


def crash_looping(stops: Sequence[datetime], *, tasks: int, window_s: float) -> bool:
    """True when ``tasks`` failed stops fall within one window of ``window_s`` seconds."""
    if tasks <= 0 or len(stops) < tasks:
        return False
    ordered = sorted(stops)
    window = timedelta(seconds=window_s)
    return any(
        ordered[i + tasks - 1] - ordered[i] <= window for i in range(len(ordered) - tasks + 1)
    )


def crash_loop_reason(count: int, window_s: float, last_reason: str | None) -> str:
    minutes = f"{window_s / 60:g} min"
    why = f" (last: {last_reason})" if last_reason else ""
    return f"{count} tasks of this deployment failed to start within {minutes}{why}"


def is_stuck(
    *,
    outcome: str,
    started_at: datetime | None,
    running_tasks: int,
    now: datetime,
    after_s: float,
) -> bool:
    """An in-progress deployment with no running task ``after_s`` seconds after it began."""
    if outcome != "in_progress" or started_at is None or running_tasks > 0:
        return False
    return now - started_at >= timedelta(seconds=after_s)


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
    """One alert of a noisy type, at most once per ``scope`` and cool-down window."""
    key = f"{kind.value}:{scope}:{cooldown_window(at, rules.cooldown_s)}"
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


def _names(value: str | None) -> set[str]:
    """A name or an ARN: both forms that a filter may use."""
    if not value:
        return set()
    return {value, value.rsplit("/", 1)[-1]}


def matches(sub: Subscription, alert: AlertDraft, tags: Mapping[str, str]) -> bool:
    """Whether ``sub`` wants ``alert``; ``tags`` are the service's known ECS tags."""
    if alert.type.value not in sub.events:
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
