"""The periodic Datadog job: state gauges, CloudWatch points, and time-based facts.

Every ``ECSWATCH_METRICS_INTERVAL_S`` it writes, each in one short transaction:

* **state gauges** computed from Postgres (desired, running and pending tasks per
  service; tasks by status; container instances by status and agent connection;
  deployments in progress; ecswatch's own lag, outbox, dead rows, heartbeat age
  and poller leaders; and per watched scope its heartbeat age and whether its
  last round failed), as one
  ``datadog_metrics`` row per interval bucket (``dd:gauges:<bucket>``: replicas
  running the job write it once);
* **CloudWatch and ALB points** from ``metric_points``, read past a high-water
  mark (``datadog_cursors``, locked while read) so each point is forwarded once,
  with its own timestamp;
* **facts that only time reveals**: a container instance disconnected beyond a
  grace period, and alerts raised (counted once each).

The decisions (which series, which tags) are pure functions of the rows read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.datadog.facts import Contribution, Derived, EventSpec, Fact
from service.datadog.forwarder import MAX_POINT_AGE_S
from service.datadog.metrics import MetricName, cloudwatch_name
from service.datadog.outbox import record_facts
from service.datadog.tags import EcsContext, arn_parts, ecs_tags, tag
from service.deployments.outcome import Outcome
from service.events.arns import parse_arn
from service.logging import get_logger
from service.outbox.models import OutboxItem, OutboxKind
from service.poller.leader import COUNT_LEADERS_SQL
from service.state.heartbeats import heartbeat_age_s

log = get_logger(__name__)

# A container instance whose agent stays disconnected this long gets an event.
DISCONNECTED_GRACE = timedelta(minutes=5)
# Points read per outbox row when forwarding metric_points.
POINTS_PER_ROW = 5_000

Series = dict[str, Any]


def bucket_of(now: datetime, interval_s: int) -> int:
    """The start (epoch seconds) of the interval ``now`` falls in."""
    epoch = int(now.timestamp())
    return epoch - epoch % interval_s


def _series(
    metric: MetricName, ts: int, value: float, tags: Sequence[str], rtags: Mapping[str, str]
) -> Series:
    series: Series = {"metric": metric.value, "points": [[ts, value]], "tags": list(tags)}
    if rtags:
        series["resource_tags"] = dict(rtags)
    return series


def _extra(*pairs: tuple[str, object]) -> list[str]:
    return [t for k, v in pairs if (t := tag(k, v)) is not None]


# --- state gauges ------------------------------------------------------------------

_SERVICES = text(
    "SELECT s.name, s.cluster_arn, s.cluster_name, s.launch_type, s.desired_count,"
    " s.running_count, s.pending_count, coalesce(ct.tags, '{}'::jsonb) || coalesce(st.tags,"
    " '{}'::jsonb) AS tags"
    " FROM services s"
    " LEFT JOIN resource_tags st ON st.resource_arn = s.arn AND st.known"
    " LEFT JOIN resource_tags ct ON ct.resource_arn = s.cluster_arn AND ct.known"
    " WHERE s.status IS DISTINCT FROM 'INACTIVE' AND s.gone_at IS NULL"
)
_TASKS = text(
    "SELECT t.cluster_arn, t.cluster_name, t.service_name, t.family, t.revision,"
    " t.launch_type, t.last_status, count(*) AS n FROM tasks t"
    " WHERE t.last_status IS DISTINCT FROM 'STOPPED' AND t.gone_at IS NULL"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7"
)
_INSTANCES = text(
    "SELECT cluster_arn, cluster_name, status, agent_connected, count(*) AS n"
    " FROM container_instances WHERE gone_at IS NULL GROUP BY 1, 2, 3, 4"
)
_IN_PROGRESS = text(
    "SELECT account_id, region, cluster_arn, cluster_name, service_name, count(*) AS n"
    f" FROM deployments WHERE outcome = '{Outcome.IN_PROGRESS}' GROUP BY 1, 2, 3, 4, 5"
)
_OUTBOX = text(
    "SELECT kind, count(*) AS n, min(created_at) AS oldest FROM outbox"
    " WHERE status = 'pending' GROUP BY kind"
)
_DEAD = text("SELECT kind, count(*) AS n FROM outbox WHERE status = 'dead' GROUP BY kind")
_LEADERS = text(COUNT_LEADERS_SQL)
# Each watched scope: its heartbeat's age (the row "<account>/<region>" of
# service.state.heartbeats; NULL when none came yet) and whether a job's last round
# failed: its last error is newer than the older of its last successful reconcile
# and metrics poll (both jobs visit every scope each round; a job that never
# succeeded counts as failing once an error is recorded).
_SCOPES = text(
    "SELECT s.account_id, s.region,"
    " extract(epoch FROM CAST(:now AS timestamptz) - h.last_at) AS heartbeat_age,"
    " coalesce(s.last_error_at > least(coalesce(s.last_reconcile_at, '-infinity'),"
    "  coalesce(s.last_metrics_at, '-infinity')), false) AS failing"
    " FROM scopes s LEFT JOIN heartbeats h ON h.scope = s.account_id || '/' || s.region"
    " WHERE s.monitored ORDER BY s.account_id, s.region LIMIT :limit"
)
#: Scopes reported at most (a bound on the series of one interval).
MAX_SCOPES = 10_000
_LAG = text(
    "SELECT max(extract(epoch FROM received_at - time)) FROM raw_events"
    " WHERE received_at > :since AND time > :recent"
)


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One service row as the gauges need it."""

    name: str
    cluster_arn: str | None
    cluster_name: str | None
    launch_type: str | None
    desired: int | None
    running: int | None
    pending: int | None
    tags: Mapping[str, str]

    @property
    def context(self) -> EcsContext:
        return EcsContext(
            cluster_arn=self.cluster_arn,
            cluster_name=self.cluster_name,
            service_name=self.name,
            launch_type=self.launch_type,
        )


