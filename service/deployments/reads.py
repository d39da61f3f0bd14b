"""Deployment snapshots read back after a transaction's writes.

:func:`read_snapshots` is the one read of a deployment that alerts and Datadog
facts share; :func:`closed_failures` finds the failure a success recovers from.
Only executes: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.snapshot import (
    FAILED_OUTCOMES,
    KEYS_MATCH,
    DeploymentKey,
    DeploymentSnapshot,
    key_params,
    target_groups,
)

# A scope's service: its ARN's account and region are the deployment's (a
# deployment of no known scope, '', takes a service of any).
_SERVICE_IN_SCOPE = (
    "(d.account_id = '' OR (split_part(s.arn, ':', 5) = d.account_id"
    " AND split_part(s.arn, ':', 4) = d.region))"
)
_SNAPSHOT_COLUMNS = (
    "d.account_id, d.region, d.id, d.kind, d.outcome, d.cluster_arn, d.cluster_name,"
    " d.service_name, d.service_arn,"
    " d.reason, d.rollback_target, d.stuck, d.task_definition, d.lifecycle_stage,"
    " d.failed_tasks, d.started_at, d.finished_at, d.event_ids, d.codedeploy_application,"
    " d.codedeploy_group,"
    " EXISTS (SELECT 1 FROM deployments AS o WHERE o.rollback_target = d.id"
    "  AND o.account_id = d.account_id AND o.region = d.region)"
    " AS is_rollback_target, d.last_event_at, d.last_event_name,"
    # The poller's CodeDeploy group mapping (of the deployment's scope), and the
    # service's load balancers (DescribeServices).
    " (d.codedeploy_application IS NULL OR EXISTS (SELECT 1 FROM codedeploy_groups AS g"
    "  WHERE g.account_id = d.account_id AND g.region = d.region"
    "  AND g.application = d.codedeploy_application"
    "  AND g.deployment_group = d.codedeploy_group)) AS group_resolved,"
    " (SELECT g.target_groups FROM codedeploy_groups AS g"
    "  WHERE g.account_id = d.account_id AND g.region = d.region"
    "  AND g.application = d.codedeploy_application"
    "  AND g.deployment_group = d.codedeploy_group) AS codedeploy_target_groups,"
    " coalesce((SELECT s.load_balancers FROM services AS s WHERE s.arn = d.service_arn),"
    "  (SELECT s.load_balancers FROM services AS s WHERE d.service_arn IS NULL"
    "   AND s.cluster_name = d.cluster_name AND s.name = d.service_name"
    # Names are unique only within a scope: the service of the deployment's cluster.
    "   AND (d.cluster_arn IS NULL OR s.cluster_arn IS NULL OR s.cluster_arn = d.cluster_arn)"
    f"   AND {_SERVICE_IN_SCOPE}"
    "   ORDER BY s.gone_at DESC NULLS FIRST LIMIT 1)) AS load_balancers"
)
# The deployments asked for, and those (of their scope) that roll back to them.
_SNAPSHOTS = text(
    f"SELECT {_SNAPSHOT_COLUMNS} FROM deployments AS d WHERE {KEYS_MATCH}"
    " OR (d.account_id, d.region, d.rollback_target) IN (SELECT * FROM"
    " unnest(CAST(:accounts AS TEXT[]), CAST(:regions AS TEXT[]), CAST(:ids AS TEXT[])))"
    " ORDER BY d.id, d.account_id, d.region"
)
STUCK_CANDIDATES = text(
    f"SELECT {_SNAPSHOT_COLUMNS} FROM deployments AS d"
    # Known from a deployment event (not only from its tasks' startedBy: a service's
    # long-finished deployment seen mid-life through its tasks is no rollout).
    f" WHERE d.outcome = '{Outcome.IN_PROGRESS}' AND NOT d.stuck AND d.started_at <= :cutoff"
    " AND d.last_event_at IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.last_status = 'RUNNING'"
    "  AND ((t.deployment_id = d.id AND (d.account_id = ''"
    "  OR (split_part(t.arn, ':', 5) = d.account_id AND split_part(t.arn, ':', 4) = d.region)))"
    "  OR (d.task_definition IS NOT NULL"
    "  AND t.task_definition_arn = d.task_definition AND t.cluster_arn = d.cluster_arn)))"
    " ORDER BY d.started_at LIMIT 500 FOR UPDATE OF d SKIP LOCKED"
)


def snapshot_of(row: Any) -> DeploymentSnapshot:
    """The snapshot of one row of the snapshot columns."""
    return DeploymentSnapshot(
        id=row.id,
        account_id=row.account_id,
        region=row.region,
        kind=DeploymentKind(row.kind),
        outcome=Outcome(row.outcome),
        cluster=row.cluster_name,
        service=row.service_name,
        service_arn=row.service_arn,
        reason=row.reason,
        rollback_target=row.rollback_target,
        stuck=row.stuck,
        task_definition=row.task_definition,
        lifecycle_stage=row.lifecycle_stage,
        failed_tasks=row.failed_tasks,
        started_at=row.started_at,
        finished_at=row.finished_at,
        event_ids=tuple(str(e) for e in (row.event_ids or [])),
        is_rollback_target=row.is_rollback_target,
        codedeploy_application=row.codedeploy_application,
        codedeploy_group=row.codedeploy_group,
        last_event_at=row.last_event_at,
        last_event_name=row.last_event_name,
        group_resolved=row.group_resolved,
        target_groups=target_groups(row.load_balancers, row.codedeploy_target_groups),
        cluster_arn=row.cluster_arn,
    )


async def read_snapshots(
    session: AsyncSession, keys: Sequence[DeploymentKey]
) -> list[DeploymentSnapshot]:
    """The deployments of ``keys`` and those that roll back to them, as stored now."""
    if not keys:
        return []
    found = await session.execute(_SNAPSHOTS, key_params(keys))
    return [snapshot_of(row) for row in found]


def _in(outcomes: frozenset[Outcome]) -> str:
    return ", ".join(f"'{o}'" for o in sorted(outcomes))


# The service's last deployment with a verdict (succeeded or a failure) started
# before this one, restores left out (another deployment of the service rolls back
# to it), when that verdict is a failure. The service's deployments are those of
# its names in the deployment's own scope. ix_deployments_service serves both reads.
_CLOSED_FAILURES = text(
    "SELECT d.account_id, d.region, d.id AS recovering, p.id, p.outcome FROM deployments AS d"
    " CROSS JOIN LATERAL (SELECT p.id, p.outcome FROM deployments AS p"
    "  WHERE p.cluster_name = d.cluster_name AND p.service_name = d.service_name"
    "  AND p.account_id = d.account_id AND p.region = d.region"
    "  AND p.id <> d.id AND p.started_at < d.started_at"
    f"  AND p.outcome IN ({_in(FAILED_OUTCOMES | {Outcome.SUCCEEDED})})"
    "  AND NOT EXISTS (SELECT 1 FROM deployments AS o WHERE o.cluster_name = d.cluster_name"
    "   AND o.service_name = d.service_name AND o.account_id = d.account_id"
    "   AND o.region = d.region AND o.rollback_target = p.id)"
    "  ORDER BY p.started_at DESC, p.id DESC LIMIT 1) AS p"
    f" WHERE {KEYS_MATCH} AND d.outcome = '{Outcome.SUCCEEDED}'"
    f" AND p.outcome IN ({_in(FAILED_OUTCOMES)})"
)


async def closed_failures(
    session: AsyncSession, keys: Sequence[DeploymentKey]
) -> dict[DeploymentKey, str]:
    """For the succeeded deployments of ``keys`` that fix a failure, the id of the
    failed deployment (of the same scope) each closes: the service's last deployment
    with a verdict before it (restores left out) failed, rolled back or failed to
    roll back (docs/alerts.md, ``deployment.recovered``)."""
    if not keys:
        return {}
    found = await session.execute(_CLOSED_FAILURES, key_params(keys))
    return {DeploymentKey(row.account_id, row.region, row.recovering): row.id for row in found}
