"""What an event shows, as facts to count or announce once (pure).

A fact has a key ("task X stopped", "deployment Y failed"); the consumer inserts
the keys of a batch's facts and keeps only those that were new, so a fact is
counted once however often its event is delivered, re-sent under a new id, or
seen again by reconciliation. Each fact carries its metric contributions and at
most one Datadog event. Tags are built from an :class:`EcsContext` (never a task
or an ARN); the ECS resource tags are looked up by the caller. Every fact carries
its scope, ``aws_account`` and ``region``, whenever an ARN or the event says it:
the cluster's ARN first, else the event's ``account`` and ``region``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from service.datadog.metrics import MetricName, exit_class
from service.datadog.tags import EcsContext, arn_parts, ecs_tags, tag
from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.snapshot import FAILED_OUTCOMES, DeploymentSnapshot, failure_summary
from service.events.arns import family_and_revision
from service.events.models import (
    ContainerInstanceHealthChange,
    ContainerInstanceStateChange,
    NormalisedEvent,
    ServiceAction,
    TaskStateChange,
)

AlertType = Literal["error", "warning", "info", "success"]

# A count stamped further back than this is stamped "now" instead: counted late
# rather than refused by Datadog as too old (replays, a backlog after an outage).
MAX_COUNT_AGE = timedelta(minutes=50)


@dataclass(frozen=True, slots=True)
class Contribution:
    """One point: a metric, its own tags (besides the context's), value and time."""

    metric: MetricName
    value: float
    at: datetime
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A Datadog event to create (v1): title, text, type and grouping key."""

    title: str
    text: str
    alert_type: AlertType
    aggregation_key: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Fact:
    """Something that happened once, what it adds to metrics, and its Datadog event."""

    key: str
    context: EcsContext
    contributions: tuple[Contribution, ...] = ()
    event: EventSpec | None = None


@dataclass(frozen=True, slots=True)
class Derived:
    """Facts to record, and fact keys to forget (a state left, so it may recur)."""

    facts: list[Fact] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)


def stamp(at: datetime, now: datetime) -> datetime:
    """The time a count is stamped with: its own, unless in the future or too old."""
    if at > now or now - at > MAX_COUNT_AGE:
        return now
    return at


def _lines(pairs: Sequence[tuple[str, object]]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in pairs if v not in (None, ""))


def _in_event_scope(context: EcsContext, event: NormalisedEvent) -> EcsContext:
    """``context`` with the event's account and region (the tags' fallback when no
    cluster ARN names the scope)."""
    return replace(context, account=event.envelope.account, region=event.envelope.region)


def _task_context(event: NormalisedEvent, task: TaskStateChange) -> EcsContext:
    context = EcsContext(
        cluster_arn=task.cluster_arn,
        cluster_name=task.cluster_name,
        service_name=task.service_name,
        launch_type=task.launch_type,
        task_family=task.family,
        task_version=task.revision,
    )
    return _in_event_scope(context, event)


def _is_oom(reason: str | None) -> bool:
    return reason is not None and "outofmemory" in reason.replace(" ", "").lower()


def task_facts(event: NormalisedEvent, task: TaskStateChange, now: datetime) -> list[Fact]:
    """Started, stopped (by stop code), container exits (by class), OOM kills, and
    the events of a task that failed to start or was killed for memory."""
    context = _task_context(event, task)
    at = event.envelope.time
    facts: list[Fact] = []
    arn = task.task_arn
    where = task.service_name or task.group or "standalone"
    if task.last_status == "RUNNING" or task.started_at is not None:
        when = stamp(task.started_at or at, now)
        facts.append(
            Fact(f"task:{arn}:started", context, (Contribution(MetricName.TASKS_STARTED, 1, when),))
        )
    if task.last_status != "STOPPED":
        return facts
    when = stamp(task.stopped_at or at, now)
    stop_code = task.stop_code or "none"
    failed_to_start = None
    if task.stop_code == "TaskFailedToStart":
        failed_to_start = EventSpec(
            title=f"ECS task failed to start: {task.cluster_name}/{where}",
            text=_lines(
                [
                    ("cluster", task.cluster_name),
                    ("service", task.service_name),
                    ("task definition", task.task_definition_arn),
                    ("reason", task.stopped_reason),
                    ("task", arn),
                ]
            ),
            alert_type="error",
            aggregation_key=_grouping(context, f"task_failed_to_start:{task.cluster_name}/{where}"),
            at=task.stopped_at or at,
        )
    facts.append(
        Fact(
            f"task:{arn}:stopped",
            context,
            (Contribution(MetricName.TASKS_STOPPED, 1, when, (f"stop_code:{stop_code}".lower(),)),),
            failed_to_start,
        )
    )
    for container in task.containers:
        if container.name is None:
            continue
        if container.exit_code is not None:
            facts.append(
                Fact(
                    f"task:{arn}:exit:{container.name}",
                    context,
                    (
                        Contribution(
                            MetricName.CONTAINERS_EXITED,
                            1,
                            when,
                            (f"exit_class:{exit_class(container.exit_code)}",),
                        ),
                    ),
                )
            )
        if _is_oom(container.reason):
            oom = EventSpec(
                title=f"ECS container killed out of memory: {task.cluster_name}/{where}",
                text=_lines(
                    [
                        ("cluster", task.cluster_name),
                        ("service", task.service_name),
                        ("container", container.name),
                        ("reason", container.reason),
                        ("exit code", container.exit_code),
                        ("task", arn),
                    ]
                ),
                alert_type="error",
                aggregation_key=_grouping(context, f"oom:{task.cluster_name}/{where}"),
                at=task.stopped_at or at,
            )
            facts.append(
                Fact(
                    f"task:{arn}:oom:{container.name}",
                    context,
                    (Contribution(MetricName.CONTAINERS_OOM_KILLED, 1, when),),
                    oom,
                )
            )
    return facts


def service_action_facts(event: NormalisedEvent, action: ServiceAction) -> list[Fact]:
    """A WARN or ERROR service action becomes a Datadog event (warning, error)."""
    if action.event_type not in ("WARN", "ERROR"):
        return []
    service = action.service_name or "?"
    alert: AlertType = "error" if action.event_type == "ERROR" else "warning"
    context = EcsContext(
        cluster_arn=action.cluster_arn or event.cluster_arn,
        cluster_name=action.cluster_name,
        service_name=action.service_name,
    )
    context = _in_event_scope(context, event)
    spec = EventSpec(
        title=f"ECS service {action.event_name}: {action.cluster_name}/{service}",
        text=_lines(
            [
                ("cluster", action.cluster_name),
                ("service", action.service_name),
                ("event", action.event_name),
                ("reason", action.reason),
                ("service ARN", action.service_arn),
            ]
        ),
        alert_type=alert,
        aggregation_key=_grouping(context, f"service:{action.cluster_name}/{service}"),
        at=action.created_at or event.envelope.time,
    )
    key = f"service_action:{event.natural_key or event.envelope.id}"
    return [Fact(key, context, (), spec)]


def instance_facts(event: NormalisedEvent, applied: bool) -> Derived:
    """Draining and impaired container instances become events, once per episode.

    The episode ends (its fact is forgotten) when a newer state shows the
    instance ACTIVE again, or its health OK again.
    """
    out = Derived()
    detail = event.detail
    if isinstance(detail, ContainerInstanceStateChange):
        arn = detail.container_instance_arn
        context = _in_event_scope(
            EcsContext(cluster_arn=detail.cluster_arn, cluster_name=detail.cluster_name), event
        )
        if detail.status == "DRAINING":
            spec = EventSpec(
                title=f"ECS container instance draining: {detail.cluster_name}",
                text=_lines(
                    [
                        ("cluster", detail.cluster_name),
                        ("reason", detail.status_reason),
                        ("running tasks", detail.running_tasks_count),
                        ("container instance", arn),
                    ]
                ),
                alert_type="warning",
                aggregation_key=f"container_instance:{arn}"[:AGGREGATION_KEY_MAX],
                at=detail.updated_at or event.envelope.time,
            )
            out.facts.append(Fact(f"ci:{arn}:draining", context, (), spec))
        elif detail.status == "ACTIVE" and applied:
            out.forget.append(f"ci:{arn}:draining")
    elif isinstance(detail, ContainerInstanceHealthChange):
        arn = detail.container_instance_arn
        context = _in_event_scope(
            EcsContext(cluster_arn=detail.cluster_arn, cluster_name=detail.cluster_name), event
        )
        if detail.overall_status == "IMPAIRED":
            failing = [c.type for c in detail.health_checks if c.status == "IMPAIRED"]
            spec = EventSpec(
                title=f"ECS container instance impaired: {detail.cluster_name}",
                text=_lines(
                    [
                        ("cluster", detail.cluster_name),
                        ("failing checks", ", ".join(t for t in failing if t)),
                        ("container instance", arn),
                    ]
                ),
                alert_type="warning",
                aggregation_key=f"container_instance:{arn}"[:AGGREGATION_KEY_MAX],
                at=detail.updated_at,
            )
            out.facts.append(Fact(f"ci:{arn}:impaired", context, (), spec))
        elif detail.overall_status == "OK":
            out.forget.append(f"ci:{arn}:impaired")
    return out


def derive(
    events: Sequence[NormalisedEvent], applied: Mapping[str, bool], now: datetime
) -> Derived:
    """Facts and forgettings of a batch of newly stored events (any order)."""
    out = Derived()
    for event in events:
        detail = event.detail
        if isinstance(detail, TaskStateChange):
            out.facts.extend(task_facts(event, detail, now))
        elif isinstance(detail, ServiceAction):
            out.facts.extend(service_action_facts(event, detail))
        elif isinstance(detail, ContainerInstanceStateChange | ContainerInstanceHealthChange):
            part = instance_facts(event, applied.get(event.envelope.id, False))
            out.facts.extend(part.facts)
            out.forget.extend(part.forget)
    return out


# --- deployments -----------------------------------------------------------------

_OUTCOME_ALERTS: dict[Outcome, AlertType] = {
    Outcome.SUCCEEDED: "success",
    Outcome.FAILED: "error",
    Outcome.ROLLED_BACK: "warning",
    Outcome.ROLLBACK_FAILED: "error",
    Outcome.STOPPED: "warning",
}


#: Datadog's limit on an event's ``aggregation_key``.
AGGREGATION_KEY_MAX = 100


def _grouping(context: EcsContext, key: str) -> str:
    """An event's ``aggregation_key``: ``key`` after the account and region of
    ``context`` where it names them (names and deployment ids are unique only within
    a scope), cut to Datadog's limit."""
    parts = arn_parts(context.cluster_arn)
    account, region = parts.account or context.account, parts.region or context.region
    return (f"{account}/{region}/{key}" if account and region else key)[:AGGREGATION_KEY_MAX]


