"""What ``ecswatch demo`` shows about itself: a live table on a terminal, lines otherwise.

:func:`collect` reads the numbers (the database, the receiver, the intake, the
process's AWS call counter); :func:`render` draws them with ``rich`` (pure:
numbers in, a renderable out); :func:`lines` gives the same as plain text for
the final summary when stdout is not a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service import telemetry
from service.demo.intake import DatadogIntake
from service.demo.receiver import WebhookReceiver


@dataclass(frozen=True, slots=True)
class Numbers:
    """One reading of everything the summary shows."""

    events_processed: int = 0
    tasks_by_status: dict[str, int] = field(default_factory=dict)
    deployments_by_outcome: dict[str, int] = field(default_factory=dict)
    container_instances: int = 0
    metric_points: dict[str, int] = field(default_factory=dict)
    alerts_raised: int = 0
    # The classified causes of this run's deployment.failed alerts, by category.
    failure_causes: dict[str, int] = field(default_factory=dict)
    alerts_delivered: int = 0
    datadog_series: int = 0
    datadog_points: int = 0
    datadog_events: int = 0
    # CloudWatch series names the intake received (prefix included), and the tag keys
    # on their points: the names Datadog's own integrations use show here.
    datadog_cloudwatch_names: tuple[str, ...] = ()
    datadog_cloudwatch_tag_keys: tuple[str, ...] = ()
    aws_calls: dict[str, int] = field(default_factory=dict)
    #: "account/region" -> what ecswatch holds there (as ``GET /v1/accounts`` counts it)
    #: and this run's events from it.
    scopes: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0


# The demo's database outlives a run (./.ecswatch): events and alerts count from
# this run's start; an earlier run's tasks and instances (gone from this run's
# moto) drop out once reconciliation marks them gone; deployments are all kept.
_QUERIES = {
    "events": "SELECT count(*) FROM raw_events WHERE received_at >= :since",
    "tasks": "SELECT last_status, count(*) FROM tasks WHERE gone_at IS NULL GROUP BY 1 ORDER BY 1",
    "deployments": "SELECT outcome, count(*) FROM deployments GROUP BY 1 ORDER BY 1",
    "instances": "SELECT count(*) FROM container_instances WHERE gone_at IS NULL",
    "metrics": "SELECT namespace, count(*) FROM metric_points GROUP BY 1 ORDER BY 1",
    "alerts": "SELECT count(*) FROM alerts WHERE created_at >= :since",
    # Per scope: the scopes table (GET /v1/accounts) with its live clusters and running
    # tasks, its deployments (ids are unique only within a scope), and this run's
    # events from it (by the cluster ARN, else the envelope's).
    "scopes": "SELECT s.account_id || '/' || s.region,"
    " (SELECT count(*) FROM clusters c WHERE c.gone_at IS NULL"
    "  AND split_part(c.arn, ':', 5) = s.account_id AND split_part(c.arn, ':', 4) = s.region),"
    " (SELECT count(*) FROM tasks t WHERE t.gone_at IS NULL AND t.last_status = 'RUNNING'"
    "  AND split_part(t.arn, ':', 5) = s.account_id AND split_part(t.arn, ':', 4) = s.region),"
    " (SELECT count(*) FROM deployments d WHERE d.account_id = s.account_id"
    "  AND d.region = s.region),"
    " (SELECT count(*) FROM raw_events e WHERE e.received_at >= :since"
    "  AND coalesce(nullif(split_part(e.cluster_arn, ':', 5), ''), e.account) = s.account_id"
    "  AND coalesce(nullif(split_part(e.cluster_arn, ':', 4), ''), e.region) = s.region),"
    " s.monitored FROM scopes s ORDER BY 1",
    "causes": "SELECT payload->'deployment'->'cause'->>'category', count(*) FROM alerts"
    " WHERE created_at >= :since AND type = 'deployment.failed'"
    " AND payload->'deployment'->'cause'->>'category' IS NOT NULL GROUP BY 1 ORDER BY 1",
}


def aws_calls() -> dict[str, int]:
    """This process's AWS calls so far, by service (from the ``/metrics`` counter)."""
    calls: dict[str, int] = {}
    for metric in telemetry.AWS_CALLS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                service = sample.labels.get("service", "?")
                calls[service] = calls.get(service, 0) + int(sample.value)
    return dict(sorted(calls.items()))