def service_gauges(
    services: Iterable[ServiceState],
    in_progress: Mapping[tuple[str | None, str | None], int],
    ts: int,
) -> list[Series]:
    """Desired, running and pending tasks, and deployments in progress, per service."""
    out: list[Series] = []
    for s in services:
        tags = ecs_tags(s.context)
        for metric, value in (
            (MetricName.SERVICE_DESIRED, s.desired),
            (MetricName.SERVICE_RUNNING, s.running),
            (MetricName.SERVICE_PENDING, s.pending),
        ):
            if value is not None:
                out.append(_series(metric, ts, float(value), tags, s.tags))
        count = in_progress.get((s.cluster_arn, s.name), 0)
        out.append(_series(MetricName.DEPLOYMENTS_IN_PROGRESS, ts, float(count), tags, s.tags))
    return out


def in_progress_by_service(
    services: Sequence[ServiceState], rows: Iterable[Any]
) -> dict[tuple[str | None, str | None], int]:
    """Deployments in progress per service, keyed by (cluster ARN, service name) (pure).

    Names are unique only within a scope: a deployment counts for the service of its
    cluster ARN; one that records names only (CodeDeploy's) counts for the one service
    of those names in the deployment's scope (``account_id``, ``region``; any scope
    where that is not known), and for none when several services match.
    """
    arns_by_names: dict[tuple[str | None, str | None], list[str | None]] = {}
    for s in services:
        arns_by_names.setdefault((s.cluster_name, s.name), []).append(s.cluster_arn)
    out: dict[tuple[str | None, str | None], int] = {}
    for row in rows:
        cluster_arn = row.cluster_arn
        if cluster_arn is None:
            candidates = arns_by_names.get((row.cluster_name, row.service_name), [])
            if row.account_id:
                candidates = [a for a in candidates if _scope(a) == (row.account_id, row.region)]
            if len(candidates) != 1:
                continue
            cluster_arn = candidates[0]
        key = (cluster_arn, row.service_name)
        out[key] = out.get(key, 0) + int(row.n)
    return out


