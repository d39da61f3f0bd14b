"""Describe-and-write, batched: the one path from ECS Describe calls into state.

The enricher (after the consumer's commit) and the reconciler both ask
:class:`Describer` for resources by kind and cluster; the coalescing batcher
turns concurrent asks into full Describe calls, and each call's results are
written in one short transaction of their own (:mod:`service.enrich.writes`),
run again from the start if it loses a lock race with the consumer or another
writer (:func:`service.db.retry_on_contention`).

Every Describe goes to the scope (account, region) of the resource's ARN, with
that scope's clients; requests are grouped by the cluster's full ARN, so two
clusters of the same name in two scopes never share a call. A resource of a scope
ecswatch does not watch is never described (its lookup is ``failed``), and a
Describe marks gone only resources of its own scope.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.ecs import (
    DESCRIBE_CLUSTERS_LIMIT,
    DESCRIBE_CONTAINER_INSTANCES_LIMIT,
    DESCRIBE_SERVICES_LIMIT,
    DESCRIBE_TASKS_LIMIT,
    Described,
    EcsApi,
)
from service.aws.scopes import AwsScopes, Scope, scope_of_arn
from service.db import retry_on_contention
from service.enrich import writes
from service.enrich.batcher import CoalescingBatcher
from service.events.arns import parse_arn, partition_of
from service.logging import get_logger

log = get_logger(__name__)


class Kind(StrEnum):
    """What can be described."""

    CLUSTERS = "clusters"
    SERVICES = "services"
    TASKS = "tasks"
    CONTAINER_INSTANCES = "container_instances"
    TASK_DEFINITIONS = "task_definitions"


LIMITS: dict[str, int] = {
    Kind.CLUSTERS: DESCRIBE_CLUSTERS_LIMIT,
    Kind.SERVICES: DESCRIBE_SERVICES_LIMIT,
    Kind.TASKS: DESCRIBE_TASKS_LIMIT,
    Kind.CONTAINER_INSTANCES: DESCRIBE_CONTAINER_INSTANCES_LIMIT,
    Kind.TASK_DEFINITIONS: 1,  # DescribeTaskDefinition takes one
}

_ARN_KEY = {
    Kind.CLUSTERS: "clusterArn",
    Kind.SERVICES: "serviceArn",
    Kind.TASKS: "taskArn",
    Kind.CONTAINER_INSTANCES: "containerInstanceArn",
}


class State(StrEnum):
    FOUND = "found"
    MISSING = "missing"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Lookup:
    """What became of one described resource: found, missing (marked gone) or failed;
    ``changed`` when the write changed its row (drift, for reconciliation)."""

    state: State
    changed: bool = False


#: Called with (kind, cluster, arn) for a service or cluster that no Describe had
#: written before: the enricher then reconciles just that one.
OnUnknown = Callable[[str, str, str], None]


def scope_key(scope: Scope) -> str:
    """The batcher's group of a scope's clusters and task definitions: an ARN prefix."""
    return f"arn:{partition_of(scope.region)}:ecs:{scope.region}:{scope.account}:"


def group_of(kind: str, cluster: str, arn: str) -> str | None:
    """The batcher group of one request: the full cluster ARN (its scope and name), the
    scope's prefix for clusters and task definitions; None when no scope can be told."""
    parsed = parse_arn(arn)
    if kind in (Kind.CLUSTERS, Kind.TASK_DEFINITIONS):
        if parsed is None or not parsed.account or not parsed.region:
            return None
        return parsed.sibling("")
    if scope_of_arn(cluster) is not None:
        return cluster
    if parsed is None or not parsed.account or not parsed.region or not cluster:
        return None
    return parsed.sibling(f"cluster/{cluster.rpartition('/')[2]}")


def _scope_of_group(key: tuple[str, str]) -> tuple[str, ...]:
    """A batcher group's slot: its scope (the ARN's partition, region and account)."""
    return tuple(key[1].split(":")[1:5])


def _matches(requested: str, returned: str) -> bool:
    # ECS answers with full ARNs; a request may name a resource by ARN, name or id.
    return returned == requested or returned.rpartition("/")[2] == requested.rpartition("/")[2]


