"""The lifecycle's own transitions, decided from state rather than from one event.

* a deployment whose tasks crash-loop is marked ``failed`` (no circuit breaker
  needed): :func:`mark_crash_loops`;
* a Service Action that says why a rollout is not progressing (start impaired,
  placement or configuration failure) becomes the reason of the service's
  in-progress deployment: :func:`attach_service_reasons`;
* an in-progress deployment with no running task for too long is flagged
  ``stuck``: :func:`mark_stuck` (time passing decides it, so a periodic sweep
  runs it).

Only executes: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.deployments.outcome import Outcome
from service.deployments.reads import STUCK_CANDIDATES, snapshot_of
from service.deployments.rules import (
    IMPAIRED_EVENTS,
    crash_loop_reason,
    crash_looping,
    is_failed_start,
    is_stuck,
    service_action_reason,
)
from service.deployments.snapshot import DeploymentSnapshot
from service.events.models import NormalisedEvent, ServiceAction

# Only deployments still in progress can start crash-looping, and only stops that
# may be failed starts are read (is_failed_start decides on the rest).
_STOPPED_TASKS = text(
    "SELECT t.deployment_id, t.stop_code, t.stopped_reason, t.containers,"
    " coalesce(t.stopped_at, t.updated_at) AS at FROM tasks AS t"
    f" JOIN deployments AS d ON d.id = t.deployment_id AND d.outcome = '{Outcome.IN_PROGRESS}'"
    " WHERE t.deployment_id = ANY(:ids) AND t.last_status = 'STOPPED'"
    " AND (t.stop_code IN ('TaskFailedToStart', 'EssentialContainerExited')"
    " OR t.stopped_reason LIKE '%CannotPullContainerError%'"
    " OR t.stopped_reason LIKE '%ResourceInitializationError%')"
    " ORDER BY t.deployment_id, t.arn"
)
_MARK_CRASH_LOOP = text(
    f"UPDATE deployments SET outcome = '{Outcome.FAILED}', reason = :reason"
    f" WHERE id = :id AND outcome = '{Outcome.IN_PROGRESS}'"
)
_ATTACH_REASON = text(
    "UPDATE deployments SET reason = :reason WHERE id = ("
    f" SELECT id FROM deployments WHERE outcome = '{Outcome.IN_PROGRESS}' AND (service_arn = :arn"
    " OR (cluster_name = :cluster AND service_name = :service))"
    " ORDER BY started_at DESC NULLS LAST, id DESC LIMIT 1)"
)
_MARK_STUCK = text("UPDATE deployments SET stuck = true WHERE id = ANY(:ids)")


async def mark_crash_loops(
    session: AsyncSession, ids: Sequence[str], *, tasks: int, window_s: float
) -> None:
    """Mark failed the deployments of ``ids`` with ``tasks`` failed starts within
    ``window_s`` seconds (``ECSWATCH_CRASHLOOP_TASKS``, ``_WINDOW_S``)."""
    if not ids:
        return
    stops: dict[str, list[datetime]] = {}
    last_reason: dict[str, str | None] = {}
    for row in await session.execute(_STOPPED_TASKS, {"ids": list(ids)}):
        if row.at is None or not is_failed_start(
            row.stop_code, row.stopped_reason, row.containers or []
        ):
            continue
        stops.setdefault(row.deployment_id, []).append(row.at)
        last_reason[row.deployment_id] = row.stopped_reason or row.stop_code
    for deployment_id in sorted(stops):
        times = stops[deployment_id]
        if crash_looping(times, tasks=tasks, window_s=window_s):
            reason = crash_loop_reason(len(times), window_s, last_reason.get(deployment_id))
            await session.execute(_MARK_CRASH_LOOP, {"id": deployment_id, "reason": reason})


async def attach_service_reasons(session: AsyncSession, events: Sequence[NormalisedEvent]) -> None:
    """The reason of each impairing Service Action, on its service's newest
    in-progress deployment."""
    for event in events:
        detail = event.detail
        if isinstance(detail, ServiceAction) and detail.event_name in IMPAIRED_EVENTS:
            await session.execute(
                _ATTACH_REASON,
                {
                    "reason": service_action_reason(detail.event_name, detail.reason),
                    "arn": detail.service_arn,
                    "cluster": detail.cluster_name,
                    "service": detail.service_name,
                },
            )


async def mark_stuck(
    session: AsyncSession, *, now: datetime, after_s: float
) -> list[DeploymentSnapshot]:
    """Flag in-progress deployments with no running task ``after_s`` seconds after
    they began; their snapshots as flagged. Idempotent: rows locked by another
    sweep are skipped, flagged ones are not candidates again."""
    cutoff = now - timedelta(seconds=after_s)
    found = [
        snapshot_of(row) for row in await session.execute(STUCK_CANDIDATES, {"cutoff": cutoff})
    ]
    stuck = [
        d
        for d in found
        if is_stuck(
            outcome=d.outcome, started_at=d.started_at, running_tasks=0, now=now, after_s=after_s
        )
    ]
    if not stuck:
        return []
    await session.execute(_MARK_STUCK, {"ids": [d.id for d in stuck]})
    return [dataclasses.replace(d, stuck=True) for d in stuck]
