"""``ecswatch demo``: the whole system on one machine, no cloud account needed.

An embedded PostgreSQL (unless ``ECSWATCH_DATABASE_URL`` is set), moto in server
mode as the AWS endpoint (SQS queue + DLQ, EventBridge rule, as ``ecswatch aws
setup`` makes them), a simulated fleet emitting ECS events through EventBridge,
a local Datadog intake and a webhook receiver; then the consumer, the dispatcher
and the API, exactly as ``ecswatch run`` runs them. The receiver is subscribed to
every alert type; each alert it receives with a valid signature is printed as a
``Webhook:`` line (the failing deployment's ``deployment.failed`` among them).
Datadog forwarding is on (a demo key, the local intake, a 10 s metrics interval):
``Datadog intake: …`` lines show the series and events it has received so far,
and one ``Datadog event: …`` line is printed per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from typing import Any

from aiobotocore.session import get_session
from pydantic import SecretStr
from sqlalchemy import text

from service.alerts.rules import AlertType
from service.api.routes.webhooks import new_secret
from service.aws.setup import setup_event_pipeline
from service.config import Settings
from service.demo.aws import MotoServer
from service.demo.intake import DatadogIntake
from service.demo.receiver import WebhookReceiver
from service.demo.simulator import FleetSimulator, put_events_entries
from service.logging import get_logger
from service.migrate import upgrade
from service.roles import RoleStatus
from service.runtime import Runtime, aws_client_kwargs, open_runtime
from service.supervisor import run_roles

log = get_logger(__name__)

REGION = "us-east-1"
QUEUE = "ecswatch-demo"
ROLES = ("consumer", "dispatcher", "api")
#: The demo's own subscription: one row, re-pointed at this run's receiver.
DEMO_WEBHOOK_ID = "wh_demo"
DEMO_WEBHOOK_PATH = "/ecswatch-demo"
# Datadog in the demo: the local intake, a demo key, gauges every 10 s.
DEMO_DATADOG_KEY = "demo-api-key"
DEMO_METRICS_INTERVAL_S = 10


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
                "dd_api_key": SecretStr(DEMO_DATADOG_KEY),
                "metrics_interval_s": DEMO_METRICS_INTERVAL_S,
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
                await _subscribe_receiver(runtime, receiver)
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
                    webhook_receiver=receiver.url + DEMO_WEBHOOK_PATH,
                    datadog_intake=intake.url,
                )
                simulator = FleetSimulator(emit)
                fleet = asyncio.create_task(simulator.run(stop))
                watcher = asyncio.create_task(_print_alerts(receiver, stop))
                reporter = asyncio.create_task(report_intake(intake, stop))
                timer = (
                    asyncio.create_task(_stop_after(stop, duration))
                    if duration is not None
                    else None
                )
                try:
                    await roles
                finally:
                    stop.set()
                    for task in (fleet, timer, watcher, reporter):
                        if task is not None:
                            task.cancel()
                    await asyncio.gather(
                        fleet,
                        watcher,
                        reporter,
                        *([timer] if timer else []),
                        return_exceptions=True,
                    )


async def _subscribe_receiver(runtime: Runtime, receiver: WebhookReceiver) -> None:
    """Subscribe this run's receiver to every alert type (one row, kept across runs)."""
    secret = new_secret()
    url = receiver.expect(DEMO_WEBHOOK_PATH, secret)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, url, events, secret, active)"
                " VALUES (:id, :url, CAST(:events AS jsonb), :secret, true)"
                " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                " events = excluded.events, secret = excluded.secret, active = true"
            ),
            {
                "id": DEMO_WEBHOOK_ID,
                "url": url,
                "events": json.dumps([t.value for t in AlertType]),
                "secret": secret,
            },
        )
        # Deliveries queued for an earlier run's receiver (gone now) go to this one.
        await session.execute(
            text(
                "UPDATE outbox SET next_attempt_at = now() WHERE status = 'pending'"
                " AND kind = 'webhook' AND payload->>'webhook_id' = :id"
            ),
            {"id": DEMO_WEBHOOK_ID},
        )


async def _print_alerts(receiver: WebhookReceiver, stop: asyncio.Event) -> None:
    """Print each alert the receiver verified, as it arrives."""
    shown = 0
    while not stop.is_set():
        records = receiver.deliveries
        for delivery in records[shown:]:
            body = delivery.json if isinstance(delivery.json, dict) else {}
            if delivery.verified and 200 <= delivery.status < 300:
                deployment = body.get("deployment") or {}
                print(
                    f"Webhook: {body.get('type')} {deployment.get('id') or '-'}"
                    f" (signature verified): {body.get('summary')}",
                    flush=True,
                )
        shown = len(records)
        await asyncio.sleep(0.2)


async def report_intake(intake: DatadogIntake, stop: asyncio.Event, every_s: float = 2.0) -> None:
    """Print what the local Datadog intake has received, when it changes."""
    shown_events = 0
    last: tuple[int, int] = (0, 0)
    while not stop.is_set():
        events = intake.events()
        for event in events[shown_events:]:
            print(f"Datadog event: [{event.get('alert_type')}] {event.get('title')}", flush=True)
        shown_events = len(events)
        series = intake.series()
        now = (len(series), len(events))
        if now != last:
            points = sum(len(s.get("points", [])) for s in series)
            names = len({s.get("metric") for s in series})
            print(
                f"Datadog intake: {len(series)} series ({points} points, {names} metrics)"
                f" and {len(events)} events received",
                flush=True,
            )
            last = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()
