"""Runs the selected roles in one process and stops them together.

A role is a coroutine that returns when the shared ``stop`` event is set. If one
role fails, the others are stopped and the failure is raised, so that the
process exits non-zero and an orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from service.errors import EcswatchError
from service.logging import get_logger
from service.readiness import RoleStatus
from service.runtime import Runtime

log = get_logger(__name__)


async def run_roles(
    runtime: Runtime,
    roles: tuple[str, ...],
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_started: asyncio.Future[int] | None = None,
    status: RoleStatus | None = None,
) -> None:
    """Start ``roles`` and supervise them until ``stop`` is set or one fails."""
    from service.roles.api import serve_api
    from service.roles.consumer import run_consumer

    status = status or RoleStatus()
    status.running.update({r: False for r in roles})
    tasks: dict[str, asyncio.Task[None]] = {}
    if "consumer" in roles:
        # Running (for /readyz) once its queue answered, not while it waits for it.
        tasks["consumer"] = asyncio.create_task(
            run_consumer(runtime, stop, on_started=lambda: status.running.update(consumer=True))
        )
    if "dispatcher" in roles:
        from service.roles.dispatcher import run_dispatcher

        tasks["dispatcher"] = asyncio.create_task(
            run_dispatcher(runtime, stop, on_started=lambda: status.running.update(dispatcher=True))
        )
    if {"consumer", "dispatcher"} & set(roles) and not runtime.settings.datadog_enabled:
        log.warning("datadog_forwarding_off", reason="DD_API_KEY is not set")  # said once
    if "dispatcher" in roles and runtime.settings.datadog_enabled:
        # Datadog: state gauges, CloudWatch points and time facts into the outbox.
        from service.roles.dispatcher import run_datadog_job

        tasks["datadog"] = asyncio.create_task(run_datadog_job(runtime, stop))
    if "poller" in roles:
        from service.roles.poller import run_poller

        # Never blocks readiness: running from the start, leader or follower.
        tasks["poller"] = asyncio.create_task(run_poller(runtime, stop))
        status.running["poller"] = True
    if "api" in roles:
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        tasks["api"] = asyncio.create_task(
            serve_api(runtime, stop, host=host, port=port, roles=status, started=started)
        )
        first: list[asyncio.Future[Any]] = [started, tasks["api"]]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            status.running["api"] = True
            log.info("api_listening", url=f"http://{host}:{started.result()}")
            if api_started is not None and not api_started.done():
                api_started.set_result(started.result())
    log.info("ecswatch_started", roles=list(roles))
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name in tasks:
        status.running[name] = False
    waiter.cancel()
    for name, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException):
            raise EcswatchError(f"role {name} failed: {result}") from result
    log.info("ecswatch_stopped")