def _scope(arn: str | None) -> tuple[str, str] | None:
    parsed = parse_arn(arn)
    return (parsed.account, parsed.region) if parsed is not None else None


async def collect_gauges(session: AsyncSession, *, now: datetime, interval_s: int) -> list[Series]:
    """Every state gauge, stamped with the start of ``now``'s interval."""
    ts = bucket_of(now, interval_s)
    services = [
        ServiceState(
            name=row.name,
            cluster_arn=row.cluster_arn,
            cluster_name=row.cluster_name,
            launch_type=row.launch_type,
            desired=row.desired_count,
            running=row.running_count,
            pending=row.pending_count,
            tags={str(k): str(v) for k, v in row.tags.items()},
        )
        for row in await session.execute(_SERVICES)
    ]
    # Names are unique only within a scope: a task's service is that of its cluster ARN.
    by_service = {(s.cluster_arn, s.name): s for s in services}
    in_progress = in_progress_by_service(services, await session.execute(_IN_PROGRESS))
    out = service_gauges(services, in_progress, ts)
    for row in await session.execute(_TASKS):
        known = by_service.get((row.cluster_arn, row.service_name))
        context = EcsContext(
            cluster_arn=row.cluster_arn,
            cluster_name=row.cluster_name,
            service_name=row.service_name,
            launch_type=row.launch_type,
            task_family=row.family,
            task_version=row.revision,
        )
        tags = ecs_tags(context) + _extra(("task_status", row.last_status or "unknown"))
        out.append(_series(MetricName.TASKS, ts, float(row.n), tags, known.tags if known else {}))
    for row in await session.execute(_INSTANCES):
        context = EcsContext(cluster_arn=row.cluster_arn, cluster_name=row.cluster_name)
        connected = "unknown" if row.agent_connected is None else str(row.agent_connected).lower()
        tags = ecs_tags(context) + _extra(
            ("status", row.status or "unknown"), ("agent_connected", connected)
        )
        out.append(_series(MetricName.CONTAINER_INSTANCES, ts, float(row.n), tags, {}))
    out.extend(await _self_gauges(session, now=now, ts=ts, interval_s=interval_s))
    return out


async def _self_gauges(
    session: AsyncSession, *, now: datetime, ts: int, interval_s: int
) -> list[Series]:
    out: list[Series] = []
    oldest: datetime | None = None
    depth = {kind.value: 0 for kind in OutboxKind}
    for row in await session.execute(_OUTBOX):
        depth[row.kind] = int(row.n)
        oldest = row.oldest if oldest is None or row.oldest < oldest else oldest
    for kind, n in sorted(depth.items()):
        out.append(
            _series(MetricName.SELF_OUTBOX_PENDING, ts, float(n), _extra(("outbox_kind", kind)), {})
        )
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    out.append(_series(MetricName.SELF_OUTBOX_OLDEST_AGE, ts, age, [], {}))
    dead = {kind.value: 0 for kind in OutboxKind}
    for row in await session.execute(_DEAD):
        dead[row.kind] = int(row.n)
    for kind, n in sorted(dead.items()):
        out.append(
            _series(MetricName.SELF_OUTBOX_DEAD, ts, float(n), _extra(("outbox_kind", kind)), {})
        )
    # No heartbeat ever recorded: no point, so the monitor's no-data alert speaks.
    heartbeat = await heartbeat_age_s(session, now=now)
    if heartbeat is not None:
        out.append(_series(MetricName.SELF_HEARTBEAT_AGE, ts, heartbeat, [], {}))
    out.extend(await scope_gauges(session, now=now, ts=ts))
    leaders = (await session.execute(_LEADERS)).scalar()
    out.append(_series(MetricName.SELF_POLLER_LEADERS, ts, float(leaders or 0), [], {}))
    since = now - timedelta(seconds=interval_s)
    lag = (
        await session.execute(_LAG, {"since": since, "recent": now - timedelta(hours=1)})
    ).scalar()
    out.append(_series(MetricName.SELF_EVENT_LAG, ts, float(lag or 0.0), [], {}))
    return out


