"""The cause a failure or stuck alert carries, computed once, in the writing transaction.

:func:`attach_causes` gathers the evidence of the deployments it is asked about
(:func:`service.deployments.evidence.gather`, in the same session, so the
transaction's own writes count) and classifies it
(:func:`service.deployments.cause.classify`); the cause goes on the deployment's
snapshot, which the alerts and the Datadog facts both read. Gathering costs a few
indexed statements per deployment, so the caller asks only about deployments
whose alert is being raised now (docs/alerts.md, "Why it failed").

Only executes: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.deployments.cause import classify
from service.deployments.evidence import gather, session_reader
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
    out: list[DeploymentSnapshot] = []
    read = session_reader(session)
    for d in snapshots:
        if d.key in keys and d.cause is None and needs_cause(d):
            found = await gather(read, d.key, now=now)
            if found is not None:
                d = dataclasses.replace(d, cause=classify(found.facts))
        out.append(d)
    return out
