"""The deployment step of a transaction: upsert, transitions, then one snapshot.

:func:`apply_events` is what the consumer's transaction does for deployments
after the state writes; :func:`apply_polled` what the poller's CodeDeploy check
does with the states it found. Both end with the snapshots of the deployments
they touched, read back once, which the alerts and the Datadog facts share.
Only executes: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from service.config import ServiceRef
from service.deployments.reads import read_snapshots
from service.deployments.rows import Row, event_scope
from service.deployments.snapshot import DeploymentKey, DeploymentSnapshot
from service.deployments.transitions import attach_service_reasons, mark_crash_loops
from service.deployments.upsert import upsert_deployment_rows, upsert_deployments
from service.events.models import NormalisedEvent, TaskStateChange
from service.state.codedeploy_groups import group_services


async def apply_events(
    session: AsyncSession,
    fresh: Sequence[NormalisedEvent],
    changed: Sequence[NormalisedEvent],
    *,
    codedeploy_groups: dict[str, ServiceRef] | None = None,
    crashloop_tasks: int,
    crashloop_window_s: float,
) -> list[DeploymentSnapshot]:
    """Deployments of a batch whose state is written: ``fresh`` are its new events,
    ``changed`` those of them that changed state (not stale). The snapshots of the
    deployments it touched (and of those that roll back to them)."""
    # CodeDeploy groups: the settings' overrides, then the poller's mapping.
    groups = await group_services(session, fresh, codedeploy_groups or {})
    tasks = [e for e in fresh if isinstance(e.detail, TaskStateChange)]
    touched = await upsert_deployments(session, list(fresh), groups, tasks)
    # Only events that changed something can start a crash loop.
    task_deployments = sorted(
        {
            DeploymentKey(*event_scope(e), e.detail.deployment_id)
            for e in changed
            if isinstance(e.detail, TaskStateChange) and e.detail.deployment_id
        }
    )
    await mark_crash_loops(
        session, task_deployments, tasks=crashloop_tasks, window_s=crashloop_window_s
    )
    await attach_service_reasons(session, changed)
    return await read_snapshots(session, sorted(set(touched) | set(task_deployments)))


async def apply_polled(session: AsyncSession, rows: Sequence[Row]) -> list[DeploymentSnapshot]:
    """Deployment states found by polling, through the events' ordered upsert; the
    snapshots of the deployments written."""
    return await read_snapshots(session, await upsert_deployment_rows(session, rows))
