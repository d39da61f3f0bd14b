"""The consumer's view of CodeDeploy deployment groups: which ECS service each deploys.

``ECSWATCH_CODEDEPLOY_GROUPS`` overrides; otherwise the ``codedeploy_groups`` rows
that the poller's mapper (:mod:`service.poller.codedeploy`) wrote from
GetDeploymentGroup's ``ecsServices``. Read in the batch's transaction, one query,
only for batches with CodeDeploy events of groups the settings do not name.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.config import ServiceRef
from service.events.models import CodeDeployDeploymentStateChange, NormalisedEvent

_MAPPED = text(
    "SELECT application, deployment_group, cluster_name, service_name FROM codedeploy_groups"
    " WHERE service_name IS NOT NULL AND cluster_name IS NOT NULL"
    " AND application || '/' || deployment_group = ANY(CAST(:keys AS TEXT[]))"
)


def group_key(application: str, group: str) -> str:
    return f"{application}/{group}"


async def group_services(
    session: AsyncSession,
    events: Sequence[NormalisedEvent],
    overrides: dict[str, ServiceRef],
) -> dict[str, ServiceRef]:
    """``overrides`` plus the mapper's services of the groups ``events`` name."""
    wanted = sorted(
        {
            group_key(e.detail.application, e.detail.deployment_group)
            for e in events
            if isinstance(e.detail, CodeDeployDeploymentStateChange)
            and e.detail.application
            and e.detail.deployment_group
        }
        - set(overrides)
    )
    if not wanted:
        return overrides
    merged = dict(overrides)
    for row in await session.execute(_MAPPED, {"keys": wanted}):
        merged[group_key(row.application, row.deployment_group)] = ServiceRef(
            row.cluster_name, row.service_name
        )
    return merged
