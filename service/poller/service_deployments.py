"""ECS's own record of service deployments, on the poller's leader.

For every service with a deployment not yet settled here (``in_progress``, or
``failed`` while ECS may still roll it back), started in the last
:data:`CHECK_HORIZON`, the leader lists the service's deployments
(ListServiceDeployments), matches them to its own (docs/events.md, "Service
deployments") and describes the matched ones, 20 a call
(DescribeServiceDeployments). What they say goes through the events' ordered
upsert (:func:`service.deployments.lifecycle.apply_polled`), the way the
CodeDeploy check applies BatchGetDeployments: a terminal status
(``SUCCESSFUL``, ``STOPPED``, ``ROLLBACK_SUCCESSFUL``, ``ROLLBACK_FAILED``) or
``ROLLBACK_IN_PROGRESS`` sets the outcome, with the circuit breaker's failure
count in the reason; every status adds the strategy and the triggered alarms.
The alerts of the snapshots follow, in the same transaction.

**Matching.** A deployment whose id is the service deployment ARN (native
blue/green, keyed by its hook events' ``serviceDeploymentArn``), or that was
matched before (``service_deployment_arn``), matches by ARN. Any other (a rolling
``ecs-svc/…`` deployment: its events carry no service deployment ARN) matches the
service deployment of the same service whose target service revision runs the
same task definition (DescribeServiceRevisions, 20 a call, cached: revisions are
immutable) and whose start is nearest its own, within :data:`MATCH_WINDOW`. Each
service deployment matches one deployment at most.

**Degrading.** The API is missing in older regions and partitions, and an older
IAM policy may lack it. A refusal (access denied, unknown or unsupported
operation) is logged once and the check rests for :data:`UNAVAILABLE_BACKOFF_S`
before it tries again; a service whose listing fails otherwise (deleted, say) is
skipped for that run, and throttling ends the run. Either way the other jobs of
the poll go on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.alerts.rules import AlertRules
from service.aws.apis import AwsApis
from service.aws.calls import AwsCallFailed, AwsThrottled
from service.aws.ecs import DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT
from service.aws.scopes import AwsScopes, Scope, scope_of_arn
from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.rows import Row, service_deployment_row
from service.events.arns import family_and_revision
from service.logging import get_logger
from service.poller.polled import apply_with_alerts

log = get_logger(__name__)

T = TypeVar("T")

#: How often the leader checks (seconds).
INTERVAL_S = 60.0
#: Deployments started longer ago than this are no longer checked.
CHECK_HORIZON = timedelta(days=1)
#: At most this many deployments are checked a run.
CHECK_LIMIT = 500
#: A service deployment matches a deployment by task definition only if their
#: starts are at most this far apart.
MATCH_WINDOW = timedelta(minutes=10)
#: After the API was refused, how long before it is asked again.
UNAVAILABLE_BACKOFF_S = 3600.0
#: Error codes that mean the API is not there for ecswatch (region, partition, IAM).
UNAVAILABLE_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedOperation",
        "UnknownOperationException",
        "UnsupportedFeatureException",
        "InvalidAction",
    }
)
#: Service revisions kept in memory (ARN -> task definition) before the cache restarts.
REVISION_CACHE_SIZE = 10_000
MAX_REASON = 1000

_UNSETTLED = text(
    "SELECT account_id, region, id, cluster_name, cluster_arn, service_name, service_arn,"
    " task_definition, started_at, service_deployment_arn FROM deployments"
    f" WHERE outcome IN ('{Outcome.IN_PROGRESS}', '{Outcome.FAILED}')"
    f" AND kind IN ('{DeploymentKind.ROLLING}', '{DeploymentKind.BLUE_GREEN}')"
    " AND cluster_name IS NOT NULL AND service_name IS NOT NULL"
    " AND id NOT LIKE :daemon AND started_at >= :since"
    " ORDER BY started_at, id LIMIT :limit"
)
# The service deployments already matched to (or keyed as) another deployment here.
_TAKEN = text(
    "SELECT id, service_deployment_arn FROM deployments"
    " WHERE cluster_name = :cluster AND service_name = :service AND started_at >= :after"
    # The same names in another scope are another service.
    " AND account_id = :account_id AND region = :region"
    " AND (CAST(:cluster_arn AS TEXT) IS NULL OR cluster_arn = :cluster_arn)"
    " AND id <> ALL(CAST(:ours AS TEXT[]))"
)


@dataclass(frozen=True, slots=True)
class Ours:
    """A deployment here that is not settled."""

    id: str
    started_at: datetime
    task_definition: str | None
    service_deployment_arn: str | None


@dataclass(frozen=True, slots=True)
class Theirs:
    """A service deployment as ListServiceDeployments lists it (and its revision's task
    definition once known)."""

    arn: str
    started_at: datetime | None
    revision_arn: str | None
    task_definition: str | None = None


def same_task_definition(a: str | None, b: str | None) -> bool:
    """Equal family and revision (an ARN or ``family:revision``; a missing revision
    never matches)."""
    fa, ra = family_and_revision(a)
    fb, rb = family_and_revision(b)
    return fa is not None and ra is not None and (fa, ra) == (fb, rb)


def match(
    ours: Sequence[Ours], theirs: Sequence[Theirs], taken: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Deployment id -> service deployment ARN (pure; docs/events.md).

    By ARN first (the deployment's id, or the ARN matched before); then by the target
    revision's task definition and the nearest start within :data:`MATCH_WINDOW`,
    nearest pairs first. ``taken`` are ARNs that belong to other deployments here.
    """
    listed = {t.arn: t for t in theirs}
    matched: dict[str, str] = {}
    used: set[str] = set(taken)
    for d in ours:
        for arn in (d.id, d.service_deployment_arn):
            if arn and arn in listed and arn not in used:
                matched[d.id] = arn
                used.add(arn)
                break
    pairs: list[tuple[timedelta, str, str]] = []
    for d in ours:
        if d.id in matched or d.task_definition is None:
            continue
        for t in theirs:
            if t.arn in used or t.started_at is None:
                continue
            gap = abs(t.started_at - d.started_at)
            if gap <= MATCH_WINDOW and same_task_definition(d.task_definition, t.task_definition):
                pairs.append((gap, d.id, t.arn))
    for _, deployment_id, arn in sorted(pairs):
        if deployment_id not in matched and arn not in used:
            matched[deployment_id] = arn
            used.add(arn)
    return matched


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def strategy_of(info: Mapping[str, Any]) -> str | None:
    """The deployment strategy (ROLLING, BLUE_GREEN, LINEAR, CANARY); ECS's default,
    ROLLING, when the configuration names none."""
    config = info.get("deploymentConfiguration")
    if not isinstance(config, Mapping):
        return None
    strategy = config.get("strategy")
    return str(strategy) if strategy else "ROLLING"


