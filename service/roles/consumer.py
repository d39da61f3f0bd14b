"""The ``consumer`` role: the SQS loop, its handler, and enrichment after commit."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from service.alerts.raising import rules_from_settings
from service.consumer.handler import Handler
from service.consumer.loop import Consumer
from service.enrich.describer import Describer
from service.enrich.enricher import Enricher
from service.logging import get_logger
from service.poller.reconcile import Reconciler
from service.poller.scopes import record_unmonitored
from service.runtime import Runtime

log = get_logger(__name__)


def unmonitored_recorder(runtime: Runtime) -> Callable[[str, str], None]:
    """Record, in the background, a scope whose events ecswatch cannot describe."""
    background: set[asyncio.Task[None]] = set()

    def record(account: str, region: str) -> None:
        task = asyncio.create_task(_record(account, region))
        background.add(task)
        task.add_done_callback(background.discard)

    async def _record(account: str, region: str) -> None:
        try:
            await record_unmonitored(runtime.sessionmaker, account, region)
        except Exception as exc:  # informative only: the event itself is committed
            log.info("unmonitored_not_recorded", error=f"{type(exc).__name__}: {exc}"[:300])

    return record


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
        await Consumer(runtime, queue_url, on_started=on_started).run(stop)
        return
    # Enrichment after commit: Describe calls never on the critical path.
    scopes = await runtime.aws_scopes()
    async with Describer(runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(runtime.sessionmaker, scopes, describer, clusters=settings.clusters)
        enricher = Enricher(
            describer,
            reconcile_one=reconciler.reconcile_one,
            on_unmonitored=unmonitored_recorder(runtime),
        )
        handler = Handler(
            runtime.sessionmaker,
            codedeploy_groups=settings.codedeploy_groups,
            alert_rules=rules_from_settings(settings),
            datadog=settings.datadog_enabled,
            after_commit=enricher.submit,
        )
        try:
            await Consumer(runtime, queue_url, handler=handler, on_started=on_started).run(stop)
        finally:
            await enricher.close()
