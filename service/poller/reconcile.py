"""Reconciliation: List* then Describe* in full batches, repairing drift.

For every cluster (or those in ``ECSWATCH_CLUSTERS``): describe the clusters,
then per cluster list and describe its services, tasks and container
instances. Everything is written through the same guarded upserts as events
(:mod:`service.enrich.writes`), so a reconcile never overwrites a newer event.
What ecswatch holds as live but ECS no longer lists is described once more;
what ECS no longer describes either is marked gone (``gone_at``), never deleted.
Rows a reconcile changed are counted as drift in ``/metrics``.

A round reconciles every watched scope (account, region) with that scope's
clients (:class:`~service.poller.scopes.ScopeRounds`: bounded concurrency, a
failing scope isolated and backing off). A scope's reconcile doubts, describes
and marks gone only rows whose ARN is in that scope: a cluster called ``prod`` in
another account or region, or in an account ecswatch does not watch, is never
touched by it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.apis import AwsApis
from service.aws.scopes import AwsScopes, Scope, scope_of_arn
from service.enrich.describer import Describer, Kind, Lookup, State, scope_key
from service.logging import get_logger
from service.poller.scopes import ScopeRounds

log = get_logger(__name__)

# Live rows of a cluster that a reconcile expects ECS to list; written before
# ``:started`` (the reconcile's start), so an event that arrived meanwhile is not doubted.
# Only rows of the cluster's own scope: the ARN's region (4th part) and account (5th).
_OF_CLUSTER = (
    "(cluster_arn = :arn OR (cluster_arn IS NULL AND cluster_name = :name))"
    " AND split_part(arn, ':', 4) = :region AND split_part(arn, ':', 5) = :account"
)
_LIVE = {
    Kind.TASKS: f"SELECT arn FROM tasks WHERE {_OF_CLUSTER}"
    " AND gone_at IS NULL AND coalesce(last_status, '') <> 'STOPPED' AND seen_at < :started",
    Kind.CONTAINER_INSTANCES: f"SELECT arn FROM container_instances WHERE {_OF_CLUSTER}"
    " AND gone_at IS NULL AND coalesce(status, '') <> 'INACTIVE' AND seen_at < :started",
    Kind.SERVICES: f"SELECT arn FROM services WHERE {_OF_CLUSTER}"
    " AND gone_at IS NULL AND coalesce(status, '') <> 'INACTIVE' AND updated_at < :started",
}


def cluster_arn_in(scope: Scope, cluster: str) -> str | None:
    """``cluster`` (a name or an ARN) as the ARN of a cluster of ``scope``; None for an
    ARN of another scope."""
    if cluster.startswith("arn:"):
        return cluster if scope_of_arn(cluster) == scope else None
    return f"{scope_key(scope)}cluster/{cluster}"


@dataclass
class ReconcileReport:
    """What one reconcile did: resources described, and rows changed (drift) per kind."""

    described: Counter[str] = field(default_factory=Counter)
    drift: Counter[str] = field(default_factory=Counter)
    gone: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, lookups: dict[str, Lookup]) -> None:
        for lookup in lookups.values():
            if lookup.state is State.FOUND:
                self.described[kind] += 1
            if lookup.changed:
                self.drift[kind] += 1
                if lookup.state is State.MISSING:
                    self.gone[kind] += 1

    def merge(self, other: ReconcileReport) -> None:
        self.described.update(other.described)
        self.drift.update(other.drift)
        self.gone.update(other.gone)


class Reconciler:
    """Lists and describes ECS resources; see the module docstring."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        scopes: AwsScopes,
        describer: Describer,
        *,
        clusters: Sequence[str] = (),
        interval_s: float = 600.0,
        concurrency: int = 4,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.scopes = scopes
        self._describer = describer
        self._clusters = tuple(clusters)
        self.rounds = ScopeRounds(
            sessionmaker, "reconcile", interval_s=interval_s, concurrency=concurrency
        )

    async def reconcile_all(self, now: datetime | None = None) -> ReconcileReport:
        """Reconcile every watched cluster of every scope; ``now`` is the round's start."""
        started = now or datetime.now(UTC)
        report = ReconcileReport()
        done = await self.rounds.run(
            self.scopes.scopes, lambda scope: self.reconcile_scope(scope, started)
        )
        for scope_report in done.values():
            report.merge(scope_report)
        self._count(report)
        if done:
            telemetry.LAST_RECONCILE.set(datetime.now(UTC).timestamp())
        log.info(
            "reconciled",
            scopes=len(done),
            failing=len(self.rounds.errors),
            described=sum(report.described.values()),
            drift=dict(report.drift),
        )
        return report

    async def reconcile_scope(self, scope: Scope, started: datetime) -> ReconcileReport:
        """Reconcile the watched clusters of one scope (raises what its calls raise)."""
        apis = await self.scopes.apis(scope)
        if apis is None:
            raise LookupError(f"scope {scope} is not watched")
        report = ReconcileReport()
        if self._clusters:
            names = [a for c in self._clusters if (a := cluster_arn_in(scope, c)) is not None]
        else:
            names = await apis.ecs.list_clusters()
        lookups: dict[str, Lookup] = {}
        if names:
            lookups = await self._describer.describe(Kind.CLUSTERS, "", names)
            report.add(Kind.CLUSTERS, lookups)
        for cluster in names:
            if lookups.get(cluster, Lookup(State.FOUND)).state is State.MISSING:
                continue
            await self._reconcile_cluster(apis, scope, cluster, started, report)
        log.info("reconciled_scope", scope=str(scope), clusters=len(names))
        return report

    async def reconcile_one(self, cluster: str, service: str | None = None) -> ReconcileReport:
        """Reconcile one cluster, or one service of it (an event named it first), in the
        scope of its ARN (a bare name: the home scope)."""
        started = datetime.now(UTC)
        report = ReconcileReport()
        scope = scope_of_arn(cluster) or scope_of_arn(service) or self.scopes.home
        apis = None if scope is None else await self.scopes.apis(scope)
        if scope is None or apis is None:
            return report  # not a watched scope: nothing is described there
        cluster_arn = cluster_arn_in(scope, cluster)
        if cluster_arn is None:
            return report
        if service is None:
            report.add(
                Kind.CLUSTERS, await self._describer.describe(Kind.CLUSTERS, "", [cluster_arn])
            )
            await self._reconcile_cluster(apis, scope, cluster_arn, started, report)
        else:
            lookups = await self._describer.describe(Kind.SERVICES, cluster_arn, [service])
            report.add(Kind.SERVICES, lookups)
            name = service.rpartition("/")[2]
            tasks = await apis.ecs.list_tasks(cluster_arn, service_name=name)
            report.add(Kind.TASKS, await self._describer.describe(Kind.TASKS, cluster_arn, tasks))
        self._count(report)
        log.info("reconciled_one", cluster=cluster, service=service, drift=dict(report.drift))
        return report

    async def _reconcile_cluster(
        self, apis: AwsApis, scope: Scope, cluster: str, started: datetime, report: ReconcileReport
    ) -> None:
        # Each kind lists, doubts and describes on its own, the three at once: a listing
        # that is throttled (and waits out its backoff) holds back only its own kind.
        ecs = apis.ecs

        async def reconcile_kind(kind: Kind, listing: Awaitable[list[str]]) -> None:
            listed = await listing
            doubted = await self._live_not_listed(kind, scope, cluster, listed, started)
            lookups = await self._describer.describe(kind, cluster, [*listed, *doubted])
            report.add(kind, lookups)

        await asyncio.gather(
            reconcile_kind(Kind.SERVICES, ecs.list_services(cluster)),
            reconcile_kind(Kind.TASKS, ecs.list_tasks(cluster)),
            reconcile_kind(Kind.CONTAINER_INSTANCES, ecs.list_container_instances(cluster)),
        )

    async def _live_not_listed(
        self, kind: Kind, scope: Scope, cluster: str, listed: Sequence[str], started: datetime
    ) -> list[str]:
        name = cluster.rpartition("/")[2]
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text(_LIVE[kind]),
                {
                    "arn": cluster,
                    "started": started,
                    "name": name,
                    "account": scope.account,
                    "region": scope.region,
                },
            )
            live = {row[0] for row in rows}
        return sorted(live - set(listed))

    @staticmethod
    def _count(report: ReconcileReport) -> None:
        for kind, count in report.drift.items():
            telemetry.DRIFT_REPAIRED.labels(kind).inc(count)