def reason_of(info: Mapping[str, Any], strategy: str | None) -> str:
    """The reason a described service deployment gives its deployment (pure)."""
    parts = [f"ECS service deployment {info.get('status')} (DescribeServiceDeployments)"]
    if info.get("statusReason"):
        parts[0] += f": {info['statusReason']}"
    breaker = info.get("deploymentCircuitBreaker") or {}
    if breaker.get("failureCount"):
        threshold = breaker.get("threshold")
        parts.append(
            f"circuit breaker: {breaker['failureCount']} failed tasks"
            + (f" (threshold {threshold})" if threshold else "")
        )
    triggered = triggered_alarms(info)
    if triggered:
        parts.append(f"alarms triggered: {', '.join(triggered)}")
    config = info.get("deploymentConfiguration") or {}
    bake = _bake_times(strategy, config)
    if bake:
        parts.append(bake)
    return "; ".join(parts)[:MAX_REASON]


def _bake_times(strategy: str | None, config: Mapping[str, Any]) -> str | None:
    linear = config.get("linearConfiguration") or {}
    canary = config.get("canaryConfiguration") or {}
    if strategy == "LINEAR" and linear:
        return (
            f"LINEAR {linear.get('stepPercent')}% a step, "
            f"{linear.get('stepBakeTimeInMinutes')} min bake a step"
        )
    if strategy == "CANARY" and canary:
        return (
            f"CANARY {canary.get('canaryPercent')}%, "
            f"{canary.get('canaryBakeTimeInMinutes')} min canary bake"
        )
    return None


def triggered_alarms(info: Mapping[str, Any]) -> list[str]:
    alarms = info.get("alarms") or {}
    names = alarms.get("triggeredAlarmNames") or []
    return [str(n) for n in names if isinstance(n, str)]


def described_row(
    scope: tuple[str, str],
    deployment_id: str,
    info: Mapping[str, Any],
    task_definition: str | None,
    now: datetime,
) -> Row:
    """The deployment row a DescribeServiceDeployments answer means (pure)."""
    strategy = strategy_of(info)
    alarms = info.get("alarms")
    at = (
        _as_datetime(info.get("updatedAt"))
        or _as_datetime(info.get("finishedAt"))
        or _as_datetime(info.get("stoppedAt"))
    )
    return service_deployment_row(
        scope=scope,
        deployment_id=deployment_id,
        arn=str(info["serviceDeploymentArn"]),
        status=str(info.get("status") or ""),
        at=at,
        started_at=_as_datetime(info.get("startedAt")) or _as_datetime(info.get("createdAt")),
        reason=reason_of(info, strategy),
        strategy=strategy,
        triggered_alarms=triggered_alarms(info) if isinstance(alarms, Mapping) else None,
        lifecycle_stage=info.get("lifecycleStage"),
        task_definition=task_definition,
        cluster_arn=info.get("clusterArn"),
        service_arn=info.get("serviceArn"),
        now=now,
    )