async def scope_gauges(session: AsyncSession, *, now: datetime, ts: int) -> list[Series]:
    """Per watched scope, tagged ``aws_account`` and ``region``: its heartbeat's age
    (no point before its first heartbeat) and 1 or 0 for a failing last round."""
    out: list[Series] = []
    rows = await session.execute(_SCOPES, {"now": now, "limit": MAX_SCOPES})
    for row in rows:
        tags = _extra(("aws_account", row.account_id), ("region", row.region))
        if row.heartbeat_age is not None:
            age = max(0.0, float(row.heartbeat_age))
            out.append(_series(MetricName.SELF_SCOPE_HEARTBEAT_AGE, ts, age, tags, {}))
        out.append(_series(MetricName.SELF_SCOPE_ERROR, ts, float(row.failing), tags, {}))
    return out


# --- CloudWatch points ----------------------------------------------------------------

_CURSOR = "metric_points"
_LOCK_CURSOR = text(
    "INSERT INTO datadog_cursors (name, position) VALUES (:name, 0)"
    " ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position"
)
_MOVE_CURSOR = text(
    "UPDATE datadog_cursors SET position = :position, updated_at = now() WHERE name = :name"
)
# A point's cluster and service are those of its own scope (the ARN's region is its
# 4th part, the account its 5th): names are unique only within an account and region.
# Points stored before their scope was recorded ('') match by name alone.
_IN_POINT_SCOPE = (
    "(p.account_id = '' OR (split_part(arn, ':', 5) = p.account_id"
    " AND split_part(arn, ':', 4) = p.region))"
)
_POINTS = text(
    "SELECT p.id, p.namespace, p.name, p.statistic, p.cluster_name, p.service_name,"
    " p.account_id, p.region,"
    " p.dimensions, p.timestamp, p.value, c.arn AS cluster_arn, s.launch_type,"
    " coalesce(ct.tags, '{}'::jsonb) || coalesce(st.tags, '{}'::jsonb) AS tags"
    " FROM (SELECT * FROM metric_points WHERE id > :position ORDER BY id LIMIT :limit) p"
    " LEFT JOIN LATERAL (SELECT arn FROM clusters WHERE name = p.cluster_name"
    f"   AND {_IN_POINT_SCOPE} ORDER BY arn LIMIT 1) c ON true"
    " LEFT JOIN LATERAL (SELECT arn, launch_type FROM services"
    "   WHERE cluster_name = p.cluster_name AND name = p.service_name"
    f"   AND {_IN_POINT_SCOPE} ORDER BY arn LIMIT 1) s ON true"
    " LEFT JOIN resource_tags st ON st.resource_arn = s.arn AND st.known"
    " LEFT JOIN resource_tags ct ON ct.resource_arn = c.arn AND ct.known"
    " ORDER BY p.id"
)


def _dimension_suffix(value: object) -> str | None:
    """``targetgroup/web/123`` of ``TargetGroup``, ``app/lb/456`` of ``LoadBalancer``."""
    return str(value) if value else None


@dataclass(slots=True)
class PointSeries:
    """Series built from metric_points rows, and what could not be forwarded."""

    series: list[Series]
    dropped: Counter[str]