def deployment_facts(d: DeploymentSnapshot, now: datetime) -> list[Fact]:
    """Started and outcome facts of one deployment as it stands after the batch.

    Each outcome a deployment reaches is counted once (a failed deployment that
    then rolls back counts as failed and as rolled back) and announced once, with
    ``aggregation_key`` the deployment's scope and id so Datadog groups its events. A failure's
    event text leads with :func:`~service.deployments.snapshot.failure_summary`,
    then the snapshot's classified cause where it carries one. A success that closes
    a failure (``recovers``) is announced once more, as a recovery grouped with the
    failed deployment.
    """
    family, revision = family_and_revision(d.task_definition)
    # The deployment's scope tags it where no cluster ARN does (a CodeDeploy deployment).
    context = EcsContext(
        cluster_arn=d.cluster_arn,
        cluster_name=d.cluster,
        service_name=d.service,
        account=d.account_id or None,
        region=d.region or None,
    )
    # Deployment ids are unique only within a scope: the fact keys say which.
    scoped = f"{d.account_id}/{d.region}/{d.id}" if d.account_id and d.region else d.id
    where = f"{d.cluster}/{d.service}"
    kind = str(d.kind or DeploymentKind.ROLLING)
    body = [
        ("cluster", d.cluster),
        ("service", d.service),
        ("deployment", d.id),
        ("kind", kind),
        ("task definition", d.task_definition),
    ]
    facts: list[Fact] = []
    if d.last_event_name is not None and d.started_at is not None:
        facts.append(
            Fact(
                f"deployment:{scoped}:started",
                context,
                (),
                EventSpec(
                    title=f"ECS deployment started: {where}",
                    text=_lines([*body, ("family", family), ("revision", revision)]),
                    alert_type="info",
                    aggregation_key=_grouping(context, d.id),
                    at=d.started_at,
                ),
            )
        )
    outcome = Outcome(d.outcome or Outcome.IN_PROGRESS)
    if outcome not in _OUTCOME_ALERTS:
        return facts
    finished_at = d.finished_at or d.last_event_at or now
    kind_tags = (f"outcome:{outcome}", f"deployment_kind:{kind}")
    contributions = [
        Contribution(MetricName.DEPLOYMENTS_FINISHED, 1, stamp(finished_at, now), kind_tags)
    ]
    if d.started_at is not None and d.finished_at is not None:
        seconds = (d.finished_at - d.started_at).total_seconds()
        if seconds >= 0:
            contributions.append(
                Contribution(
                    MetricName.DEPLOYMENT_DURATION, seconds, stamp(finished_at, now), kind_tags
                )
            )
    summary = [("summary", failure_summary(d))] if outcome in FAILED_OUTCOMES else []
    if d.cause is not None:
        summary.append(("cause", f"{d.cause.category}: {d.cause.summary}"))
    spec = EventSpec(
        title=f"ECS deployment {outcome.replace('_', ' ')}: {where}",
        text=_lines(
            [
                *summary,
                *body,
                ("outcome", outcome),
                ("reason", d.reason),
                ("rollback target", d.rollback_target),
                ("service ARN", d.service_arn),
            ]
        ),
        alert_type=_OUTCOME_ALERTS[outcome],
        aggregation_key=_grouping(context, d.id),
        at=finished_at,
    )
    facts.append(Fact(f"deployment:{scoped}:{outcome}", context, tuple(contributions), spec))
    if outcome == Outcome.SUCCEEDED and d.recovers is not None:
        recovered = EventSpec(
            title=f"ECS deployment recovered: {where}",
            text=_lines([*body, ("recovers", d.recovers), ("service ARN", d.service_arn)]),
            alert_type="success",
            aggregation_key=_grouping(context, d.recovers),
            at=finished_at,
        )
        facts.append(Fact(f"deployment:{scoped}:recovered", context, (), recovered))
    return facts


