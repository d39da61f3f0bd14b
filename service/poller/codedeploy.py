"""CodeDeploy deployment groups -> the ECS service they deploy, and their target groups.

GetDeploymentGroup's ``ecsServices`` names the cluster and service, and its
``loadBalancerInfo.targetGroupPairInfoList`` the blue/green pair of target
groups (by name). Answers are cached (a group's target changes rarely);
``ECSWATCH_CODEDEPLOY_GROUPS`` overrides the service mapping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.aws.apis import AwsApis
from service.aws.calls import AwsCallFailed
from service.config import ServiceRef
from service.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """What one deployment group deploys: the service (if known) and its target groups."""

    service: ServiceRef | None
    target_group_names: tuple[str, ...] = ()


_KNOWN_GROUPS = text(
    "SELECT DISTINCT codedeploy_application, codedeploy_group FROM deployments"
    " WHERE codedeploy_application IS NOT NULL AND codedeploy_group IS NOT NULL"
)
_FILL_DEPLOYMENTS = text(
    "UPDATE deployments SET cluster_name = :cluster, service_name = :service"
    " WHERE codedeploy_application = :app AND codedeploy_group = :grp"
    " AND service_name IS NULL"
)


class CodeDeployMapper:
    """Resolves deployment groups through CodeDeploy, cached for ``ttl_s``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        apis: AwsApis,
        overrides: dict[str, ServiceRef],
        *,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._apis = apis
        self._overrides = overrides
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, GroupTarget]] = {}
        self.targets: dict[str, GroupTarget] = {}

    async def resolve(self, application: str, group: str) -> GroupTarget:
        key = f"{application}/{group}"
        cached = self._cache.get(key)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        override = self._overrides.get(key)
        try:
            info = await self._apis.codedeploy.get_deployment_group(application, group)
        except AwsCallFailed as exc:
            log.info("codedeploy_group_lookup_failed", group=key, error=exc.detail)
            return GroupTarget(service=override)
        service = override
        names: list[str] = []
        if info is not None:
            services = info.get("ecsServices") or []
            if service is None and services:
                first = services[0]
                if first.get("clusterName") and first.get("serviceName"):
                    service = ServiceRef(first["clusterName"], first["serviceName"])
            lb = info.get("loadBalancerInfo") or {}
            for pair in lb.get("targetGroupPairInfoList") or []:
                names.extend(tg["name"] for tg in pair.get("targetGroups") or [] if tg.get("name"))
        target = GroupTarget(service=service, target_group_names=tuple(dict.fromkeys(names)))
        self._cache[key] = (self._clock(), target)
        return target

    async def map_known_groups(self, now: datetime | None = None) -> dict[str, GroupTarget]:
        """Resolve every group deployments name; fill those deployments' cluster and service."""
        async with self._sessionmaker() as session:
            groups = [(row[0], row[1]) for row in await session.execute(_KNOWN_GROUPS)]
        for key in self._overrides:
            app, _, grp = key.partition("/")
            if (app, grp) not in groups:
                groups.append((app, grp))
        targets: dict[str, GroupTarget] = {}
        for app, grp in groups:
            target = await self.resolve(app, grp)
            targets[f"{app}/{grp}"] = target
            if target.service is not None:
                async with self._sessionmaker() as session, session.begin():
                    await session.execute(
                        _FILL_DEPLOYMENTS,
                        {
                            "cluster": target.service.cluster,
                            "service": target.service.service,
                            "app": app,
                            "grp": grp,
                        },
                    )
        self.targets = targets
        return targets
