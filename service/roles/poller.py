"""The ``poller`` role: one leader among the replicas runs the periodic jobs.

The jobs are a plain list (:func:`poller_jobs`): the watched scopes (and the
organization's accounts, hourly), CodeDeploy mapping, reconciliation and
CloudWatch metrics over every scope, retention pruning, the CodeDeploy status
check (BatchGetDeployments) and ECS's service deployment check
(ListServiceDeployments, DescribeServiceDeployments), each a
:class:`~service.poller.leader.Job`; the heartbeat (service.poller.heartbeat)
joins them in :func:`run_poller`, with one heartbeat per watched scope.
The role never blocks readiness: it counts as running from the start, leader
or not, and a failed job waits for its next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from service.alerts.raising import rules_from_settings
from service.aws.events import EventsApi
from service.aws.scopes import AwsScopes
from service.enrich.describer import Describer
from service.logging import get_logger
from service.poller.codedeploy import CodeDeployMapper
from service.poller.heartbeat import Heartbeat, heartbeat_job
from service.poller.leader import Job, LeaderLock, run_as_leader
from service.poller.metrics import MetricsPoller
from service.poller.reconcile import Reconciler
from service.poller.scopes import record_watched
from service.poller.service_deployments import INTERVAL_S as SERVICE_DEPLOYMENTS_INTERVAL_S
from service.poller.service_deployments import ServiceDeploymentChecker
from service.retention import PruneReport, prune
from service.runtime import Runtime

log = get_logger(__name__)

#: How often the leader prunes history past ECSWATCH_RETENTION_DAYS. Each run
#: deletes what aged out since the last one: about an hour of a fleet's history.
RETENTION_INTERVAL_S = 3600.0
#: How often the organization's accounts are listed again (and the scopes recorded).
ACCOUNTS_INTERVAL_S = 3600.0


def poller_jobs(
    runtime: Runtime,
    reconciler: Reconciler,
    metrics: MetricsPoller,
    codedeploy: CodeDeployMapper,
    service_deployments: ServiceDeploymentChecker | None = None,
) -> list[Job]:
    """The leader's periodic work, in the order it first runs on taking over."""
    settings = runtime.settings
    jobs = [
        scopes_job(runtime, reconciler.scopes),
        Job("codedeploy_groups", settings.codedeploy_interval_s, codedeploy.map_known_groups),
        Job("reconcile", settings.reconcile_interval_s, reconciler.reconcile_all),
        Job("metrics", settings.metrics_interval_s, metrics.poll),
        retention_job(runtime),
        # CodeDeploy delivers its events best effort: ask about what is still in progress.
        Job("codedeploy_deployments", settings.codedeploy_interval_s, codedeploy.check_in_progress),
    ]
    if service_deployments is not None:
        # ECS's own record of service deployments: the authoritative status, the
        # strategy and the alarms that triggered.
        jobs.append(
            Job(
                "service_deployments",
                SERVICE_DEPLOYMENTS_INTERVAL_S,
                service_deployments.check,
            )
        )
    return jobs


def scopes_job(runtime: Runtime, scopes: AwsScopes) -> Job:
    """List the organization's accounts again (when discovery is on) and record which
    scopes are watched, hourly."""

    async def run(now: datetime) -> int:
        count = await scopes.refresh_accounts(now)
        await record_watched(runtime.sessionmaker, scopes.scopes)
        return count

    return Job("accounts", ACCOUNTS_INTERVAL_S, run)


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
    scopes = await runtime.aws_scopes()
    apis = await runtime.aws_apis()
    async with Describer(runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(
            runtime.sessionmaker,
            scopes,
            describer,
            clusters=settings.clusters,
            interval_s=settings.reconcile_interval_s,
            concurrency=settings.scope_concurrency,
        )
        codedeploy = CodeDeployMapper(
            runtime.sessionmaker,
            apis,
            settings.codedeploy_groups,
            rules=rules_from_settings(settings),
            scopes=scopes,
        )
        metrics = MetricsPoller(
            runtime.sessionmaker,
            scopes,
            codedeploy,
            clusters=settings.clusters,
            interval_s=settings.metrics_interval_s,
            concurrency=settings.scope_concurrency,
        )
        service_deployments = ServiceDeploymentChecker(
            runtime.sessionmaker, apis, scopes=scopes, rules=rules_from_settings(settings)
        )
        jobs = poller_jobs(runtime, reconciler, metrics, codedeploy, service_deployments)
        # The heartbeat through the event path (service.poller.heartbeat).
        heartbeat = Heartbeat(
            EventsApi(await runtime.events(), apis.caller),
            scopes=lambda: scopes.scopes,
            # ecswatch's own heartbeat stands for the home scope (the credentials'
            # own account, when found by sts:GetCallerIdentity).
            home=lambda: scopes.home if scopes.home_account else None,
            scope_events=scopes.events,
        )
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
