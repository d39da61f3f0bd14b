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
from service.deployments.rows import event_scope
from service.deployments.rules import (
    IMPAIRED_EVENTS,
    crash_loop_reason,
    crash_looping,
    is_failed_start,
    is_stuck,
    service_action_reason,
)
from service.deployments.snapshot import (
    KEYS_MATCH,
    DeploymentKey,
    DeploymentSnapshot,
    key_params,
)
from service.events.models import NormalisedEvent, ServiceAction

# Only deployments still in progress can start crash-looping, and only stops that
# may be failed starts are read (is_failed_start decides on the rest). A
# deployment's tasks are those of its scope (the task ARN's account and region).
_STOPPED_TASKS = text(
    "SELECT d.account_id, d.region, t.deployment_id, t.stop_code, t.stopped_reason,"
    " t.containers, coalesce(t.stopped_at, t.updated_at) AS at FROM tasks AS t"
    f" JOIN deployments AS d ON d.id = t.deployment_id AND d.outcome = '{Outcome.IN_PROGRESS}'"
    " AND split_part(t.arn, ':', 5) = d.account_id AND split_part(t.arn, ':', 4) = d.region"
    f" WHERE t.deployment_id = ANY(CAST(:ids AS TEXT[])) AND {KEYS_MATCH}"
    " AND t.last_status = 'STOPPED'"
    " AND (t.stop_code IN ('TaskFailedToStart', 'EssentialContainerExited')"
    " OR t.stopped_reason LIKE '%CannotPullContainerError%'"
    " OR t.stopped_reason LIKE '%ResourceInitializationError%')"
    " ORDER BY t.deployment_id, t.arn"
)
_MARK_CRASH_LOOP = text(
    f"UPDATE deployments SET outcome = '{Outcome.FAILED}', reason = :reason"
    " WHERE account_id = :account_id AND region = :region AND id = :id"
    f" AND outcome = '{Outcome.IN_PROGRESS}'"
)
# The service's newest in-progress deployment, in the scope of the Service Action.
_ATTACH_REASON = text(
    "UPDATE deployments SET reason = :reason WHERE (account_id, region, id) = ("
    " SELECT account_id, region, id FROM deployments"
    f" WHERE outcome = '{Outcome.IN_PROGRESS}' AND account_id = :account_id"
    " AND region = :region AND (service_arn = :arn"
    " OR (cluster_name = :cluster AND service_name = :service))"
    " ORDER BY started_at DESC NULLS LAST, id DESC LIMIT 1)"
)
_MARK_STUCK = text(f"UPDATE deployments AS d SET stuck = true WHERE {KEYS_MATCH}")


async def mark_crash_loops(
    session: AsyncSession, keys: Sequence[DeploymentKey], *, tasks: int, window_s: float
) -> None:
    """Mark failed the deployments of ``keys`` with ``tasks`` failed starts within
    ``window_s`` seconds (``ECSWATCH_CRASHLOOP_TASKS``, ``_WINDOW_S``)."""
    if not keys:
        return
    stops: dict[DeploymentKey, list[datetime]] = {}
    last_reason: dict[DeploymentKey, str | None] = {}
    for row in await session.execute(_STOPPED_TASKS, key_params(keys)):
        if row.at is None or not is_failed_start(
            row.stop_code, row.stopped_reason, row.containers or []
        ):
            continue
        key = DeploymentKey(row.account_id, row.region, row.deployment_id)
        stops.setdefault(key, []).append(row.at)
        last_reason[key] = row.stopped_reason or row.stop_code
    for key in sorted(stops):
        times = stops[key]
        if crash_looping(times, tasks=tasks, window_s=window_s):
            reason = crash_loop_reason(len(times), window_s, last_reason.get(key))
            await session.execute(_MARK_CRASH_LOOP, {**key._asdict(), "reason": reason})


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
                    "account_id": event_scope(event)[0],
                    "region": event_scope(event)[1],
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
    await session.execute(_MARK_STUCK, key_params(d.key for d in stuck))
    return [dataclasses.replace(d, stuck=True) for d in stuck]