class Describer:
    """Describe + write behind a :class:`CoalescingBatcher`; use as an async context."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        scopes: AwsScopes,
        *,
        window_s: float = 0.05,
        max_pending: int = 10_000,
        concurrency: int = 4,
        on_unknown: OnUnknown | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.scopes = scopes
        self.on_unknown = on_unknown
        self.batcher = CoalescingBatcher(
            self._fetch,
            LIMITS,
            window_s=window_s,
            max_pending=max_pending,
            concurrency=concurrency,
            slot_of=_scope_of_group,
        )
        # Task definitions are immutable: once stored, never described again.
        self._known_definitions: OrderedDict[str, None] = OrderedDict()

    async def __aenter__(self) -> Describer:
        await self.batcher.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.batcher.close()

    async def describe(self, kind: str, cluster: str, arns: Sequence[str]) -> dict[str, Lookup]:
        """Describe ``arns`` (batched with whatever else is pending) and write the results."""
        if not arns:
            return {}
        by_group: dict[str, list[str]] = {}
        results: dict[str, Lookup] = {}
        for arn in arns:
            group = group_of(kind, cluster, arn)
            if group is None:
                results[arn] = Lookup(State.FAILED)
            else:
                by_group.setdefault(group, []).append(arn)
        for group, members in by_group.items():
            found = await self.batcher.get_many(kind, group, members)
            results.update({a: value or Lookup(State.FAILED) for a, value in found.items()})
        return results

    def monitors(self, arn: str | None) -> bool:
        """True when ecswatch watches the scope of ``arn``."""
        scope = scope_of_arn(arn)
        return scope is not None and self.scopes.monitors(scope)

    def submit(self, kind: str, cluster: str, arn: str) -> asyncio.Future[Any] | None:
        """Queue one Describe in the background; None when the batcher is full or the
        resource's scope cannot be told."""
        group = group_of(kind, cluster, arn)
        if group is None:
            return None
        return self.batcher.submit(kind, group, arn)

    def want_definition(self, arn: str) -> None:
        """Describe this task definition once, in the background (fire and forget)."""
        if arn in self._known_definitions:
            return
        future = self.submit(Kind.TASK_DEFINITIONS, "", arn)
        if future is not None:
            future.add_done_callback(_retrieve)

    async def _fetch(self, kind: str, cluster: str, arns: list[str]) -> Mapping[str, Lookup]:
        now = datetime.now(UTC)
        scope = scope_of_arn(cluster)
        apis = None if scope is None else await self.scopes.apis(scope)
        if apis is None:
            # Not a watched scope: never described, never marked gone.
            return {arn: Lookup(State.FAILED) for arn in arns}
        ecs = apis.ecs
        if kind == Kind.TASK_DEFINITIONS:
            return await self._fetch_definition(ecs, arns[0], now)
        described: Described[Any]
        if kind == Kind.TASKS:
            described = await ecs.describe_tasks(cluster, arns)
        elif kind == Kind.CONTAINER_INSTANCES:
            described = await ecs.describe_container_instances(cluster, arns)
        elif kind == Kind.SERVICES:
            described = await ecs.describe_services(cluster, arns)
        elif kind == Kind.CLUSTERS:
            described = await ecs.describe_clusters(arns)
        else:
            raise ValueError(f"cannot describe {kind!r}")
        key = _ARN_KEY[Kind(kind)]
        found: dict[str, Any] = {}
        for item in described.found:
            returned = item.get(key)
            if not isinstance(returned, str):
                continue
            for arn in arns:
                if arn not in found and _matches(arn, returned):
                    found[arn] = item
                    break
        failed = {arn for arn, _ in described.failed}
        # Not returned and not failed for another reason: ECS no longer knows it
        # (MISSING; moto leaves a missing task out altogether).
        missing = [a for a in arns if a not in found and not any(_matches(a, f) for f in failed)]
        # Only this scope's own resources can be gone from this scope's answer.
        gone_candidates = [a for a in _full_arns(missing) if scope_of_arn(a) == scope]
        items = list(found.values())
        find_unknown = kind in (Kind.SERVICES, Kind.CLUSTERS) and self.on_unknown is not None

        async def write(session: AsyncSession) -> tuple[set[str], set[str], set[str]]:
            # The whole transaction, run again from the start after a deadlock.
            unknown: set[str] = set()
            if find_unknown:
                unknown = await writes.never_described(session, kind, [str(i[key]) for i in items])
            changed, gone = await writes.write_described(session, kind, items, gone_candidates, now)
            return changed, gone, unknown

        changed, gone, unknown = await retry_on_contention(
            self._sessionmaker, write, name=f"describe_{kind}"
        )
        telemetry.ENRICHED.labels(kind).inc(len(items))
        if kind == Kind.TASKS:
            for item in items:
                definition = item.get("taskDefinitionArn")
                if isinstance(definition, str):
                    self.want_definition(definition)
        if self.on_unknown is not None:
            for arn in sorted(unknown):
                self.on_unknown(kind, cluster, arn)
        results: dict[str, Lookup] = {}
        for arn, item in found.items():
            results[arn] = Lookup(State.FOUND, changed=str(item[key]) in changed)
        for arn in missing:
            results[arn] = Lookup(State.MISSING, changed=arn in gone)
        for arn in arns:
            results.setdefault(arn, Lookup(State.FAILED))
        return results

    async def _fetch_definition(self, ecs: EcsApi, arn: str, now: datetime) -> Mapping[str, Lookup]:
        async with self._sessionmaker() as session:
            stored = await writes.stored_definitions(session, [arn])
        definition: Mapping[str, Any] | None = None
        if arn not in stored:
            definition = await ecs.describe_task_definition(arn)

        async def write(session: AsyncSession) -> int:
            if definition is not None:
                return await writes.write_task_definitions(session, [definition], now)
            if arn in stored:
                return await writes.fill_tasks_from_definitions(session, [arn])
            return 0

        await retry_on_contention(self._sessionmaker, write, name="describe_task_definitions")
        self._known_definitions[arn] = None
        if len(self._known_definitions) > 50_000:
            self._known_definitions.popitem(last=False)
        return {arn: Lookup(State.FOUND)}


def _full_arns(arns: Sequence[str]) -> list[str]:
    # gone_at is set by ARN; a bare id or name cannot match a stored row anyway.
    return [a for a in arns if a.startswith("arn:")]


def _retrieve(future: Any) -> None:
    """Done-callback of fire-and-forget requests: consume the outcome, count a failure."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        telemetry.ENRICH_DROPPED.labels("error").inc()
        log.info("describe_failed", error=f"{type(exc).__name__}: {exc}"[:300])
