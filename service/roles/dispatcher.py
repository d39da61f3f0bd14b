"""The ``dispatcher`` role: the senders this process has, the dispatcher loop, its
sweeps (stuck deployments, held CodeDeploy alerts), and the Datadog job.

:func:`build_senders` is the one place that decides which :class:`Sender` serves
which outbox kind. To add one, append it to the list there; a kind with no
sender is left pending in the outbox, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

from service.alerts.raising import release_held, rules_from_settings, sweep_stuck
from service.alerts.webhooks import WebhookSender
from service.datadog.forwarder import open_datadog_senders
from service.datadog.gauges import DatadogJob
from service.logging import get_logger
from service.outbox.dispatcher import Dispatcher, build_registry
from service.outbox.models import OutboxKind
from service.outbox.retry import RetryPolicy
from service.outbox.sender import Sender
from service.runtime import Runtime

log = get_logger(__name__)

STUCK_SWEEP_INTERVAL_S = 30.0


async def build_senders(runtime: Runtime, stack: AsyncExitStack) -> dict[OutboxKind, Sender]:
    """Every sender of this process, by kind; ``stack`` closes what they open."""
    senders: list[Sender] = [
        await stack.enter_async_context(WebhookSender.open(runtime)),
        # Datadog's two senders (metrics, events); none when DD_API_KEY is unset.
        *await stack.enter_async_context(open_datadog_senders(runtime.settings)),
    ]
    return build_registry(senders)


def build_dispatcher(runtime: Runtime, senders: dict[OutboxKind, Sender]) -> Dispatcher:
    """A dispatcher with the runtime's settings."""
    settings = runtime.settings
    return Dispatcher(
        runtime.engine,
        runtime.sessionmaker,
        senders,
        policy=RetryPolicy(
            base_s=settings.dispatch_retry_base_s, budget_s=settings.dispatch_retry_budget_s
        ),
        batch_size=settings.dispatch_batch_size,
        poll_interval_s=settings.dispatch_poll_interval_s,
        lease_s=settings.dispatch_lease_s,
        grace_s=settings.shutdown_grace_s,
    )


async def run_dispatcher(
    runtime: Runtime, stop: asyncio.Event, *, on_started: Callable[[], None] | None = None
) -> None:
    """Run the dispatcher until ``stop`` is set."""
    async with AsyncExitStack() as stack:
        senders = await build_senders(runtime, stack)
        dispatcher = build_dispatcher(runtime, senders)
        log.info("dispatcher_started", kinds=sorted(k.value for k in senders))
        if on_started is not None:
            on_started()
        sweeper = asyncio.create_task(sweep_stuck_deployments(runtime, stop))
        try:
            await dispatcher.run(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
    log.info("dispatcher_stopped")


async def sweep_stuck_deployments(
    runtime: Runtime, stop: asyncio.Event, *, interval_s: float = STUCK_SWEEP_INTERVAL_S
) -> None:
    """Flag stuck deployments (and raise ``deployment.stuck``) every ``interval_s``.

    Being stuck is a matter of time passing without an event, so no event can
    decide it; the sweep is idempotent, several dispatchers may run it.
    """
    rules = rules_from_settings(runtime.settings)
    while not stop.is_set():
        try:
            async with runtime.sessionmaker() as session, session.begin():
                flagged = await sweep_stuck(session, rules=rules, now=datetime.now(UTC))
            if flagged:
                log.info("deployments_stuck", deployments=flagged)
            # CodeDeploy alerts held for a group mapping that no poller made in time.
            async with runtime.sessionmaker() as session, session.begin():
                released = await release_held(session, rules=rules, now=datetime.now(UTC))
            if released:
                log.info("held_alerts_raised", alerts=[a.deployment_id for a in released])
        except Exception as exc:
            log.warning("stuck_sweep_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run_datadog_job(runtime: Runtime, stop: asyncio.Event) -> None:
    """Datadog's periodic job (state gauges, CloudWatch points, time facts into the
    outbox) on the runtime's database, every ``ECSWATCH_METRICS_INTERVAL_S``."""
    job = DatadogJob(runtime.sessionmaker, interval_s=runtime.settings.metrics_interval_s)
    await job.run(stop)
