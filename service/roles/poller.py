"""The ``poller`` role: one leader among the replicas runs the periodic jobs.

The jobs are a plain list (:func:`poller_jobs`): CodeDeploy mapping,
reconciliation, CloudWatch metrics, retention pruning and the CodeDeploy
status check (BatchGetDeployments), each a
:class:`~service.poller.leader.Job`; the heartbeat (service.poller.heartbeat)
joins them in :func:`run_poller`.
The role never blocks readiness: it counts as running from the start, leader
or not, and a failed job waits for its next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from service.alerts.raising import rules_from_settings
from service.aws.events import EventsApi
from service.enrich.describer import Describer
from service.logging import get_logger
from service.poller.codedeploy import CodeDeployMapper
from service.poller.heartbeat import Heartbeat, heartbeat_job
from service.poller.leader import Job, LeaderLock, run_as_leader
from service.poller.metrics import MetricsPoller
from service.poller.reconcile import Reconciler
from service.retention import PruneReport, prune
from service.runtime import Runtime

log = get_logger(__name__)

#: How often the leader prunes history past ECSWATCH_RETENTION_DAYS. Each run
#: deletes what aged out since the last one: about an hour of a fleet's history.
RETENTION_INTERVAL_S = 3600.0


def poller_jobs(
    runtime: Runtime, reconciler: Reconciler, metrics: MetricsPoller, codedeploy: CodeDeployMapper
) -> list[Job]:
    """The leader's periodic work, in the order it first runs on taking over."""
    settings = runtime.settings
    return [
        Job("codedeploy_groups", settings.codedeploy_interval_s, codedeploy.map_known_groups),
        Job("reconcile", settings.reconcile_interval_s, reconciler.reconcile_all),
        Job("metrics", settings.metrics_interval_s, metrics.poll),
        retention_job(runtime),
        # CodeDeploy delivers its events best effort: ask about what is still in progress.
        Job("codedeploy_deployments", settings.codedeploy_interval_s, codedeploy.check_in_progress),
    ]


def retention_job(runtime: Runtime) -> Job:
    """Prune history past ``ECSWATCH_RETENTION_DAYS`` (service.retention), hourly."""

    async def run(now: datetime) -> PruneReport:
        return await prune(runtime.sessionmaker, runtime.settings.retention_days, now)

    return Job("retention", RETENTION_INTERVAL_S, run)


def election_interval(runtime: Runtime) -> float:
    """How often a follower tries for the lock (and a leader checks it still holds it)."""
    settings = runtime.settings
    return float(min(settings.metrics_interval_s, settings.reconcile_interval_s, 15))


async def run_poller(
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    interval_s: float | None = None,
    on_leader: Callable[[bool], None] | None = None,
) -> None:
    """The ``poller`` role: returns when ``stop`` is set."""
    settings = runtime.settings
    apis = await runtime.aws_apis()
    async with Describer(runtime.sessionmaker, apis) as describer:
        reconciler = Reconciler(runtime.sessionmaker, apis, describer, clusters=settings.clusters)
        codedeploy = CodeDeployMapper(
            runtime.sessionmaker,
            apis,
            settings.codedeploy_groups,
            rules=rules_from_settings(settings),
        )
        metrics = MetricsPoller(runtime.sessionmaker, apis, codedeploy, clusters=settings.clusters)
        jobs = poller_jobs(runtime, reconciler, metrics, codedeploy)
        # The heartbeat through the event path (service.poller.heartbeat).
        heartbeat = Heartbeat(EventsApi(await runtime.events(), apis.caller))
        jobs.append(heartbeat_job(heartbeat, settings.heartbeat_interval_s))
        lock = LeaderLock.for_engine(runtime.engine)
        log.info("poller_started", jobs=[j.name for j in jobs])
        await run_as_leader(
            lock,
            jobs,
            stop,
            interval_s=interval_s or election_interval(runtime),
            on_change=on_leader,
        )
    log.info("poller_stopped")