# --- building the rows ------------------------------------------------------------


def series_of(
    facts: Sequence[Fact], resource_tags: Mapping[EcsContext, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """The stored series of ``facts``: one per metric and tags, points summed per second."""
    sums: dict[tuple[str, tuple[str, ...]], dict[int, float]] = {}
    extra: dict[tuple[str, tuple[str, ...]], Mapping[str, str]] = {}
    gauges: dict[tuple[str, tuple[str, ...]], dict[int, float]] = {}
    for fact in facts:
        base = tuple(ecs_tags(fact.context))
        for c in fact.contributions:
            tags = base + tuple(t for t in (tag(*x.split(":", 1)) for x in c.tags) if t)
            key = (c.metric.value, tags)
            extra[key] = resource_tags.get(fact.context, {})
            ts = int(c.at.timestamp())
            if c.metric is MetricName.DEPLOYMENT_DURATION:
                gauges.setdefault(key, {})[ts] = c.value
            else:
                points = sums.setdefault(key, {})
                points[ts] = points.get(ts, 0.0) + c.value
    out: list[dict[str, Any]] = []
    for table in (sums, gauges):
        for (metric, tags), points in table.items():
            series: dict[str, Any] = {
                "metric": metric,
                "points": [[ts, value] for ts, value in sorted(points.items())],
                "tags": list(tags),
            }
            if extra[(metric, tags)]:
                series["resource_tags"] = dict(extra[(metric, tags)])
            out.append(series)
    return out


def event_payload(fact: Fact, resource_tags: Mapping[str, str]) -> dict[str, Any]:
    """The stored payload of a fact's Datadog event."""
    assert fact.event is not None
    spec = fact.event
    payload: dict[str, Any] = {
        "title": spec.title,
        "text": spec.text,
        "alert_type": spec.alert_type,
        "aggregation_key": spec.aggregation_key,
        "date_happened": int(spec.at.timestamp()),
        "tags": ecs_tags(fact.context),
    }
    if resource_tags:
        payload["resource_tags"] = dict(resource_tags)
    return payload
