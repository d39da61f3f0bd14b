"""Reconciliation: List* then Describe* in full batches, repairing drift.

For every cluster (or those in ``ECSWATCH_CLUSTERS``): describe the clusters,
then per cluster list and describe its services, tasks and container
instances. Everything is written through the same guarded upserts as events
(:mod:`service.enrich.writes`), so a reconcile never overwrites a newer event.
What ecswatch holds as live but ECS no longer lists is described once more;
what ECS no longer describes either is marked gone (``gone_at``), never deleted.
Rows a reconcile changed are counted as drift in ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.apis import AwsApis
from service.enrich.describer import Describer, Kind, Lookup, State
from service.logging import get_logger

log = get_logger(__name__)

# Live rows of a cluster that a reconcile expects ECS to list; written before
# ``:started`` (the reconcile's start), so an event that arrived meanwhile is not doubted.
_LIVE = {
    Kind.TASKS: "SELECT arn FROM tasks WHERE (cluster_arn = :arn OR cluster_name = :name)"
    " AND gone_at IS NULL AND coalesce(last_status, '') <> 'STOPPED' AND seen_at < :started",
    Kind.CONTAINER_INSTANCES: "SELECT arn FROM container_instances"
    " WHERE (cluster_arn = :arn OR cluster_name = :name) AND gone_at IS NULL"
    " AND coalesce(status, '') <> 'INACTIVE' AND seen_at < :started",
    Kind.SERVICES: "SELECT arn FROM services WHERE (cluster_arn = :arn OR cluster_name = :name)"
    " AND gone_at IS NULL AND coalesce(status, '') <> 'INACTIVE' AND updated_at < :started",
}


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


class Reconciler:
    """Lists and describes ECS resources; see the module docstring."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        apis: AwsApis,
        describer: Describer,
        *,
        clusters: Sequence[str] = (),
    ) -> None:
        self._sessionmaker = sessionmaker
        self._apis = apis
        self._describer = describer
        self._clusters = tuple(clusters)

    async def reconcile_all(self, now: datetime | None = None) -> ReconcileReport:
        """Reconcile every watched cluster; ``now`` is the reconcile's start."""
        started = now or datetime.now(UTC)
        report = ReconcileReport()
        names = list(self._clusters) or await self._apis.ecs.list_clusters()
        lookups: dict[str, Lookup] = {}
        if names:
            lookups = await self._describer.describe(Kind.CLUSTERS, "", names)
            report.add(Kind.CLUSTERS, lookups)
        for cluster in names:
            if lookups.get(cluster, Lookup(State.FOUND)).state is State.MISSING:
                continue
            await self._reconcile_cluster(cluster, started, report)
        self._count(report)
        telemetry.LAST_RECONCILE.set(datetime.now(UTC).timestamp())
        log.info(
            "reconciled",
            clusters=len(names),
            described=sum(report.described.values()),
            drift=dict(report.drift),
        )
        return report

    async def reconcile_one(self, cluster: str, service: str | None = None) -> ReconcileReport:
        """Reconcile one cluster, or one service of it (an event named it first)."""
        started = datetime.now(UTC)
        report = ReconcileReport()
        if service is None:
            report.add(Kind.CLUSTERS, await self._describer.describe(Kind.CLUSTERS, "", [cluster]))
            await self._reconcile_cluster(cluster, started, report)
        else:
            lookups = await self._describer.describe(Kind.SERVICES, cluster, [service])
            report.add(Kind.SERVICES, lookups)
            name = service.rpartition("/")[2]
            tasks = await self._apis.ecs.list_tasks(cluster, service_name=name)
            report.add(Kind.TASKS, await self._describer.describe(Kind.TASKS, cluster, tasks))
        self._count(report)
        log.info("reconciled_one", cluster=cluster, service=service, drift=dict(report.drift))
        return report

    async def _reconcile_cluster(
        self, cluster: str, started: datetime, report: ReconcileReport
    ) -> None:
        ecs = self._apis.ecs
        listings = await asyncio.gather(
            ecs.list_services(cluster),
            ecs.list_tasks(cluster),
            ecs.list_container_instances(cluster),
        )
        for kind, listed in zip(
            (Kind.SERVICES, Kind.TASKS, Kind.CONTAINER_INSTANCES), listings, strict=True
        ):
            doubted = await self._live_not_listed(kind, cluster, listed, started)
            lookups = await self._describer.describe(kind, cluster, [*listed, *doubted])
            report.add(kind, lookups)

    async def _live_not_listed(
        self, kind: Kind, cluster: str, listed: Sequence[str], started: datetime
    ) -> list[str]:
        name = cluster.rpartition("/")[2]
        cluster_arn = cluster if cluster.startswith("arn:") else None
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text(_LIVE[kind]),
                {"arn": cluster_arn, "started": started, "name": name},
            )
            live = {row[0] for row in rows}
        return sorted(live - set(listed))

    @staticmethod
    def _count(report: ReconcileReport) -> None:
        for kind, count in report.drift.items():
            telemetry.DRIFT_REPAIRED.labels(kind).inc(count)
