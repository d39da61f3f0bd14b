"""Retention: delete history older than ``ECSWATCH_RETENTION_DAYS``, in small batches.

What goes (docs/architecture.md, "Retention"):

- raw events: a day's partition of ``raw_events`` goes whole (``DROP TABLE``, no
  row deletes, no bloat) once all of its day is past the cutoff, so raw events
  stay between ``ECSWATCH_RETENTION_DAYS`` and one day more; rows in the default
  partition (events whose day had no partition) go row by row at the cutoff, as
  do the natural keys that deduplicate versionless events. Every run also adds
  the partitions of today and the next ``DAYS_AHEAD`` days that are missing;
- metric points whose ``timestamp`` is past the cutoff;
- alerts created before the cutoff, with every webhook delivery logged for them;
- webhook deliveries attempted before the cutoff (test deliveries, or ones whose
  alert is already gone);
- outbox rows that are ``delivered`` or ``dead`` and were created before the cutoff
  (a ``pending`` row is never pruned, however old);
- the Datadog facts (what the counters already counted) recorded before the cutoff;
- tasks that stopped before the cutoff, or that reconciliation marked gone
  (``gone_at``) before it, with their tags.

Nothing else is touched: clusters, services, container instances, deployments,
running or recently stopped tasks, subscriptions and quarantine stay as they are.

:func:`plan_retention` is the pure decision (the cutoff and the ordered steps, from
``now``); :func:`prune` is the I/O. Every batch is its own short transaction that
selects at most ``batch_size`` rows with ``FOR UPDATE SKIP LOCKED`` (a row that
ingestion holds is left for the next run instead of waited for) and gives up at
once rather than queue behind a schema change (``lock_timeout``). Ingestion never
waits on pruning for more than one batch's row locks, and only on rows that are
past retention anyway. Adding or dropping a partition is one transaction per
day through the ``SECURITY DEFINER`` functions of migration 0010 (the runtime
user has no schema rights); its brief exclusive lock on ``raw_events`` is bounded
by the same ``lock_timeout``. The poller's leader runs :func:`prune` periodically;
two runs at once, or a run cut short, are harmless: every delete is idempotent,
and the partition functions serialise on an advisory lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.db import sqlstate_of
from service.logging import get_logger

log = get_logger(__name__)

DEFAULT_BATCH_SIZE = 2_000
# Raw event partitions exist for today and this many days ahead (UTC days).
DAYS_AHEAD = 7
PARTITION_PREFIX = "raw_events_p"
# A batch that cannot take its table lock within this time (a migration holds it)
# fails instead of queueing every writer behind it; the next run tries again.
LOCK_TIMEOUT = "2s"
STATEMENT_TIMEOUT = "60s"
# lock_not_available (lock_timeout) and query_canceled (statement_timeout).
_GAVE_UP = ("55P03", "57014")


class PruneStep(StrEnum):
    """One kind of history that retention deletes, in the order :func:`prune` runs them."""

    RAW_EVENT_PARTITIONS = "raw_event_partitions"
    RAW_EVENTS = "raw_events"
    RAW_EVENT_NATURAL_KEYS = "raw_event_natural_keys"
    METRIC_POINTS = "metric_points"
    ALERTS = "alerts"
    WEBHOOK_DELIVERIES = "webhook_deliveries"
    OUTBOX_DELIVERED = "outbox_delivered"
    OUTBOX_DEAD = "outbox_dead"
    DATADOG_FACTS = "datadog_facts"
    STOPPED_TASKS = "stopped_tasks"


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What one run deletes: everything older than ``cutoff``, step by step."""

    now: datetime
    retention_days: int
    cutoff: datetime
    steps: tuple[PruneStep, ...] = tuple(PruneStep)


