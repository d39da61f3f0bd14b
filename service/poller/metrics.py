"""CloudWatch metrics: discovery, a pure GetMetricData plan, fetch, idempotent store.

* **Discovery** (database + ELBv2): watched clusters and services, the Container
  Insights setting, the target groups of every service behind a load balancer
  (both colours of a blue/green pair: ECS native ``alternateTargetGroupArn`` and
  CodeDeploy's target group pair), and each target group's load balancer
  (DescribeTargetGroups, batched and cached).
* **Plan** (:func:`plan_queries`, pure): one query per metric, statistic and
  dimension set, in batches of 500 (GetMetricData's limit), over one window
  aligned to the period that reaches back far enough for CloudWatch's late points.
* **Fetch**: one GetMetricData call per batch (more only when CloudWatch pages).
* **Store**: ``INSERT … ON CONFLICT … DO UPDATE``: re-reading a minute updates
  its point, never duplicates it. Each point carries the cluster and service.

GetMetricData and DescribeTargetGroups are regional: a round polls every watched
scope (account, region) with its own clients, for the clusters and services whose
ARNs are in that scope (:class:`~service.poller.scopes.ScopeRounds`: bounded
concurrency, a failing scope isolated and backing off). CodeDeploy's target group
pairs are looked up in the home scope only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.cloudwatch import QUERIES_PER_CALL
from service.aws.elbv2 import DESCRIBE_TARGET_GROUPS_LIMIT, Elbv2Api
from service.aws.scopes import AwsScopes, Scope
from service.logging import get_logger
from service.poller.codedeploy import CodeDeployMapper
from service.poller.scopes import ScopeRounds
from service.state.bulk import bulk_insert, execute, payload
from service.state.models import MetricPoint

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch.type_defs import MetricDataQueryTypeDef

log = get_logger(__name__)

ECS = "AWS/ECS"
INSIGHTS = "ECS/ContainerInsights"
ALB = "AWS/ApplicationELB"

#: (metric, statistic, unit) per namespace and level. Every metric here has a registry
#: name (``service.datadog.metrics.CLOUDWATCH_NAMES``), and every CloudWatch name in
#: the registry is queried here: a test holds the two together.
ECS_METRICS: tuple[tuple[str, str, str], ...] = (
    ("CPUUtilization", "Average", "Percent"),
    ("CPUUtilization", "Maximum", "Percent"),
    ("MemoryUtilization", "Average", "Percent"),
    ("MemoryUtilization", "Maximum", "Percent"),
)
INSIGHTS_METRICS: tuple[tuple[str, str, str], ...] = (
    ("CpuUtilized", "Average", "None"),
    ("CpuReserved", "Average", "None"),
    ("MemoryUtilized", "Average", "Megabytes"),
    ("MemoryReserved", "Average", "Megabytes"),
    ("RunningTaskCount", "Average", "Count"),
    ("PendingTaskCount", "Average", "Count"),
    ("DesiredTaskCount", "Average", "Count"),
    ("NetworkRxBytes", "Average", "Bytes/Second"),
    ("NetworkTxBytes", "Average", "Bytes/Second"),
    ("StorageReadBytes", "Average", "Bytes"),
    ("StorageWriteBytes", "Average", "Bytes"),
)
ALB_METRICS: tuple[tuple[str, str, str], ...] = (
    ("HealthyHostCount", "Minimum", "Count"),
    ("HealthyHostCount", "Maximum", "Count"),
    ("UnHealthyHostCount", "Minimum", "Count"),
    ("UnHealthyHostCount", "Maximum", "Count"),
    ("HTTPCode_Target_5XX_Count", "Sum", "Count"),
    ("RequestCount", "Sum", "Count"),
    ("TargetResponseTime", "Average", "Seconds"),
)

PERIOD_S = 60
#: CloudWatch may publish a minute's point a few minutes late: re-read this many periods.
LOOKBACK_PERIODS = 5


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    name: str
    container_insights: bool = False


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    cluster: str
    name: str
    container_insights: bool = False


@dataclass(frozen=True, slots=True)
class TargetGroupTarget:
    """One target group behind one load balancer, serving one service."""

    cluster: str
    service: str
    target_group: str  # dimension value: targetgroup/<name>/<id>
    load_balancer: str  # dimension value: app/<name>/<id>


@dataclass(frozen=True, slots=True)
class Query:
    """One planned metric query and what its points belong to."""

    id: str
    namespace: str
    name: str
    statistic: str
    unit: str
    dimensions: tuple[tuple[str, str], ...]
    cluster: str | None
    service: str | None

    def as_cloudwatch(self) -> MetricDataQueryTypeDef:
        return {
            "Id": self.id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
                },
                "Period": PERIOD_S,
                "Stat": self.statistic,
            },
            "ReturnData": True,
        }


def window(
    now: datetime, *, period_s: int = PERIOD_S, lookback: int = LOOKBACK_PERIODS
) -> tuple[datetime, datetime]:
    """[start, end) aligned to the period: the last ``lookback`` complete periods."""
    epoch = int(now.timestamp()) // period_s * period_s
    end = datetime.fromtimestamp(epoch, UTC)
    return end - timedelta(seconds=period_s * lookback), end


def plan_queries(
    clusters: Iterable[ClusterTarget],
    services: Iterable[ServiceTarget],
    target_groups: Iterable[TargetGroupTarget],
) -> list[list[Query]]:
    """Every query, in batches of at most 500 (pure; ids are unique within a batch)."""
    specs: list[tuple[str, str, str, str, tuple[tuple[str, str], ...], str | None, str | None]] = []
    dims: tuple[tuple[str, str], ...]
    for c in sorted(set(clusters), key=lambda x: x.name):
        dims = (("ClusterName", c.name),)
        specs += [(ECS, m, s, u, dims, c.name, None) for m, s, u in ECS_METRICS]
    for svc in sorted(set(services), key=lambda x: (x.cluster, x.name)):
        dims = (("ClusterName", svc.cluster), ("ServiceName", svc.name))
        specs += [(ECS, m, s, u, dims, svc.cluster, svc.name) for m, s, u in ECS_METRICS]
        if svc.container_insights:
            specs += [
                (INSIGHTS, m, s, u, dims, svc.cluster, svc.name) for m, s, u in INSIGHTS_METRICS
            ]
    seen: set[tuple[str, str]] = set()
    for tg in sorted(set(target_groups), key=lambda x: (x.target_group, x.load_balancer)):
        if (tg.target_group, tg.load_balancer) in seen:
            continue  # one target group serves one service's metrics once
        seen.add((tg.target_group, tg.load_balancer))
        dims = (("LoadBalancer", tg.load_balancer), ("TargetGroup", tg.target_group))
        specs += [(ALB, m, s, u, dims, tg.cluster, tg.service) for m, s, u in ALB_METRICS]
    batches: list[list[Query]] = []
    for start in range(0, len(specs), QUERIES_PER_CALL):
        chunk = specs[start : start + QUERIES_PER_CALL]
        batches.append([Query(f"q{i}", *spec) for i, spec in enumerate(chunk)])
    return batches


def dimensions_key(dimensions: Sequence[tuple[str, str]]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(dimensions))


def point_rows(
    batch: Sequence[Query], results: Iterable[Any], scope: Scope
) -> list[dict[str, Any]]:
    """GetMetricData results of ``batch``, read in ``scope``, as ``metric_points`` rows
    (pure). The scope is part of each point's identity: dimensions hold names."""
    by_id = {q.id: q for q in batch}
    rows: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for result in results:
        query = by_id.get(result.get("Id", ""))
        if query is None:
            continue
        for stamp, value in zip(
            result.get("Timestamps", []), result.get("Values", []), strict=False
        ):
            key_dims = dimensions_key(query.dimensions)
            at = stamp.astimezone(UTC)
            rows[(query.namespace, query.name, query.statistic, key_dims, at.isoformat())] = {
                "account_id": scope.account,
                "region": scope.region,
                "namespace": query.namespace,
                "name": query.name,
                "statistic": query.statistic,
                "unit": query.unit,
                "cluster_name": query.cluster,
                "service_name": query.service,
                "dimensions": dict(query.dimensions),
                "dimensions_key": key_dims,
                "timestamp": at,
                "value": float(value),
            }
    return list(rows.values())


