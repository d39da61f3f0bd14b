"""CodeDeploy on the poller's leader: deployment groups -> the ECS service they deploy
(and their target groups), and the status of in-progress CodeDeploy deployments.

**Mapping.** GetDeploymentGroup's ``ecsServices`` names the cluster and service, and
its ``loadBalancerInfo.targetGroupPairInfoList`` the blue/green pair of target
groups (by name). Each answer is kept in ``codedeploy_groups`` (refreshed hourly),
where the consumer finds the service of the next CodeDeploy event at once;
``ECSWATCH_CODEDEPLOY_GROUPS`` overrides the service. Each run maps the groups that
deployments name and the table lacks, back-fills the cluster and service of those
deployments, and raises the alerts they held for the mapping
(:func:`service.alerts.raising.release_held`): once each, by their dedupe keys.

**Status check.** CodeDeploy delivers its events best effort, so each run also asks
BatchGetDeployments (25 a call) about the CodeDeploy deployments still in progress
here, and applies a terminal status through the events' ordered upsert
(:func:`service.deployments.lifecycle.apply_polled`): the alerts of the
snapshots follow, in the same transaction.

**Scopes.** Application and group names, like deployment ids, are unique only
within a scope (account, region). Both calls go to the scope of the deployment
(that of its events, ``deployments.account_id`` and ``region``); one whose scope is
not known ('' from before it was recorded) is asked in the home scope, and one of
a scope ecswatch does not watch is not asked. A group's answer is stored in the
scope it was asked in, and fills only that scope's deployments, with the service
of that scope. ``ECSWATCH_CODEDEPLOY_GROUPS``' ``application/group=cluster/service``
holds for the group in every scope (resolved in the deployment's own);
``application/group=<service ARN>`` for the group of the ARN's scope only, ahead
of the other. A scope whose call fails is logged and skipped; the others carry on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.alerts.raising import release_held
from service.alerts.rules import AlertRules
from service.aws.apis import AwsApis
from service.aws.calls import AwsCallFailed, AwsThrottled
from service.aws.scopes import AwsScopes, Scope
from service.config import ServiceRef
from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.rows import (
    Row,
    cluster_of_service,
    codedeploy_deployment_row,
    group_key,
    group_service,
)
from service.deployments.snapshot import DeploymentKey
from service.events.arns import parse_arn
from service.logging import get_logger
from service.poller.polled import apply_with_alerts

log = get_logger(__name__)

#: How long a group's mapping stands before GetDeploymentGroup is asked again.
MAPPING_TTL_S = 3600.0
#: After a failed GetDeploymentGroup, how long before the group is asked again.
FAILURE_RETRY_S = 300.0
#: In-progress CodeDeploy deployments older than this are no longer checked.
CHECK_HORIZON = timedelta(days=7)
#: At most this many in-progress deployments are checked a run (25 a call).
CHECK_LIMIT = 500

#: BatchGetDeployments ``status`` -> the state its event would carry.
STATUS_STATES = {"Succeeded": "SUCCESS", "Failed": "FAILURE", "Stopped": "STOP"}


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """What one deployment group deploys: the service (if known) and its target groups."""

    service: ServiceRef | None
    target_group_names: tuple[str, ...] = ()


# Groups are named within a scope: each is mapped in the scope (account, region) of
# the deployments that name it, and stored there.
_TO_MAP = text(
    "SELECT DISTINCT d.account_id, d.region, d.codedeploy_application, d.codedeploy_group"
    " FROM deployments AS d"
    " WHERE d.codedeploy_application IS NOT NULL AND d.codedeploy_group IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM codedeploy_groups AS g"
    "  WHERE g.account_id = d.account_id AND g.region = d.region"
    "  AND g.application = d.codedeploy_application"
    "  AND g.deployment_group = d.codedeploy_group)"
    " UNION SELECT account_id, region, application, deployment_group FROM codedeploy_groups"
    " WHERE resolved_at < :stale"
)
_STORE = text(
    "INSERT INTO codedeploy_groups (account_id, region, application, deployment_group,"
    " cluster_name, service_name, target_groups, resolved_at)"
    " VALUES (:account_id, :region, :app, :grp, :cluster, :service, CAST(:tgs AS jsonb), :at)"
    " ON CONFLICT (account_id, region, application, deployment_group) DO UPDATE SET"
    " cluster_name = excluded.cluster_name, service_name = excluded.service_name,"
    " target_groups = excluded.target_groups, resolved_at = excluded.resolved_at"
)
_FRESH = text(
    "SELECT account_id, region, application, deployment_group FROM codedeploy_groups"
    " WHERE resolved_at >= :stale"
)
_ALL = text(
    "SELECT account_id, region, application, deployment_group, cluster_name, service_name,"
    " target_groups FROM codedeploy_groups"
    " ORDER BY account_id, region, application, deployment_group"
)
# Deployments of mapped groups that name no service yet. A mapping of one scope
# (account '' and region '' in ``m`` stand for every scope) applies to that scope's
# deployments, ahead of a mapping of every scope. The service's ARNs: the mapping's,
# else those of the service of those names in the deployment's own scope.
_SERVICE_IN_SCOPE = (
    "FROM services AS s WHERE s.cluster_name = m.cluster AND s.name = m.service"
    " AND split_part(s.arn, ':', 5) = d.account_id AND split_part(s.arn, ':', 4) = d.region"
    " ORDER BY s.gone_at DESC NULLS FIRST LIMIT 1"
)
_FILL_DEPLOYMENTS = text(
    "UPDATE deployments AS d SET cluster_name = m.cluster, service_name = m.service,"
    " cluster_arn = coalesce(d.cluster_arn, m.cluster_arn,"
    f"  (SELECT s.cluster_arn {_SERVICE_IN_SCOPE})),"
    f" service_arn = coalesce(d.service_arn, m.arn, (SELECT s.arn {_SERVICE_IN_SCOPE}))"
    " FROM (SELECT DISTINCT ON (x.account_id, x.region, x.id) x.account_id, x.region, x.id,"
    "  m.cluster, m.service, m.arn, m.cluster_arn FROM deployments AS x"
    "  JOIN unnest(CAST(:accounts AS TEXT[]), CAST(:regions AS TEXT[]), CAST(:apps AS TEXT[]),"
    "   CAST(:grps AS TEXT[]), CAST(:clusters AS TEXT[]), CAST(:services AS TEXT[]),"
    "   CAST(:arns AS TEXT[]), CAST(:cluster_arns AS TEXT[]))"
    "   AS m(account_id, region, app, grp, cluster, service, arn, cluster_arn)"
    "  ON x.codedeploy_application = m.app AND x.codedeploy_group = m.grp"
    "  AND ((x.account_id, x.region) = (m.account_id, m.region) OR m.account_id = '*')"
    "  WHERE x.service_name IS NULL"
    "  ORDER BY x.account_id, x.region, x.id, m.account_id = '*') AS m"
    " WHERE (d.account_id, d.region, d.id) = (m.account_id, m.region, m.id)"
    " AND d.service_name IS NULL RETURNING d.account_id, d.region, d.id"
)
_IN_PROGRESS = text(
    "SELECT d.id, d.account_id, d.region FROM deployments AS d"
    f" WHERE d.kind = '{DeploymentKind.CODEDEPLOY}' AND d.outcome = '{Outcome.IN_PROGRESS}'"
    " AND d.codedeploy_application IS NOT NULL AND d.started_at >= :since"
    " ORDER BY d.started_at, d.id LIMIT :limit"
)

#: A group of one scope: (account, region, application, group).
Group = tuple[str, str, str, str]
#: The account of ``_FILL_DEPLOYMENTS``' mapping rows that hold in every scope.
EVERY_SCOPE = "*"


def _split_key(key: str, service: ServiceRef) -> Group | None:
    """The group of one scope that an override key names: that of an override by
    service ARN (:func:`~service.deployments.rows.group_key` with its scope); None for
    an override of every scope."""
    parsed = parse_arn(service.arn)
    if parsed is None:
        return None
    app, _, grp = key.split("/", 2)[2].partition("/")
    return parsed.account, parsed.region, app, grp


def group_target(info: Mapping[str, Any] | None, override: ServiceRef | None) -> GroupTarget:
    """The service and target group pair of a GetDeploymentGroup answer (pure)."""
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
    return GroupTarget(service=service, target_group_names=tuple(dict.fromkeys(names)))


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def status_row(
    info: Mapping[str, Any],
    groups: dict[str, ServiceRef],
    now: datetime,
    scope: tuple[str, str] = ("", ""),
) -> Row | None:
    """The deployment row a BatchGetDeployments answer (asked in ``scope``) means, or
    None while it is not over (pure). Ordered by its ``completeTime``, like the event
    it stands for."""
    state = STATUS_STATES.get(str(info.get("status") or ""))
    deployment_id = info.get("deploymentId")
    if state is None or not isinstance(deployment_id, str):
        return None
    error = info.get("errorInformation") or {}
    detail = ": ".join(str(p) for p in (error.get("code"), error.get("message")) if p)
    reason = f"CodeDeploy {state} (BatchGetDeployments)" + (f": {detail}" if detail else "")
    return codedeploy_deployment_row(
        scope=scope,
        deployment_id=deployment_id,
        application=info.get("applicationName"),
        group=info.get("deploymentGroupName"),
        state=state,
        at=_as_datetime(info.get("completeTime")) or now,
        event_ids=[],
        codedeploy_groups=groups,
        reason=reason[:1000],
    )


class CodeDeployMapper:
    """Maps deployment groups through CodeDeploy and checks in-progress deployments."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        apis: AwsApis,
        overrides: dict[str, ServiceRef],
        *,
        rules: AlertRules | None = None,
        ttl_s: float = MAPPING_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        scopes: AwsScopes | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._apis = apis
        self._scopes = scopes
        self._overrides = overrides
        self._rules = rules or AlertRules()
        self._ttl = ttl_s
        self._clock = clock
        self._failed: dict[Group, float] = {}  # group -> when GetDeploymentGroup last failed
        self.targets: dict[str, GroupTarget] = {}

    async def _apis_of(self, account: str | None, region: str | None) -> AwsApis | None:
        """The adapters of a deployment's scope: the home scope's when it is not known,
        None when ecswatch does not watch it."""
        if self._scopes is None or not account or not region:
            return self._apis
        return await self._scopes.apis(Scope(account, region))

    async def _lookup(
        self, application: str, group: str, apis: AwsApis | None = None
    ) -> tuple[bool, GroupTarget]:
        """(answered, target) of GetDeploymentGroup in the scope of ``apis``."""
        try:
            info = await (apis or self._apis).codedeploy.get_deployment_group(application, group)
        except (AwsCallFailed, AwsThrottled) as exc:
            log.info(
                "codedeploy_group_lookup_failed",
                group=group_key(application, group),
                error=exc.detail,
            )
            return False, GroupTarget(service=None)
        return True, group_target(info, None)

    async def map_known_groups(self, now: datetime | None = None) -> dict[str, GroupTarget]:
        """Map new and stale groups, each in its own scope; back-fill their deployments;
        raise held alerts."""
        now = now or datetime.now(UTC)
        stale = now - timedelta(seconds=self._ttl)
        async with self._sessionmaker() as session:
            groups: set[Group] = {
                (r[0], r[1], r[2], r[3]) for r in await session.execute(_TO_MAP, {"stale": stale})
            }
            fresh = {
                (r[0], r[1], r[2], r[3]) for r in await session.execute(_FRESH, {"stale": stale})
            }
        # An overridden group is mapped (for its target groups) before any of its
        # deployments is seen: in the scope of its service ARN, else in the home scope.
        home = self._scopes.home if self._scopes is not None else Scope("", "")
        for key, service in self._overrides.items():
            group = _split_key(key, service)
            if group is None:
                app, _, grp = key.partition("/")
                group = (home.account, home.region, app, grp)
            if group not in fresh:
                groups.add(group)
        clock = self._clock()
        for group in sorted(groups):
            account, region, app, grp = group
            if clock - self._failed.get(group, -FAILURE_RETRY_S) < FAILURE_RETRY_S:
                continue
            apis = await self._apis_of(account, region)
            if apis is None:
                continue  # a group of a scope ecswatch does not watch
            answered, target = await self._lookup(app, grp, apis)
            if not answered:
                self._failed[group] = clock
                continue
            self._failed.pop(group, None)
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    _STORE,
                    {
                        "account_id": account,
                        "region": region,
                        "app": app,
                        "grp": grp,
                        "cluster": target.service.cluster if target.service else None,
                        "service": target.service.service if target.service else None,
                        "tgs": json.dumps(
                            [{"name": n, "arn": None} for n in target.target_group_names]
                        ),
                        "at": now,
                    },
                )
        async with self._sessionmaker() as session, session.begin():
            targets, mapped = await self._load_targets(session)
            filled: list[DeploymentKey] = []
            if mapped:
                filled = [
                    DeploymentKey(*row)
                    for row in await session.execute(
                        _FILL_DEPLOYMENTS,
                        {
                            "accounts": [g[0] for g, _ in mapped],
                            "regions": [g[1] for g, _ in mapped],
                            "apps": [g[2] for g, _ in mapped],
                            "grps": [g[3] for g, _ in mapped],
                            "clusters": [s.cluster for _, s in mapped],
                            "services": [s.service for _, s in mapped],
                            "arns": [s.arn for _, s in mapped],
                            "cluster_arns": [cluster_of_service(s.arn) for _, s in mapped],
                        },
                    )
                ]
            raised = await release_held(session, rules=self._rules, now=now, keys=filled)
        if filled or raised:
            log.info(
                "codedeploy_deployments_mapped",
                deployments=sorted(filled),
                alerts=[(a.type.value, a.deployment_id) for a in raised],
            )
        self.targets = targets
        return targets

    async def _load_targets(
        self, session: AsyncSession
    ) -> tuple[dict[str, GroupTarget], list[tuple[Group, ServiceRef]]]:
        """Every mapped group, the overrides applied (keyed by
        :func:`~service.deployments.rows.group_key`), and the services of the groups
        (account ``*``: an override of every scope)."""
        targets: dict[str, GroupTarget] = {}
        mapped: dict[Group, ServiceRef] = {}
        for row in await session.execute(_ALL):
            scope = (row.account_id, row.region)
            key = group_key(row.application, row.deployment_group, scope)
            stored = (
                ServiceRef(row.cluster_name, row.service_name)
                if row.cluster_name and row.service_name
                else None
            )
            names = tuple(str(t.get("name")) for t in row.target_groups or [] if t.get("name"))
            service = (
                group_service(self._overrides, scope, row.application, row.deployment_group)
                or stored
            )
            targets[key] = GroupTarget(service, names)
            if service is not None:
                mapped[(*scope, row.application, row.deployment_group)] = service
        for key, service in self._overrides.items():
            targets.setdefault(key, GroupTarget(service))
            group = _split_key(key, service)
            if group is None:
                app, _, grp = key.partition("/")
                group = (EVERY_SCOPE, EVERY_SCOPE, app, grp)
            mapped[group] = service
        return targets, sorted(mapped.items(), key=lambda item: item[0])

    async def check_in_progress(self, now: datetime | None = None) -> int:
        """BatchGetDeployments for in-progress CodeDeploy deployments; apply the terminal
        ones (alerts follow). Returns how many ended."""
        now = now or datetime.now(UTC)
        async with self._sessionmaker() as session:
            by_scope: dict[tuple[str, str], list[str]] = {}
            for found_row in await session.execute(
                _IN_PROGRESS, {"since": now - CHECK_HORIZON, "limit": CHECK_LIMIT}
            ):
                by_scope.setdefault((found_row[1], found_row[2]), []).append(found_row[0])
            ids = [i for scope_ids in by_scope.values() for i in scope_ids]
            if not ids:
                return 0
            targets, _ = await self._load_targets(session)
        found: list[tuple[tuple[str, str], Any]] = []
        for (account, region), scope_ids in by_scope.items():
            apis = await self._apis_of(account, region)
            if apis is None:
                continue  # deployments of a scope ecswatch does not watch
            try:
                answers = await apis.codedeploy.batch_get_deployments(scope_ids)
                found += [((account, region), info) for info in answers]
            except (AwsCallFailed, AwsThrottled) as exc:
                if len(by_scope) == 1:
                    raise
                log.info(
                    "codedeploy_check_failed", account_id=account, region=region, error=exc.detail
                )
        groups = {k: t.service for k, t in targets.items() if t.service is not None}
        rows = [
            row
            for scope, info in found
            if (row := status_row(info, groups, now, scope)) is not None
        ]
        if not rows:
            return 0

        raised = await apply_with_alerts(
            self._sessionmaker, rows, rules=self._rules, name="codedeploy_deployments"
        )
        log.info(
            "codedeploy_deployments_checked",
            checked=len(ids),
            ended=[(row["id"], row["outcome"]) for row in rows],
            alerts=[(a.type.value, a.deployment_id) for a in raised],
        )
        return len(rows)
