"""What one consumer transaction commits, in this order, in one database session:

1. **state** (:func:`service.state.apply.apply_events`): raw events, clusters,
   tasks, container instances, services, resource tags;
2. **deployments** (:func:`service.deployments.lifecycle.apply_events`): the
   ordered upsert, crash loops and Service Action reasons, then one snapshot of
   each deployment touched;
3. **alerts** (:func:`service.alerts.raising.raise_alerts`) of those snapshots and
   of the batch's events, with their webhook outbox rows: the classified cause of
   a failure or stuck deployment whose alert is raised now, gathered once and put
   on its snapshot, and ``deployment.recovered`` (the snapshot's ``recovers``);
4. **Datadog facts** (:func:`service.datadog.outbox.write_datadog_rows`) of the
   same events and snapshots, with their outbox rows, when forwarding is on.

Tables are first written in :data:`service.db.WRITE_ORDER`. Lower packages never
call up into higher ones to get here. Only flushes: the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from service.alerts.raising import raise_alerts
from service.alerts.rules import AlertDraft, AlertRules
from service.config import ServiceRef
from service.datadog.outbox import write_datadog_rows
from service.deployments import lifecycle
from service.events.models import NormalisedEvent
from service.state.apply import Applied, apply_events


@dataclass
class BatchResult:
    """Per event id, what the batch did with it; and the alerts it raised."""

    outcomes: dict[str, Applied] = field(default_factory=dict)
    alerts: list[AlertDraft] = field(default_factory=list)  # alerts raised (new ones)

    def count(self, outcome: Applied) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)


async def commit_events(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    *,
    codedeploy_groups: dict[str, ServiceRef] | None = None,
    alert_rules: AlertRules | None = None,
    datadog: bool = False,
) -> BatchResult:
    """Write everything ``events`` (any order, duplicates allowed) cause, in the
    session's transaction: state, deployments, alerts, Datadog facts."""
    rules = alert_rules or AlertRules()
    state = await apply_events(session, events)
    result = BatchResult(outcomes=state.outcomes)
    if not state.fresh:
        return result
    changed = state.changed
    snapshots = await lifecycle.apply_events(
        session,
        state.fresh,
        changed,
        codedeploy_groups=codedeploy_groups,
        crashloop_tasks=rules.crashloop_tasks,
        crashloop_window_s=rules.crashloop_window_s,
    )
    raised = await raise_alerts(session, changed, snapshots, rules=rules)
    result.alerts = raised.alerts
    if datadog:
        # The snapshots as the alerts left them: with the causes they classified.
        await write_datadog_rows(session, state.fresh, state.outcomes, raised.snapshots)
    return result
