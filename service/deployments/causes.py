"""The cause a failure or stuck alert carries, computed once, in the writing transaction.

:func:`attach_causes` gathers the evidence of the deployments it is asked about
(:func:`service.deployments.evidence.gather_many`, in the same session, so the
transaction's own writes count) and classifies it
(:func:`service.deployments.cause.classify`); the cause goes on the deployment's
snapshot, which the alerts and the Datadog facts both read. Gathering costs four
indexed statements for all the deployments of one call (the tasks' events, which
the cause does not read, are left out), so the caller asks once per batch, and
only about deployments whose alert is being raised now (docs/alerts.md, "Why it
failed").

Only executes: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.deployments.cause import classify
from service.deployments.evidence import gather_many, session_reader
from service.deployments.outcome import Outcome
from service.deployments.snapshot import FAILED_OUTCOMES, DeploymentKey, DeploymentSnapshot


def needs_cause(d: DeploymentSnapshot) -> bool:
    """Failed, rolled back, failed to roll back, or stuck in progress."""
    return d.outcome in FAILED_OUTCOMES or (d.stuck and d.outcome == Outcome.IN_PROGRESS)


async def attach_causes(
    session: AsyncSession,
    snapshots: Sequence[DeploymentSnapshot],
    keys: Collection[DeploymentKey],
    *,
    now: datetime,
) -> list[DeploymentSnapshot]:
    """``snapshots`` with the cause of those of ``keys`` that need one
    (:func:`needs_cause`) and have none yet; the others unchanged, in order."""
    owed = [d.key for d in snapshots if d.key in keys and d.cause is None and needs_cause(d)]
    if not owed:
        return list(snapshots)
    found = await gather_many(session_reader(session), owed, now=now, task_events=False)
    causes = {i: classify(g.facts) for i, g in found.items()}
    return [
        dataclasses.replace(d, cause=causes[d.key]) if d.key in causes and d.cause is None else d
        for d in snapshots
    ]