_COLUMNS = (
    "account_id",
    "region",
    "namespace",
    "name",
    "statistic",
    "unit",
    "cluster_name",
    "service_name",
    "dimensions",
    "dimensions_key",
    "timestamp",
    "value",
)
_UPSERT_POINTS = (
    bulk_insert(MetricPoint, _COLUMNS, order_by=None)
    + " ON CONFLICT (account_id, region, namespace, name, statistic, dimensions_key, timestamp)"
    " DO UPDATE SET"
    " value = excluded.value, unit = excluded.unit, cluster_name = excluded.cluster_name,"
    " service_name = excluded.service_name"
    " WHERE (metric_points.value, metric_points.cluster_name, metric_points.service_name)"
    " IS DISTINCT FROM (excluded.value, excluded.cluster_name, excluded.service_name)"
)


async def store_points(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 1000):
        chunk = sorted(
            rows[start : start + 1000],
            key=lambda r: (
                r["account_id"],
                r["region"],
                r["namespace"],
                r["name"],
                r["statistic"],
                r["dimensions_key"],
                r["timestamp"],
            ),
        )
        await execute(session, _UPSERT_POINTS, payload(chunk))


def _suffix_after(arn: str, marker: str) -> str | None:
    _, sep, rest = arn.partition(marker)
    return rest if sep and rest else None