def point_series(rows: Iterable[Mapping[str, Any]], *, now: datetime) -> PointSeries:
    """Series of stored CloudWatch points, grouped by metric and tags (pure).

    A point of a metric outside the registry is dropped (``unregistered``); one
    older than Datadog accepts is dropped (``too_old``).
    """
    cutoff = now.timestamp() - MAX_POINT_AGE_S
    dropped: Counter[str] = Counter()
    grouped: dict[tuple[str, tuple[str, ...]], Series] = {}
    for row in rows:
        dims = row.get("dimensions") or {}
        metric = cloudwatch_name(row["namespace"], row["name"], dims)
        if metric is None:
            dropped["unregistered"] += 1
            continue
        ts = int(row["timestamp"].timestamp())
        if ts < cutoff:
            dropped["too_old"] += 1
            continue
        context = EcsContext(
            cluster_arn=row.get("cluster_arn"),
            cluster_name=row.get("cluster_name"),
            service_name=row.get("service_name"),
            launch_type=row.get("launch_type"),
            region=row.get("region") or None,
            account=row.get("account_id") or None,
        )
        tags = ecs_tags(context) + _extra(
            ("statistic", str(row["statistic"]).lower()),
            ("targetgroup", _dimension_suffix(dims.get("TargetGroup"))),
            ("loadbalancer", _dimension_suffix(dims.get("LoadBalancer"))),
        )
        key = (metric.value, tuple(tags))
        series = grouped.get(key)
        if series is None:
            series = _series(metric, ts, float(row["value"]), tags, row.get("tags") or {})
            grouped[key] = series
        else:
            series["points"].append([ts, float(row["value"])])
    for series in grouped.values():
        series["points"].sort()
    return PointSeries(list(grouped.values()), dropped)


