"""The enricher: after the consumer commits, describe what the events left unknown.

:meth:`Enricher.submit` is called with the events of a committed batch and never
blocks or raises: it picks the resources whose tags or details ecswatch has not
fetched yet (each resource once per process; a service again at most every
``refresh_s`` when a service or deployment event says it changed), and hands
them to the :class:`~service.enrich.describer.Describer`. A full queue drops the
request (counted); throttling and errors are counted too; in every case the
event's state is already committed, tags stay unknown, and reconciliation fills
them in.

A service or cluster that no Describe had written before triggers a reconcile
of just that one (debounced), so its tasks and instances appear without waiting
for the periodic reconcile.

An event from a scope (account, region) that ecswatch does not watch is kept by
the consumer as any other, but nothing of it is described (the consumer's handler
counts it and records its scope, enrichment on or off: service.consumer.handler).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from service import telemetry
from service.aws.scopes import Scope
from service.enrich.describer import Describer, Kind
from service.events.models import (
    ContainerInstanceHealthChange,
    ContainerInstanceStateChange,
    DeploymentStateChange,
    HookStateChange,
    NormalisedEvent,
    ServiceAction,
    TaskStateChange,
)
from service.events.scopes import event_scope
from service.logging import get_logger
from service.state.rows import service_arn_of_task

log = get_logger(__name__)

#: (kind, cluster, arn, refresh): one resource to describe; ``refresh`` when the event
#: says its Describe-only details changed (a service or deployment event), so it is
#: described again (at most every ``refresh_s``), not only on first sight.
Wanted = tuple[str, str, str, bool]
#: Reconcile one cluster (service None) or one service of it.
ReconcileOne = Callable[[str, str | None], Awaitable[Any]]


def wanted_resources(event: NormalisedEvent) -> list[Wanted]:
    """What an event names that enrichment may describe (pure)."""
    detail = event.detail
    cluster = event.cluster_arn or event.cluster_name or ""
    wanted: list[Wanted] = []
    if event.cluster_arn:
        # Cluster counts move with every task: the reconciler refreshes them.
        wanted.append((Kind.CLUSTERS, "", event.cluster_arn, False))
    if not cluster:
        return wanted
    if isinstance(detail, TaskStateChange):
        wanted.append((Kind.TASKS, cluster, detail.task_arn, False))
        service_arn = service_arn_of_task(detail.task_arn, detail.cluster_name, detail.service_name)
        if service_arn:
            wanted.append((Kind.SERVICES, cluster, service_arn, False))
    elif isinstance(detail, ContainerInstanceStateChange | ContainerInstanceHealthChange):
        wanted.append((Kind.CONTAINER_INSTANCES, cluster, detail.container_instance_arn, False))
    elif (
        isinstance(detail, ServiceAction | DeploymentStateChange | HookStateChange)
        and detail.service_arn
    ):
        # Counts, deployments and rollout state changed: worth a fresh Describe.
        wanted.append((Kind.SERVICES, cluster, detail.service_arn, True))
    return wanted


class Enricher:
    """Feeds a :class:`Describer` from committed events; see the module docstring."""

    def __init__(
        self,
        describer: Describer,
        *,
        refresh_s: float = 30.0,
        remember: int = 100_000,
        reconcile_one: ReconcileOne | None = None,
        reconcile_debounce_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._describer = describer
        self._refresh_s = refresh_s
        self._remember = remember
        self._clock = clock
        # ARN -> when it was last asked for (tasks and instances: once is enough).
        self._asked: OrderedDict[str, float] = OrderedDict()
        self._reconcile_one = reconcile_one
        self._debounce_s = reconcile_debounce_s
        self._reconciled: dict[tuple[str, str | None], float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        if reconcile_one is not None:
            describer.on_unknown = self._on_unknown

    def submit(self, events: Sequence[NormalisedEvent]) -> None:
        """Queue what ``events`` name for enrichment; never blocks, never raises."""
        try:
            self._submit(events)
        except Exception as exc:  # a bug here must never touch the consumer
            log.error("enrich_submit_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    def _submit(self, events: Sequence[NormalisedEvent]) -> None:
        now = self._clock()
        for event in events:
            where = event_scope(event)
            if where is not None and not self._describer.scopes.monitors(Scope(*where)):
                continue  # an unwatched scope: never described
            for kind, cluster, arn, refresh in wanted_resources(event):
                last = self._asked.get(arn)
                if last is not None and (not refresh or now - last < self._refresh_s):
                    continue
                if not self._describer.monitors(arn):
                    continue  # a resource of another scope than the event's: never described
                future = self._describer.submit(kind, cluster, arn)
                if future is None:
                    telemetry.ENRICH_DROPPED.labels("queue_full").inc()
                    continue
                self._remember_asked(arn, now)
                future.add_done_callback(self._done(arn))
        telemetry.ENRICH_QUEUE_DEPTH.set(self._describer.batcher.pending)

    def _remember_asked(self, arn: str, now: float) -> None:
        self._asked[arn] = now
        self._asked.move_to_end(arn)
        while len(self._asked) > self._remember:
            self._asked.popitem(last=False)

    def _done(self, arn: str) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            telemetry.ENRICH_QUEUE_DEPTH.set(self._describer.batcher.pending)
            if future.cancelled():
                self._asked.pop(arn, None)
                return
            exc = future.exception()
            if exc is not None:
                # Throttled past every retry, or an error: ask again on the next event.
                self._asked.pop(arn, None)
                reason = "throttled" if "throttled" in type(exc).__name__.lower() else "error"
                telemetry.ENRICH_DROPPED.labels(reason).inc()
                log.info("enrich_failed", arn=arn, error=f"{type(exc).__name__}: {exc}"[:300])

        return done

    def _on_unknown(self, kind: str, cluster: str, arn: str) -> None:
        if self._reconcile_one is None:
            return
        if kind == Kind.CLUSTERS:
            key: tuple[str, str | None] = (arn, None)
        else:
            key = (cluster, arn)
        now = self._clock()
        last = self._reconciled.get(key)
        if last is not None and now - last < self._debounce_s:
            return
        self._reconciled[key] = now
        task = asyncio.create_task(self._reconcile(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconcile(self, key: tuple[str, str | None]) -> None:
        assert self._reconcile_one is not None
        try:
            await self._reconcile_one(*key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("targeted_reconcile_failed", target=str(key), error=str(exc)[:300])

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
