"""Deployment rows the poller built from ECS's or CodeDeploy's own record, applied
the way events are, with their alerts, in one transaction.

The rows go through the events' ordered upsert
(:func:`service.deployments.lifecycle.apply_polled`) and the alerts of the
resulting snapshots are raised in the same transaction
(:func:`service.alerts.raising.raise_alerts`). The consumer writes the same
deployments, so a deadlock runs the whole transaction again
(:func:`service.db.retry_on_contention`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.alerts.raising import raise_alerts
from service.alerts.rules import AlertDraft, AlertRules
from service.db import retry_on_contention
from service.deployments.lifecycle import apply_polled
from service.deployments.rows import Row


async def apply_with_alerts(
    sessionmaker: async_sessionmaker[AsyncSession],
    rows: Sequence[Row],
    *,
    rules: AlertRules,
    name: str,
) -> list[AlertDraft]:
    """Apply ``rows`` and raise their alerts; the alerts raised. ``name`` labels the
    retries in the logs."""

    async def write(session: AsyncSession) -> list[AlertDraft]:
        snapshots = await apply_polled(session, rows)
        return (await raise_alerts(session, [], snapshots, rules=rules)).alerts

    return await retry_on_contention(sessionmaker, write, name=name)
