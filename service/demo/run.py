"""``ecswatch demo``: the whole system on one machine, no cloud account needed.

An embedded PostgreSQL (unless ``ECSWATCH_DATABASE_URL`` is set), moto in server
mode as the AWS endpoint (SQS queue + DLQ, EventBridge rule, as ``ecswatch aws
setup`` makes them), a simulated fleet emitting ECS events through EventBridge,
a local Datadog intake and a webhook receiver; then the consumer and the API,
exactly as ``ecswatch run`` runs them. The intake and the receiver stay idle:
what would send to them (the dispatcher role, alert raising) is not built yet.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

from aiobotocore.session import get_session

from service.aws.setup import setup_event_pipeline
from service.config import Settings
from service.demo.aws import MotoServer
from service.demo.intake import DatadogIntake
from service.demo.receiver import WebhookReceiver
from service.demo.simulator import FleetSimulator, put_events_entries
from service.logging import get_logger
from service.migrate import upgrade
from service.roles import RoleStatus
from service.runtime import aws_client_kwargs, open_runtime
from service.supervisor import run_roles

log = get_logger(__name__)

REGION = "us-east-1"
QUEUE = "ecswatch-demo"
ROLES = ("consumer", "api")


async def run_demo(
    settings: Settings, *, host: str, port: int, duration: float | None, stop: asyncio.Event
) -> None:
    """Run until ``stop`` is set or ``duration`` seconds have passed."""
    moto = MotoServer()
    await asyncio.to_thread(moto.start)
    try:
        await _with_aws(settings, moto, host=host, port=port, duration=duration, stop=stop)
    finally:
        await asyncio.to_thread(moto.stop)


async def _with_aws(
    settings: Settings,
    moto: MotoServer,
    *,
    host: str,
    port: int,
    duration: float | None,
    stop: asyncio.Event,
) -> None:
    # moto accepts any credentials; botocore still wants some in its chain.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "demo")
    token = secrets.token_urlsafe(24)
    async with DatadogIntake() as intake, WebhookReceiver() as receiver:
        demo_settings = settings.model_copy(
            update={
                "aws_endpoint_url": moto.endpoint_url,
                "aws_region": REGION,
                "api_tokens": Settings(api_tokens=f"admin:{token}").api_tokens,
                "datadog_url": intake.url,
                "webhook_allow_private": True,
                # The simulated fleet exists only as events, not in moto's ECS: a
                # Describe would find nothing and mark it gone.
                "enrich": False,
            }
        )
        session: Any = get_session()
        kwargs = aws_client_kwargs(demo_settings)
        async with (
            session.create_client("sqs", **kwargs) as sqs,
            session.create_client("events", **kwargs) as events,
        ):
            resources = await setup_event_pipeline(sqs, events, QUEUE)
            demo_settings = demo_settings.model_copy(update={"queue_url": resources.queue_url})

            async def emit(batch: list[dict[str, Any]]) -> None:
                await events.put_events(Entries=put_events_entries(batch))

            async with open_runtime(demo_settings) as runtime:
                await upgrade(runtime.engine)
                started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                status = RoleStatus()
                roles = asyncio.create_task(
                    run_roles(
                        runtime,
                        ROLES,
                        stop,
                        host=host,
                        port=port,
                        api_started=started,
                        status=status,
                    )
                )
                first: list[asyncio.Future[Any]] = [started, roles]
                await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
                # "API:" means ready: /readyz answers 200 (the consumer has reached
                # its queue, too).
                while not roles.done() and not status.all_running():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                if roles.done():
                    await roles  # raises what stopped it
                    return
                print(f"API: http://{host}:{started.result()}", flush=True)
                print(f"Token: {token}", flush=True)
                log.info(
                    "demo_ready",
                    aws_endpoint=moto.endpoint_url,
                    queue_url=resources.queue_url,
                    # Running, but idle: nothing sends to them in this build.
                    idle=(
                        f"the Datadog intake ({intake.url}) and the webhook receiver "
                        f"({receiver.url}) receive nothing: the dispatcher role and "
                        "alert raising are not built yet"
                    ),
                )
                simulator = FleetSimulator(emit)
                fleet = asyncio.create_task(simulator.run(stop))
                timer = (
                    asyncio.create_task(_stop_after(stop, duration))
                    if duration is not None
                    else None
                )
                try:
                    await roles
                finally:
                    stop.set()
                    for task in (fleet, timer):
                        if task is not None:
                            task.cancel()
                    await asyncio.gather(fleet, *([timer] if timer else []), return_exceptions=True)


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()