async def forward_points(
    sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime, limit: int = POINTS_PER_ROW
) -> int:
    """Move new metric_points into outbox rows, ``limit`` a row; the points read."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            position = (await session.execute(_LOCK_CURSOR, {"name": _CURSOR})).scalar_one()
            rows = (
                (await session.execute(_POINTS, {"position": position, "limit": limit}))
                .mappings()
                .all()
            )
            if not rows:
                return total
            built = point_series([dict(r) for r in rows], now=now)
            first, last = rows[0]["id"], rows[-1]["id"]
            if built.series:
                await _insert_row(
                    session,
                    f"dd:points:{first}-{last}",
                    {"series": built.series, "source": "cloudwatch"},
                )
            await session.execute(_MOVE_CURSOR, {"name": _CURSOR, "position": last})
        for reason, n in built.dropped.items():
            telemetry.DATADOG_POINTS.labels("dropped").inc(n)
            telemetry.DATADOG_DROPPED.labels("points", reason).inc(n)
            log.info("datadog_points_not_forwarded", reason=reason, points=n)
        total += len(rows)
        if len(rows) < limit:
            return total


async def _insert_row(session: AsyncSession, dedupe_key: str, payload: dict[str, Any]) -> None:
    stmt = (
        pg_insert(OutboxItem)
        .values(
            kind=OutboxKind.DATADOG_METRICS.value,
            dedupe_key=dedupe_key,
            payload=orjson.loads(orjson.dumps(payload)),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    await session.execute(stmt)


# --- facts only time reveals ------------------------------------------------------------

_DISCONNECTED = text(
    "SELECT arn, cluster_arn, cluster_name, updated_at, ec2_instance_id"
    " FROM container_instances WHERE agent_connected = false AND status = 'ACTIVE'"
    " AND coalesce(updated_at, seen_at) < :before"
)
_RECONNECTED = text(
    "DELETE FROM datadog_facts f USING container_instances c"
    " WHERE c.agent_connected AND f.key = 'ci:' || c.arn || ':' || 'disconnected'"
)
_NEW_ALERTS = text(
    "SELECT a.id, a.type, a.cluster_name, a.service_name, a.created_at,"
    " a.payload->>'account_id' AS account_id, a.payload->>'region' AS region FROM alerts a"
    " WHERE a.created_at > :since AND NOT EXISTS"
    " (SELECT 1 FROM datadog_facts f WHERE f.key = 'alert:' || a.id)"
)


def disconnected_fact(row: Mapping[str, Any], now: datetime) -> Fact:
    """The fact and event of a container instance disconnected beyond the grace period."""
    arn = str(row["arn"])
    # The instance's own ARN names the scope when its cluster's is missing.
    scope = arn_parts(arn)
    context = EcsContext(
        cluster_arn=row.get("cluster_arn"),
        cluster_name=row.get("cluster_name"),
        account=scope.account,
        region=scope.region,
    )
    since = row.get("updated_at")
    text_lines = [
        f"cluster: {row.get('cluster_name')}",
        f"agent disconnected since: {since.isoformat() if since else 'unknown'}",
        f"EC2 instance: {row.get('ec2_instance_id')}",
        f"container instance: {arn}",
    ]
    spec = EventSpec(
        title=f"ECS container instance disconnected: {row.get('cluster_name')}",
        text="\n".join(text_lines),
        alert_type="error",
        aggregation_key=f"container_instance:{arn}"[:100],
        at=now,
    )
    return Fact(f"ci:{arn}:disconnected", context, (), spec)


def alert_fact(row: Mapping[str, Any], now: datetime) -> Fact:
    """An alert counted once, by type."""
    context = EcsContext(
        cluster_name=row.get("cluster_name"),
        service_name=row.get("service_name"),
        account=row.get("account_id") or None,
        region=row.get("region") or None,
    )
    at = row.get("created_at") or now
    contribution = Contribution(MetricName.ALERTS, 1, min(at, now), (f"alert_type:{row['type']}",))
    return Fact(f"alert:{row['id']}", context, (contribution,))


async def record_time_facts(session: AsyncSession, *, now: datetime) -> int:
    """Disconnected instances and new alerts; the number of new facts recorded."""
    await session.execute(_RECONNECTED)
    derived = Derived()
    rows = await session.execute(_DISCONNECTED, {"before": now - DISCONNECTED_GRACE})
    derived.facts.extend(disconnected_fact(dict(r), now) for r in rows.mappings())
    since = now - timedelta(days=1)
    alerts = (await session.execute(_NEW_ALERTS, {"since": since})).mappings().all()
    derived.facts.extend(alert_fact(dict(r), now) for r in alerts)
    new = await record_facts(session, derived, now=now)
    return len(new)


# --- the job --------------------------------------------------------------------------------


# New metric_points are looked for this often (at most), whatever the interval: a
# point stored by the poller leaves within this much, not a whole interval later.
POINTS_EVERY_S = 5.0


class DatadogJob:
    """One run of everything above; :meth:`run` repeats it every interval."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval_s: int = 60,
        points_every_s: float = POINTS_EVERY_S,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval_s = interval_s
        self._points_every_s = min(points_every_s, float(interval_s))
        self._throttles: dict[str, float] = {}

    async def run_once(self, *, now: datetime | None = None) -> None:
        """Gauges, points and time facts, each in its own transaction."""
        now = now or datetime.now(UTC)
        async with self._sessionmaker() as session, session.begin():
            series = await collect_gauges(session, now=now, interval_s=self._interval_s)
            series.extend(self._throttle_counts(bucket_of(now, self._interval_s)))
            bucket = bucket_of(now, self._interval_s)
            await _insert_row(
                session, f"dd:gauges:{bucket}", {"series": series, "source": "gauges"}
            )
        await forward_points(self._sessionmaker, now=now)
        async with self._sessionmaker() as session, session.begin():
            await record_time_facts(session, now=now)

    def _throttle_counts(self, ts: int) -> list[Series]:
        """AWS throttles of this process since the last run, by operation."""
        out: list[Series] = []
        for metric in telemetry.AWS_THROTTLES.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                operation = sample.labels.get("operation", "unknown")
                delta = sample.value - self._throttles.get(operation, 0.0)
                self._throttles[operation] = sample.value
                if delta > 0:
                    out.append(
                        _series(
                            MetricName.SELF_AWS_THROTTLES,
                            ts,
                            delta,
                            _extra(("operation", operation)),
                            {},
                        )
                    )
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: everything once an interval, new points every few seconds.

        A failed run is logged and tried again at the next tick.
        """
        log.info("datadog_job_started", interval_s=self._interval_s)
        done_bucket: int | None = None
        while not stop.is_set():
            now = datetime.now(UTC)
            try:
                if bucket_of(now, self._interval_s) != done_bucket:
                    await self.run_once(now=now)
                    done_bucket = bucket_of(now, self._interval_s)
                else:
                    await forward_points(self._sessionmaker, now=now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("datadog_job_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._points_every_s)
        log.info("datadog_job_stopped")
