"""The ``consumer`` role: the SQS loop, its handler, and enrichment after commit."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from service.alerts.raising import rules_from_settings
from service.aws.calls import AwsCallFailed
from service.aws.scopes import AwsScopes
from service.consumer.handler import Handler
from service.consumer.loop import Consumer
from service.enrich.describer import Describer
from service.enrich.enricher import Enricher
from service.logging import get_logger
from service.poller.reconcile import Reconciler
from service.runtime import Runtime

log = get_logger(__name__)


async def _watched(runtime: Runtime) -> AwsScopes | None:
    """The watched scopes, so the handler can tell an unwatched scope's events; with
    enrichment off, None when they cannot be found (then nothing is counted as
    unmonitored, and the consumer runs on)."""
    try:
        return await runtime.aws_scopes()
    except AwsCallFailed as exc:
        log.warning("watched_scopes_unknown", error=str(exc)[:300])
        return None


async def run_consumer(
    runtime: Runtime, stop: asyncio.Event, *, on_started: Callable[[], None] | None = None
) -> None:
    """The ``consumer`` role; ``on_started`` runs once its queue has answered."""
    queue_url = runtime.settings.queue_url
    if not queue_url:
        raise RuntimeError("ECSWATCH_QUEUE_URL is required for the consumer role")
    # Everything alive now (modules, the engine, clients) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise walk
    # it again and again while events churn through (measured in the ingestion
    # benchmark, docs/performance.md).
    gc.freeze()
    settings = runtime.settings
    if not settings.enrich:
        watched = await _watched(runtime)
        handler = Handler(
            runtime.sessionmaker,
            codedeploy_groups=settings.codedeploy_groups,
            alert_rules=rules_from_settings(settings),
            datadog=settings.datadog_enabled,
            monitors=watched.monitors if watched is not None else None,
        )
        await Consumer(runtime, queue_url, handler=handler, on_started=on_started).run(stop)
        return
    # Enrichment after commit: Describe calls never on the critical path.
    scopes = await runtime.aws_scopes()
    async with Describer(runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(runtime.sessionmaker, scopes, describer, clusters=settings.clusters)
        enricher = Enricher(describer, reconcile_one=reconciler.reconcile_one)
        handler = Handler(
            runtime.sessionmaker,
            codedeploy_groups=settings.codedeploy_groups,
            alert_rules=rules_from_settings(settings),
            datadog=settings.datadog_enabled,
            after_commit=enricher.submit,
            monitors=scopes.monitors,
        )
        try:
            await Consumer(runtime, queue_url, handler=handler, on_started=on_started).run(stop)
        finally:
            await enricher.close()