def load_balancer_dimension(load_balancer_arn: str) -> str | None:
    """``app/<name>/<id>`` of an ALB ARN (None for network and gateway load balancers)."""
    value = _suffix_after(load_balancer_arn, ":loadbalancer/")
    return value if value is not None and value.startswith("app/") else None


def target_group_dimension(target_group_arn: str) -> str | None:
    """``targetgroup/<name>/<id>`` of a target group ARN."""
    value = target_group_arn.rpartition(":")[2]
    return value if value.startswith("targetgroup/") else None


_CLUSTERS = text(
    "SELECT name, coalesce(container_insights, 'disabled') FROM clusters"
    " WHERE gone_at IS NULL AND coalesce(status, 'ACTIVE') = 'ACTIVE'"
    " AND split_part(arn, ':', 4) = :region AND split_part(arn, ':', 5) = :account"
)
_SERVICES = text(
    "SELECT s.cluster_name, s.name, s.load_balancers, coalesce(c.container_insights, 'disabled')"
    " FROM services AS s LEFT JOIN clusters AS c ON c.arn = s.cluster_arn"
    " WHERE s.gone_at IS NULL AND s.cluster_name IS NOT NULL"
    " AND coalesce(s.status, 'ACTIVE') <> 'INACTIVE'"
    " AND split_part(s.arn, ':', 4) = :region AND split_part(s.arn, ':', 5) = :account"
)


def _insights_on(value: str) -> bool:
    return value.lower() in ("enabled", "enhanced")