def plan_retention(now: datetime, retention_days: int) -> RetentionPlan:
    """The cutoff for ``now``; refuses a naive ``now`` and a retention under one day."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    return RetentionPlan(
        now=now, retention_days=retention_days, cutoff=now - timedelta(days=retention_days)
    )


@dataclass(slots=True)
class PruneReport:
    """Rows deleted by one run, by table (as ``/metrics`` labels them)."""

    cutoff: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0
    # False when a batch gave up on a lock or a timeout; the next run carries on.
    complete: bool = True
    partitions_added: int = 0
    partitions_dropped: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def add(self, table: str, count: int) -> None:
        if count:
            self.deleted[table] = self.deleted.get(table, 0) + count
            telemetry.RETENTION_ROWS_PRUNED.labels(table).inc(count)


# Each oldest-first select walks the time index of its table; the row locks it takes
# skip anything a writer holds.
_OLDEST = {
    # Only the default partition's rows go row by row; day partitions go whole.
    PruneStep.RAW_EVENTS: (
        "raw_events",
        "SELECT id FROM raw_events_default WHERE time < :cutoff "
        "ORDER BY time LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM raw_events_default WHERE id = ANY(:keys)",
    ),
    PruneStep.RAW_EVENT_NATURAL_KEYS: (
        "raw_event_natural_keys",
        "SELECT natural_key FROM raw_event_natural_keys WHERE time < :cutoff "
        "ORDER BY time LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM raw_event_natural_keys WHERE natural_key = ANY(:keys)",
    ),
    PruneStep.METRIC_POINTS: (
        "metric_points",
        "SELECT id FROM metric_points WHERE timestamp < :cutoff "
        "ORDER BY timestamp LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM metric_points WHERE id = ANY(:keys)",
    ),
    PruneStep.WEBHOOK_DELIVERIES: (
        "webhook_deliveries",
        "SELECT id FROM webhook_deliveries WHERE attempted_at < :cutoff "
        "ORDER BY attempted_at LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM webhook_deliveries WHERE id = ANY(:keys)",
    ),
    PruneStep.OUTBOX_DELIVERED: (
        "outbox",
        "SELECT id FROM outbox WHERE status = 'delivered' AND created_at < :cutoff "
        "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM outbox WHERE id = ANY(:keys)",
    ),
    PruneStep.OUTBOX_DEAD: (
        "outbox",
        "SELECT id FROM outbox WHERE status = 'dead' AND created_at < :cutoff "
        "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM outbox WHERE id = ANY(:keys)",
    ),
    # What the Datadog counters already counted: kept as long as the events that
    # could be re-delivered and counted again are kept.
    PruneStep.DATADOG_FACTS: (
        "datadog_facts",
        "SELECT key FROM datadog_facts WHERE created_at < :cutoff "
        "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED",
        "DELETE FROM datadog_facts WHERE key = ANY(:keys)",
    ),
}

# The day partitions of raw_events, by name (the catalog is readable by every user).
_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = to_regclass('raw_events')"
)

_OLD_ALERTS = (
    "SELECT id FROM alerts WHERE created_at < :cutoff "
    "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED"
)

# A task is history once it stopped before the cutoff. Keyset on ARN (the
# (last_status, arn) index) so one run reads each stopped task at most once, even
# when most stopped tasks are still inside the retention.
# TODO(merge with the poller branch): tasks it marks gone use that marker instead.
_STOPPED_TASKS = (
    "SELECT arn FROM tasks WHERE arn > :after "
    "AND ((last_status = 'STOPPED' AND coalesce(stopped_at, updated_at, seen_at) < :cutoff) "
    "OR gone_at < :cutoff) "
    "ORDER BY arn LIMIT :limit FOR UPDATE SKIP LOCKED"
)


async def _begin_batch(session: AsyncSession) -> None:
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    await session.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))


async def _select_keys(
    session: AsyncSession, sql: str, params: dict[str, object]
) -> Sequence[object]:
    return (await session.execute(text(sql), params)).scalars().all()


async def _delete(session: AsyncSession, sql: str, keys: Sequence[object]) -> int:
    result = await session.execute(text(sql), {"keys": list(keys)})
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _prune_oldest(
    sessionmaker: async_sessionmaker[AsyncSession],
    step: PruneStep,
    plan: RetentionPlan,
    batch_size: int,
    report: PruneReport,
    pause_s: float,
) -> None:
    table, select_sql, delete_sql = _OLDEST[step]
    while True:
        async with sessionmaker() as session, session.begin():
            await _begin_batch(session)
            keys = await _select_keys(
                session, select_sql, {"cutoff": plan.cutoff, "limit": batch_size}
            )
            deleted = await _delete(session, delete_sql, keys) if keys else 0
        report.batches += 1
        report.add(table, deleted)
        if len(keys) < batch_size:
            return
        await asyncio.sleep(pause_s)


def partition_days(names: Sequence[str]) -> list[date]:
    """The days of ``raw_events_pYYYYMMDD`` partitions among ``names``, in order."""
    days = []
    for name in names:
        if name.startswith(PARTITION_PREFIX):
            try:
                days.append(datetime.strptime(name[len(PARTITION_PREFIX) :], "%Y%m%d").date())
            except ValueError:
                continue
    return sorted(days)


def partitions_to_drop(days: Sequence[date], cutoff: datetime) -> list[date]:
    """The partition days wholly past ``cutoff``: their last instant is before it."""
    return [d for d in days if _day_start(d + timedelta(days=1)) <= cutoff]


def partitions_to_add(days: Sequence[date], now: datetime) -> list[date]:
    """Today's and the next ``DAYS_AHEAD`` days' partitions that do not exist yet (UTC)."""
    today = now.astimezone(UTC).date()
    have = set(days)
    wanted = (today + timedelta(days=n) for n in range(DAYS_AHEAD + 1))
    return [d for d in wanted if d not in have]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _partition_days(sessionmaker: async_sessionmaker[AsyncSession]) -> list[date]:
    async with sessionmaker() as session:
        names = await _select_keys(session, _PARTITIONS, {})
    return partition_days([str(n) for n in names])


async def _maintain_partitions(
    sessionmaker: async_sessionmaker[AsyncSession],
    plan: RetentionPlan,
    report: PruneReport,
) -> None:
    """Add the partitions ahead, then drop the days past the cutoff, one per transaction."""
    days = await _partition_days(sessionmaker)
    for day in partitions_to_add(days, plan.now):
        async with sessionmaker() as session, session.begin():
            await _begin_batch(session)
            await session.execute(text("SELECT raw_events_add_day(:day)"), {"day": day})
        report.partitions_added += 1
    for day in partitions_to_drop(days, plan.cutoff):
        async with sessionmaker() as session, session.begin():
            await _begin_batch(session)
            rows = (
                await session.execute(text("SELECT raw_events_drop_day(:day)"), {"day": day})
            ).scalar_one()
        report.batches += 1
        if rows is not None:
            report.partitions_dropped += 1
            report.add("raw_events", int(rows))


async def _prune_alerts(
    sessionmaker: async_sessionmaker[AsyncSession],
    plan: RetentionPlan,
    batch_size: int,
    report: PruneReport,
    pause_s: float,
) -> None:
    while True:
        async with sessionmaker() as session, session.begin():
            await _begin_batch(session)
            keys = await _select_keys(
                session, _OLD_ALERTS, {"cutoff": plan.cutoff, "limit": batch_size}
            )
            deliveries = alerts = 0
            if keys:
                # The delivery log first: its foreign key would otherwise set alert_id
                # to NULL and keep the rows.
                deliveries = await _delete(
                    session, "DELETE FROM webhook_deliveries WHERE alert_id = ANY(:keys)", keys
                )
                alerts = await _delete(session, "DELETE FROM alerts WHERE id = ANY(:keys)", keys)
        report.batches += 1
        report.add("webhook_deliveries", deliveries)
        report.add("alerts", alerts)
        if len(keys) < batch_size:
            return
        await asyncio.sleep(pause_s)


async def _prune_stopped_tasks(
    sessionmaker: async_sessionmaker[AsyncSession],
    plan: RetentionPlan,
    batch_size: int,
    report: PruneReport,
    pause_s: float,
) -> None:
    after = ""
    while True:
        async with sessionmaker() as session, session.begin():
            await _begin_batch(session)
            arns = await _select_keys(
                session,
                _STOPPED_TASKS,
                {"cutoff": plan.cutoff, "limit": batch_size, "after": after},
            )
            tags = tasks = 0
            if arns:
                tags = await _delete(
                    session, "DELETE FROM resource_tags WHERE resource_arn = ANY(:keys)", arns
                )
                tasks = await _delete(session, "DELETE FROM tasks WHERE arn = ANY(:keys)", arns)
        report.batches += 1
        report.add("resource_tags", tags)
        report.add("tasks", tasks)
        if len(arns) < batch_size:
            return
        after = str(arns[-1])
        await asyncio.sleep(pause_s)


async def prune(
    sessionmaker: async_sessionmaker[AsyncSession],
    retention_days: int,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    pause_s: float = 0.0,
) -> PruneReport:
    """Delete everything past retention at ``now``; return the rows deleted by table.

    ``pause_s`` sleeps between batches to leave the database to ingestion on a busy
    server. A batch that cannot get its lock within ``LOCK_TIMEOUT`` (a migration
    holds the table) or runs past ``STATEMENT_TIMEOUT`` ends the run early with
    ``complete=False``; any other database error is raised. Either way what was
    deleted stays deleted and is counted in ``/metrics``, and the next run carries
    on where this one stopped. The last-run gauges move only when a run completes.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    plan = plan_retention(now, retention_days)
    report = PruneReport(cutoff=plan.cutoff)
    started = time.monotonic()
    for step in plan.steps:
        try:
            if step is PruneStep.RAW_EVENT_PARTITIONS:
                await _maintain_partitions(sessionmaker, plan, report)
            elif step is PruneStep.ALERTS:
                await _prune_alerts(sessionmaker, plan, batch_size, report, pause_s)
            elif step is PruneStep.STOPPED_TASKS:
                await _prune_stopped_tasks(sessionmaker, plan, batch_size, report, pause_s)
            else:
                await _prune_oldest(sessionmaker, step, plan, batch_size, report, pause_s)
        except DBAPIError as exc:
            if sqlstate_of(exc) not in _GAVE_UP:
                raise
            # A schema change holds the table, or the server is too slow: yield
            # rather than queue every writer behind this batch.
            report.complete = False
            log.warning("retention_interrupted", step=step.value, sqlstate=sqlstate_of(exc))
            break
    report.seconds = time.monotonic() - started
    if report.complete:
        telemetry.RETENTION_LAST_RUN.set(now.timestamp())
        telemetry.RETENTION_LAST_RUN_DURATION.set(report.seconds)
    log.info(
        "retention_pruned",
        cutoff=plan.cutoff.isoformat(),
        complete=report.complete,
        deleted=report.deleted,
        partitions_added=report.partitions_added,
        partitions_dropped=report.partitions_dropped,
        batches=report.batches,
        seconds=round(report.seconds, 3),
    )
    return report