class Unavailable(Exception):
    """The API refused ecswatch (access denied, unknown or unsupported operation)."""


class ServiceDeploymentChecker:
    """Lists, matches and describes the service deployments of unsettled deployments.

    Every call goes to the scope (account, region) of the service it concerns: with
    ``scopes``, a deployment of a scope ecswatch does not watch is not asked about,
    and a scope whose role may not call these operations rests on its own while the
    others go on (docs/events.md, "Service deployments").
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        apis: AwsApis,
        *,
        scopes: AwsScopes | None = None,
        rules: AlertRules | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._apis = apis
        self._scopes = scopes
        self._rules = rules or AlertRules()
        self._clock = clock
        #: Scopes whose API was refused, and until when they rest.
        self._resting: dict[Scope | None, float] = {}
        self._revisions: dict[str, str | None] = {}

    @property
    def resting(self) -> bool:
        """Whether the API was refused in some scope and the check rests there."""
        now = self._clock()
        return any(now < until for until in self._resting.values())

    def _rests(self, scope: Scope | None) -> bool:
        until = self._resting.get(scope)
        return until is not None and self._clock() < until

    async def _apis_of(self, scope: Scope | None) -> AwsApis | None:
        """The adapters of ``scope``; None when ecswatch does not watch it."""
        if self._scopes is None or scope is None:
            return self._apis
        return await self._scopes.apis(scope)

    async def check(self, now: datetime | None = None) -> int:
        """One run: how many deployments ECS's record was applied to."""
        now = now or datetime.now(UTC)
        rows = await self._rows(now)
        if not rows:
            return 0

        raised = await apply_with_alerts(
            self._sessionmaker, rows, rules=self._rules, name="service_deployments"
        )
        log.info(
            "service_deployments_checked",
            applied=[(row["id"], row["last_event_name"]) for row in rows],
            alerts=[(a.type.value, a.deployment_id) for a in raised],
        )
        return len(rows)

    async def _call(self, call: Awaitable[T]) -> T:
        """``await call``; a refusal of the API becomes :class:`Unavailable`."""
        try:
            return await call
        except AwsCallFailed as exc:
            if exc.code in UNAVAILABLE_CODES:
                raise Unavailable(exc.detail) from exc
            raise

    async def _rows(self, now: datetime) -> list[Row]:
        async with self._sessionmaker() as session:
            found = list(
                await session.execute(
                    _UNSETTLED,
                    {
                        "since": now - CHECK_HORIZON,
                        "limit": CHECK_LIMIT,
                        # Daemon deployments have no service deployment record.
                        "daemon": "%:daemon-deployment/%",
                    },
                )
            )
        # A service is known by its ARNs: names are unique only within a scope.
        by_scope: dict[Scope | None, dict[tuple[str, str], list[Any]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for row in found:
            scope = (
                Scope(row.account_id, row.region)
                if row.account_id and row.region
                else scope_of_arn(row.service_arn) or scope_of_arn(row.cluster_arn)
            )
            key = (row.cluster_arn or row.cluster_name, row.service_arn or row.service_name)
            by_scope[scope][key].append(row)
        out: list[Row] = []
        for scope, services in sorted(by_scope.items(), key=lambda item: str(item[0])):
            if self._rests(scope):
                continue
            apis = await self._apis_of(scope)
            if apis is None:  # a scope ecswatch holds no credentials for
                continue
            try:
                out += await self._scope_rows(apis, services, now)
            except Unavailable as exc:
                if scope not in self._resting:  # once per outage, not once per run
                    log.warning(
                        "service_deployments_unavailable",
                        scope=str(scope) if scope else None,
                        error=str(exc)[:300],
                        retry_in_s=UNAVAILABLE_BACKOFF_S,
                    )
                self._resting[scope] = self._clock() + UNAVAILABLE_BACKOFF_S
                continue
            except (AwsCallFailed, AwsThrottled) as exc:
                log.info(
                    "service_deployments_check_failed",
                    scope=str(scope) if scope else None,
                    error=str(exc)[:300],
                )
                continue
            if self._resting.pop(scope, None) is not None:
                log.info("service_deployments_available", scope=str(scope) if scope else None)
        return out

    async def _scope_rows(
        self, apis: AwsApis, services: dict[tuple[str, str], list[Any]], now: datetime
    ) -> list[Row]:
        """The described rows of one scope's unsettled deployments."""
        matched: dict[str, tuple[str, str | None]] = {}  # id -> (arn, task definition)
        for _, rows in sorted(services.items()):
            try:
                matched.update(await self._match_service(apis, rows))
            except AwsCallFailed as exc:  # e.g. the service was deleted: the others go on
                if exc.code in UNAVAILABLE_CODES:
                    raise Unavailable(exc.detail) from exc
                log.info(
                    "service_deployments_list_failed",
                    cluster=rows[0].cluster_name,
                    service=rows[0].service_name,
                    error=exc.detail[:300],
                )
        if not matched:
            return []
        by_arn = {arn: (deployment_id, td) for deployment_id, (arn, td) in matched.items()}
        ours = {row.id: row for rows in services.values() for row in rows}
        by_row = {arn: ours[deployment_id] for arn, (deployment_id, _) in by_arn.items()}
        arns = sorted(by_arn)
        out: list[Row] = []
        for start in range(0, len(arns), DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT):
            chunk = arns[start : start + DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT]
            described = await self._call(apis.ecs.describe_service_deployments(chunk))
            for info in described.found:
                arn = info.get("serviceDeploymentArn")
                if arn in by_arn:
                    row = by_row[arn]
                    scope = (row.account_id, row.region)
                    out.append(described_row(scope, row.id, info, by_arn[arn][1], now))
        return out

    async def _match_service(
        self, apis: AwsApis, rows: Sequence[Any]
    ) -> dict[str, tuple[str, str | None]]:
        ours = [Ours(r.id, r.started_at, r.task_definition, r.service_deployment_arn) for r in rows]
        after = min(d.started_at for d in ours) - MATCH_WINDOW
        first = rows[0]
        cluster, service = first.cluster_name, first.service_name
        listed = await self._call(
            apis.ecs.list_service_deployments(
                first.cluster_arn or cluster,
                first.service_arn or service,
                created_after=after,
            )
        )
        theirs = [
            Theirs(
                arn=str(item["serviceDeploymentArn"]),
                started_at=_as_datetime(item.get("startedAt"))
                or _as_datetime(item.get("createdAt")),
                revision_arn=item.get("targetServiceRevisionArn"),
            )
            for item in listed
            if item.get("serviceDeploymentArn")
        ]
        if not theirs:
            return {}
        async with self._sessionmaker() as session:
            taken = frozenset(
                str(arn)
                for row in await session.execute(
                    _TAKEN,
                    {
                        "cluster": cluster,
                        "service": service,
                        "cluster_arn": first.cluster_arn,
                        "account_id": first.account_id,
                        "region": first.region,
                        "after": after,
                        "ours": [d.id for d in ours],
                    },
                )
                for arn in (row.id, row.service_deployment_arn)
                if arn
            )
        by_arn = match(ours, theirs, taken)
        unmatched = [d for d in ours if d.id not in by_arn and d.task_definition]
        if unmatched:
            # Only revisions of candidates near an unmatched deployment's start.
            near = [
                t
                for t in theirs
                if t.arn not in taken
                and t.arn not in by_arn.values()
                and t.started_at is not None
                and any(abs(t.started_at - d.started_at) <= MATCH_WINDOW for d in unmatched)
            ]
            await self._load_revisions(apis, [t.revision_arn for t in near if t.revision_arn])
            theirs = [
                Theirs(t.arn, t.started_at, t.revision_arn, self._revisions.get(t.revision_arn))
                if t.revision_arn
                else t
                for t in theirs
            ]
            by_arn = match(ours, theirs, taken)
        revision_of = {t.arn: t.task_definition for t in theirs}
        return {d: (arn, revision_of.get(arn)) for d, arn in by_arn.items()}

    async def _load_revisions(self, apis: AwsApis, arns: Sequence[str]) -> None:
        """Task definitions of service revisions not yet known, 20 a call."""
        missing = sorted({a for a in arns if a not in self._revisions})
        if len(self._revisions) + len(missing) > REVISION_CACHE_SIZE:
            self._revisions.clear()
        for start in range(0, len(missing), DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT):
            chunk = missing[start : start + DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT]
            described = await self._call(apis.ecs.describe_service_revisions(chunk))
            for revision in described.found:
                arn = revision.get("serviceRevisionArn")
                if arn:
                    self._revisions[arn] = revision.get("taskDefinition")
            for arn in described.missing:
                self._revisions[arn] = None