class MetricsPoller:
    """Discovery, plan, fetch, store; :meth:`poll` is the leader's metrics job."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        scopes: AwsScopes,
        codedeploy: CodeDeployMapper,
        *,
        clusters: Sequence[str] = (),
        target_group_ttl_s: float = 600.0,
        interval_s: float = 60.0,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._scopes = scopes
        self.rounds = ScopeRounds(
            sessionmaker, "metrics", interval_s=interval_s, concurrency=concurrency
        )
        self._codedeploy = codedeploy
        self._watched = set(clusters)
        self._tg_ttl = target_group_ttl_s
        self._clock = clock
        # target group ARN -> (when asked, its ALB dimensions); names -> ARN for CodeDeploy.
        self._tg_cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._tg_by_name: dict[tuple[Scope, str], tuple[float, str | None]] = {}
        self.calls = 0

    async def discover(
        self, scope: Scope | None = None
    ) -> tuple[list[ClusterTarget], list[ServiceTarget], list[TargetGroupTarget]]:
        """What to poll in ``scope`` (by default the home scope)."""
        scope = scope or self._scopes.home
        apis = await self._scopes.apis(scope)
        if apis is None:
            raise LookupError(f"scope {scope} is not watched")
        where = {"account": scope.account, "region": scope.region}
        async with self._sessionmaker() as session:
            cluster_rows = list(await session.execute(_CLUSTERS, where))
            service_rows = list(await session.execute(_SERVICES, where))
        clusters = [
            ClusterTarget(name, _insights_on(ci))
            for name, ci in cluster_rows
            if not self._watched or name in self._watched
        ]
        services: list[ServiceTarget] = []
        wanted: dict[str, set[tuple[str, str]]] = {}  # target group ARN -> {(cluster, service)}
        for cluster, name, load_balancers, ci in service_rows:
            if self._watched and cluster not in self._watched:
                continue
            services.append(ServiceTarget(cluster, name, _insights_on(ci)))
            for lb in load_balancers or []:
                for key in ("target_group_arn", "alternate_target_group_arn"):
                    arn = lb.get(key)
                    if isinstance(arn, str) and arn:
                        wanted.setdefault(arn, set()).add((cluster, name))
        # CodeDeploy blue/green: both target groups of each deployment group's pair.
        for target in self._codedeploy.targets.values():
            if scope != self._scopes.home:
                break
            if target.service is None or not target.target_group_names:
                continue
            for arn in await self._arns_of_names(apis.elbv2, scope, target.target_group_names):
                wanted.setdefault(arn, set()).add((target.service.cluster, target.service.service))
        dims = await self._load_balancers_of(apis.elbv2, sorted(wanted))
        target_groups = [
            TargetGroupTarget(cluster, service, tg_dim, lb_dim)
            for arn, owners in wanted.items()
            if (tg_dim := target_group_dimension(arn)) is not None
            for lb_dim in dims.get(arn, ())
            for cluster, service in sorted(owners)
        ]
        return clusters, services, target_groups

    async def _load_balancers_of(
        self, elbv2: Elbv2Api, arns: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        now = self._clock()
        stale = [
            a for a in arns if a not in self._tg_cache or now - self._tg_cache[a][0] >= self._tg_ttl
        ]
        for start in range(0, len(stale), DESCRIBE_TARGET_GROUPS_LIMIT):
            chunk = stale[start : start + DESCRIBE_TARGET_GROUPS_LIMIT]
            groups = await elbv2.describe_target_groups(arns=chunk)
            found = {g.get("TargetGroupArn", ""): g for g in groups}
            for arn in chunk:
                lbs = found.get(arn, {}).get("LoadBalancerArns", [])
                dims = tuple(d for lb in lbs if (d := load_balancer_dimension(lb)) is not None)
                self._tg_cache[arn] = (now, dims)
        return {a: self._tg_cache[a][1] for a in arns if a in self._tg_cache}

    async def _arns_of_names(
        self, elbv2: Elbv2Api, scope: Scope, names: Sequence[str]
    ) -> list[str]:
        now = self._clock()
        stale = [
            n
            for n in names
            if (scope, n) not in self._tg_by_name
            or now - self._tg_by_name[scope, n][0] >= self._tg_ttl
        ]
        for start in range(0, len(stale), DESCRIBE_TARGET_GROUPS_LIMIT):
            chunk = stale[start : start + DESCRIBE_TARGET_GROUPS_LIMIT]
            groups = await elbv2.describe_target_groups(names=chunk)
            by_name = {g.get("TargetGroupName", ""): g for g in groups}
            for name in chunk:
                group = by_name.get(name)
                arn = group.get("TargetGroupArn") if group else None
                self._tg_by_name[scope, name] = (now, arn)
                if group is not None and arn:
                    lbs = group.get("LoadBalancerArns", [])
                    dims = tuple(d for lb in lbs if (d := load_balancer_dimension(lb)) is not None)
                    self._tg_cache[arn] = (now, dims)
        return [arn for n in names if (arn := self._tg_by_name.get((scope, n), (0.0, None))[1])]

    async def poll(self, now: datetime | None = None) -> int:
        """One metrics round over every watched scope; returns the points stored."""
        now = now or datetime.now(UTC)
        done = await self.rounds.run(self._scopes.scopes, lambda scope: self.poll_scope(scope, now))
        if done:
            telemetry.LAST_POLL.set(datetime.now(UTC).timestamp())
        return sum(done.values())

    async def poll_scope(self, scope: Scope, now: datetime) -> int:
        """Discover, plan, fetch and store the points of one scope."""
        apis = await self._scopes.apis(scope)
        if apis is None:
            raise LookupError(f"scope {scope} is not watched")
        clusters, services, target_groups = await self.discover(scope)
        batches = plan_queries(clusters, services, target_groups)
        start, end = window(now)
        stored = 0
        for batch in batches:
            results = await apis.cloudwatch.get_metric_data(
                [q.as_cloudwatch() for q in batch], start, end
            )
            self.calls += 1
            rows = point_rows(batch, results, scope)
            if rows:
                async with self._sessionmaker() as session, session.begin():
                    await store_points(session, rows)
                for namespace in {r["namespace"] for r in rows}:
                    telemetry.METRIC_POINTS_STORED.labels(namespace).inc(
                        sum(1 for r in rows if r["namespace"] == namespace)
                    )
            stored += len(rows)
        log.info(
            "metrics_polled",
            scope=str(scope),
            queries=sum(len(b) for b in batches),
            calls=len(batches),
            points=stored,
        )
        return stored
