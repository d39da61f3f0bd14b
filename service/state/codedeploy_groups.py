"""The consumer's view of CodeDeploy deployment groups: which ECS service each deploys.

Group names are unique only within a scope: a CodeDeploy event's group is the one
of the event's account and region. ``ECSWATCH_CODEDEPLOY_GROUPS`` overrides (an
override by service ARN in its own scope first, then one by names in every
scope); otherwise the ``codedeploy_groups`` row of the event's scope that the
poller's mapper (:mod:`service.poller.codedeploy`) wrote from GetDeploymentGroup's
``ecsServices``. Read in the batch's transaction, one query, only for batches
with CodeDeploy events of groups the settings do not name.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import ServiceRef
from service.deployments.rows import event_scope, group_key, group_service
from service.events.models import CodeDeployDeploymentStateChange, NormalisedEvent

_MAPPED = text(
    "SELECT account_id, region, application, deployment_group, cluster_name, service_name"
    " FROM codedeploy_groups WHERE service_name IS NOT NULL AND cluster_name IS NOT NULL"
    " AND (account_id, region, application, deployment_group) IN (SELECT * FROM unnest("
    " CAST(:accounts AS TEXT[]), CAST(:regions AS TEXT[]), CAST(:apps AS TEXT[]),"
    " CAST(:groups AS TEXT[])))"
)


async def group_services(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    overrides: dict[str, ServiceRef],
) -> dict[str, ServiceRef]:
    """``overrides`` plus the mapper's services of the groups ``events`` name, each
    in its event's scope (keyed by :func:`~service.deployments.rows.group_key`)."""
    wanted = sorted(
        {
            (*event_scope(e), e.detail.application, e.detail.deployment_group)
            for e in events
            if isinstance(e.detail, CodeDeployDeploymentStateChange)
            and e.detail.application
            and e.detail.deployment_group
            and group_service(
                overrides, event_scope(e), e.detail.application, e.detail.deployment_group
            )
            is None
        }
    )
    if not wanted:
        return overrides
    merged = dict(overrides)
    params = {
        name: [w[i] for w in wanted]
        for i, name in enumerate(("accounts", "regions", "apps", "groups"))
    }
    for row in await session.execute(_MAPPED, params):
        key = group_key(row.application, row.deployment_group, (row.account_id, row.region))
        merged[key] = ServiceRef(row.cluster_name, row.service_name)
    return merged