async def collect(
    engine: AsyncEngine,
    receiver: WebhookReceiver,
    intake: DatadogIntake,
    *,
    since: datetime,
    elapsed_s: float,
) -> Numbers:
    """Read the numbers of the run that began at ``since``."""
    p = {"since": since}
    async with engine.connect() as conn:
        events = (await conn.execute(text(_QUERIES["events"]), p)).scalar() or 0
        tasks = {str(r[0]): int(r[1]) for r in await conn.execute(text(_QUERIES["tasks"]))}
        outcomes = {str(r[0]): int(r[1]) for r in await conn.execute(text(_QUERIES["deployments"]))}
        instances = (await conn.execute(text(_QUERIES["instances"]))).scalar() or 0
        points = {str(r[0]): int(r[1]) for r in await conn.execute(text(_QUERIES["metrics"]))}
        alerts = (await conn.execute(text(_QUERIES["alerts"]), p)).scalar() or 0
        causes = {str(r[0]): int(r[1]) for r in await conn.execute(text(_QUERIES["causes"]), p)}
        scopes = {
            str(r[0]): f"{r[1]} clusters, {r[2]} running tasks, {r[3]} deployments,"
            f" {r[4]} events" + ("" if r[5] else " (unmonitored)")
            for r in await conn.execute(text(_QUERIES["scopes"]), p)
        }
    series = intake.series()
    cloudwatch = [s for s in series if ".aws." in str(s.get("metric", ""))]
    delivered = sum(1 for d in receiver.deliveries if d.verified and 200 <= d.status < 300)
    return Numbers(
        events_processed=int(events),
        tasks_by_status=tasks,
        deployments_by_outcome=outcomes,
        container_instances=int(instances),
        metric_points=points,
        alerts_raised=int(alerts),
        failure_causes=causes,
        alerts_delivered=delivered,
        datadog_series=len(series),
        datadog_points=sum(len(s.get("points", [])) for s in series),
        datadog_events=len(intake.events()),
        datadog_cloudwatch_names=tuple(sorted({str(s["metric"]) for s in cloudwatch})),
        datadog_cloudwatch_tag_keys=tuple(
            sorted({str(t).split(":", 1)[0] for s in cloudwatch for t in s.get("tags") or []})
        ),
        aws_calls=aws_calls(),
        scopes=scopes,
        elapsed_s=elapsed_s,
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def rows(n: Numbers) -> list[tuple[str, str]]:
    """(label, value) pairs, in display order (pure)."""
    return [
        ("Events processed", str(n.events_processed)),
        *((f"Scope {scope}", value) for scope, value in n.scopes.items()),
        ("Tasks by status", _counts(n.tasks_by_status)),
        ("Deployments by outcome", _counts(n.deployments_by_outcome)),
        ("Container instances", str(n.container_instances)),
        ("Metric points", _counts(n.metric_points)),
        ("Alerts", f"{n.alerts_raised} raised, {n.alerts_delivered} delivered (verified)"),
        ("Failure causes", _counts(n.failure_causes)),
        (
            "Datadog intake",
            f"{n.datadog_series} series ({n.datadog_points} points), {n.datadog_events} events",
        ),
        ("Datadog CloudWatch names", ", ".join(n.datadog_cloudwatch_names) or "-"),
        ("Datadog CloudWatch tags", ", ".join(n.datadog_cloudwatch_tag_keys) or "-"),
        ("AWS calls by ecswatch", f"{sum(n.aws_calls.values())} ({_counts(n.aws_calls)})"),
    ]


def render(n: Numbers, *, title: str, recent: list[str]) -> Group:
    """The live summary: a table of the numbers and the latest alert/event lines."""
    table = Table(
        title=f"{title} ({n.elapsed_s:.0f} s)",
        title_justify="left",
        show_header=False,
        expand=False,
    )
    table.add_column("", style="bold")
    table.add_column("")
    for label, value in rows(n):
        table.add_row(label, value)
    return Group(table, *(Text(line, overflow="ellipsis", no_wrap=True) for line in recent))


def lines(n: Numbers, *, title: str) -> list[str]:
    """The summary as plain lines (pure)."""
    return [f"{title}:"] + [f"  {label}: {value}" for label, value in rows(n)]
