"""``ecswatch demo``: the whole system on one machine, no cloud account needed.

An embedded PostgreSQL (unless ``ECSWATCH_DATABASE_URL`` is set), moto in server
mode as the AWS endpoint (SQS queue + DLQ, EventBridge rule, as ``ecswatch aws
setup`` makes them), a simulated fleet emitting ECS events through EventBridge,
a local Datadog intake and a webhook receiver; then the consumer, the dispatcher
and the API, exactly as ``ecswatch run`` runs them. The receiver is subscribed to
every alert type; each alert it receives with a valid signature is printed as a
``Webhook:`` line (the failing deployments' ``deployment.failed`` among them, each
ending with its classified cause: an image that cannot be pulled, a container
killed for memory).
Datadog forwarding is on (a demo key, the local intake, a 10 s metrics interval),
and the demo prints what the intake receives: ``Datadog intake: …`` lines with
the series and events so far, and one ``Datadog event: …`` line per event.

The fleet lives in moto (:mod:`service.demo.fleet`): clusters, container
instances, tagged services, an ALB with a blue/green target group pair, a
CodeDeploy deployment group, and tasks started with RunTask, so enrichment and
the poller (reconciliation every 30 s, CloudWatch every 10 s) describe what
the events name. The demo watches two accounts in two regions
(:mod:`service.demo.scopes`, ``ECSWATCH_ACCOUNTS`` and ``ECSWATCH_REGIONS``, every
account by ``sts:AssumeRole``): the story runs in the home scope, and each other
scope holds a small healthy fleet whose events reach the same central queue.
CloudWatch points for ECS and the ALB go into moto every
minute (and the last five minutes' at start, so the first poll finds some).
On a terminal the demo draws a live summary with ``rich`` (logs go to
``.ecswatch/demo.log``); otherwise it prints plain lines. Either way it ends
with a final summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from aiobotocore.session import get_session
from pydantic import SecretStr
from sqlalchemy import text

from service.alerts.rules import AlertType
from service.api.routes.webhooks import new_secret
from service.aws.setup import setup_event_pipeline
from service.cipher import cipher_for
from service.config import ServiceRef, Settings
from service.demo import summary
from service.demo.aws import MotoServer
from service.demo.fleet import (
    CODEDEPLOY_APP,
    CODEDEPLOY_GROUP,
    FARGATE_CLUSTER,
    Fleet,
    build_fleet,
    metric_data,
)
from service.demo.intake import DatadogIntake
from service.demo.receiver import WebhookReceiver
from service.demo.scopes import ACCOUNTS, EXTERNAL_ID, REGIONS, build_other_scopes
from service.demo.simulator import BAD_ROLLOUT, FleetSimulator, put_events_entries
from service.logging import get_logger
from service.migrate import upgrade
from service.readiness import RoleStatus
from service.roles.supervisor import run_roles
from service.runtime import Runtime, aws_client_kwargs, open_runtime

log = get_logger(__name__)

REGION = "us-east-1"
QUEUE = "ecswatch-demo"
ROLES = ("consumer", "poller", "dispatcher", "api")
#: The demo's own subscription: one row, re-pointed at this run's receiver.
DEMO_WEBHOOK_ID = "wh_demo"
DEMO_WEBHOOK_PATH = "/ecswatch-demo"
# Datadog in the demo: the local intake, a demo key, gauges every 10 s.
DEMO_DATADOG_KEY = "demo-api-key"
DEMO_METRICS_INTERVAL_S = 10
# The poller in the demo: reconciliation every 30 s (CloudWatch every 10 s, above).
DEMO_RECONCILE_INTERVAL_S = 30
#: How often moto's CloudWatch gets the minute's points, and how many at start.
METRICS_PUT_EVERY_S = 60.0
METRICS_BACKFILL_MINUTES = 5


async def run_demo(
    settings: Settings, *, host: str, port: int, duration: float | None, stop: asyncio.Event
) -> None:
    """Run until ``stop`` is set or ``duration`` seconds have passed."""
    log_file = _logs_to_file(settings.data_dir) if sys.stdout.isatty() else None
    moto = MotoServer()
    await asyncio.to_thread(moto.start)
    await asyncio.to_thread(moto.pin_ecs_tasks)
    try:
        await _with_aws(
            settings, moto, host=host, port=port, duration=duration, stop=stop, log_file=log_file
        )
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
    log_file: Path | None,
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
                "reconcile_interval_s": DEMO_RECONCILE_INTERVAL_S,
                # Two accounts in two regions (service.demo.scopes), each by AssumeRole.
                "accounts": ACCOUNTS,
                "regions": REGIONS,
                "external_id": EXTERNAL_ID,
                # The consumer names the service of a CodeDeploy event at once; the
                # poller's GetDeploymentGroup would only fill it at its next run.
                "codedeploy_groups": {
                    **settings.codedeploy_groups,
                    f"{CODEDEPLOY_APP}/{CODEDEPLOY_GROUP}": ServiceRef(FARGATE_CLUSTER, "checkout"),
                },
            }
        )
        session: Any = get_session()
        kwargs = aws_client_kwargs(demo_settings)
        async with (
            session.create_client("sqs", **kwargs) as sqs,
            session.create_client("events", **kwargs) as events,
            session.create_client("ec2", **kwargs) as ec2,
            session.create_client("ecs", **kwargs) as ecs,
            session.create_client("elbv2", **kwargs) as elbv2,
            session.create_client("codedeploy", **kwargs) as codedeploy,
            session.create_client("cloudwatch", **kwargs) as cloudwatch,
            session.create_client("sts", **kwargs) as sts,
        ):
            resources = await setup_event_pipeline(sqs, events, QUEUE)
            fleet = await build_fleet(ec2, ecs, elbv2, codedeploy, region=REGION)

            async def forward(batch: list[dict[str, Any]]) -> None:
                # What the central bus's rule delivers: each event whole, as sent.
                for start in range(0, len(batch), 10):
                    await sqs.send_message_batch(
                        QueueUrl=resources.queue_url,
                        Entries=[
                            {"Id": str(n), "MessageBody": json.dumps(e)}
                            for n, e in enumerate(batch[start : start + 10])
                        ],
                    )

            await build_other_scopes(session, sts, kwargs, forward)
            metrics_put_until = await put_metrics(
                cloudwatch, fleet, minutes=METRICS_BACKFILL_MINUTES
            )
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
                api = f"http://{host}:{started.result()}"
                print(f"API: {api}", flush=True)
                print(f"Token: {token}", flush=True)
                for line in how_to_try(api, token):
                    print(line, flush=True)
                log.info(
                    "demo_ready",
                    aws_endpoint=moto.endpoint_url,
                    queue_url=resources.queue_url,
                    webhook_receiver=receiver.url + DEMO_WEBHOOK_PATH,
                    datadog_intake=intake.url,
                )
                simulator = FleetSimulator(emit, ecs, codedeploy, fleet)
                began, since = time.monotonic(), datetime.now(UTC)
                live = _live_console(log_file) if log_file is not None else None
                recent: list[str] = []
                story = asyncio.create_task(simulator.run(stop))
                metrics = asyncio.create_task(
                    _metrics_every_minute(cloudwatch, fleet, stop, metrics_put_until)
                )
                outputs: list[asyncio.Task[None]]
                if live is None:
                    outputs = [
                        asyncio.create_task(_print_alerts(receiver, stop)),
                        asyncio.create_task(report_intake(intake, stop)),
                    ]
                else:
                    outputs = [
                        asyncio.create_task(
                            _draw_live(live, runtime, receiver, intake, began, since, stop, recent)
                        )
                    ]
                timer = (
                    asyncio.create_task(_stop_after(stop, duration))
                    if duration is not None
                    else None
                )
                try:
                    await roles
                finally:
                    stop.set()
                    for task in (story, metrics, timer, *outputs):
                        if task is not None:
                            task.cancel()
                    await asyncio.gather(
                        story,
                        metrics,
                        *outputs,
                        *([timer] if timer else []),
                        return_exceptions=True,
                    )
                    await _final_summary(runtime, receiver, intake, began, since, live, recent)


async def _subscribe_receiver(runtime: Runtime, receiver: WebhookReceiver) -> None:
    """Subscribe this run's receiver to every alert type (one row, kept across runs)."""
    secret = new_secret()
    url = receiver.expect(DEMO_WEBHOOK_PATH, secret)
    cipher = cipher_for(runtime.settings)  # stored encrypted, as the API stores them
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, url, events, secret, active)"
                " VALUES (:id, :url, CAST(:events AS jsonb), :secret, true)"
                " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                " events = excluded.events, secret = excluded.secret, active = true,"
                " previous_secret = NULL, previous_secret_expires_at = NULL"
            ),
            {
                "id": DEMO_WEBHOOK_ID,
                "url": cipher.encrypt(url),
                "events": json.dumps([t.value for t in AlertType]),
                "secret": cipher.encrypt(secret),
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


def alert_line(body: dict[str, Any], *, verified: str = " (signature verified)") -> str:
    """The ``Webhook:`` line of a verified alert body: its type, deployment and summary,
    and the classified cause of a failure (docs/alerts.md, "Why it failed")."""
    deployment = body.get("deployment") or {}
    what = f"{body.get('type')} {deployment.get('id') or '-'}"
    line = f"Webhook: {what}{verified}: {body.get('summary')}"
    cause = deployment.get("cause") or {}
    if cause.get("category"):
        line += f" | cause: {cause['category']}: {cause.get('summary')}"
    if body.get("recovers"):
        line += f" | recovers {body['recovers']}"
    return line


async def _print_alerts(receiver: WebhookReceiver, stop: asyncio.Event) -> None:
    """Print each alert the receiver verified, as it arrives."""
    shown = 0
    while not stop.is_set():
        records = receiver.deliveries
        for delivery in records[shown:]:
            body = delivery.json if isinstance(delivery.json, dict) else {}
            if delivery.verified and 200 <= delivery.status < 300:
                print(alert_line(body), flush=True)
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


def how_to_try(api: str, token: str) -> list[str]:
    """The lines printed after ``API:`` and ``Token:``: the docs and copy-paste curls."""
    auth = f'-H "Authorization: Bearer {token}"'
    paths = (
        "/v1/accounts",
        "/v1/clusters",
        "/v1/services?cluster=demo-fargate",
        "/v1/tasks?last_status=STOPPED",
        "/v1/container-instances?cluster=demo-ec2",
        "/v1/deployments?outcome=rolled_back",
        # The rolled-back deployment with its cause, timeline and failed tasks.
        f"/v1/deployments/{quote(BAD_ROLLOUT, safe='')}",
        "/v1/metrics?namespace=AWS/ApplicationELB",
        "/v1/alerts",
    )
    return [f"Docs: {api}/docs", "Try:"] + [f"  curl -s {auth} '{api}{p}'" for p in paths]


async def put_metrics(cloudwatch: Any, fleet: Fleet, *, minutes: int = 1) -> datetime:
    """Put the last ``minutes`` whole minutes of ECS and ALB points into CloudWatch.

    Returns the end of the last minute put (the current minute's start).
    """
    now = datetime.now(UTC)
    for namespace, data in metric_data(fleet, now, minutes=minutes):
        for start in range(0, len(data), 150):  # PutMetricData: 1,000 items, 1 MB
            await cloudwatch.put_metric_data(
                Namespace=namespace, MetricData=data[start : start + 150]
            )
    return now.replace(second=0, microsecond=0)


async def _metrics_every_minute(
    cloudwatch: Any, fleet: Fleet, stop: asyncio.Event, done_until: datetime
) -> None:
    """Each minute, put the whole minutes not put yet (never one twice: Sums would double)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), METRICS_PUT_EVERY_S)
        if stop.is_set():
            return
        due = int((datetime.now(UTC) - done_until).total_seconds() // 60)
        if due < 1:
            continue
        try:
            done_until = await put_metrics(cloudwatch, fleet, minutes=due)
        except Exception as exc:  # the next minute tries again
            log.warning("demo_metrics_put_failed", error=f"{type(exc).__name__}: {exc}")


def _logs_to_file(data_dir: Path) -> Path:
    """On a terminal the live summary owns the screen: logs go to ``data_dir/demo.log``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "demo.log"
    stream: TextIO = path.open("a", encoding="utf-8")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.__stderr__,
        ):
            handler.setStream(stream)
    return path


def _live_console(log_file: Path) -> Any:
    """The rich Console the live summary is drawn on (stdout is a terminal)."""
    from rich.console import Console

    console = Console()
    console.print(f"Logs: {log_file}")
    return console


async def _draw_live(
    console: Any,
    runtime: Runtime,
    receiver: WebhookReceiver,
    intake: DatadogIntake,
    began: float,
    since: datetime,
    stop: asyncio.Event,
    recent: list[str],
) -> None:
    """Redraw the summary every second, with the latest verified alerts and Datadog events."""
    from rich.live import Live

    shown_alerts = shown_events = 0
    with Live(console=console, refresh_per_second=2, transient=True) as live:
        while not stop.is_set():
            for delivery in receiver.deliveries[shown_alerts:]:
                body = delivery.json if isinstance(delivery.json, dict) else {}
                if delivery.verified and 200 <= delivery.status < 300:
                    recent.append(alert_line(body, verified=""))
            shown_alerts = len(receiver.deliveries)
            for event in intake.events()[shown_events:]:
                recent.append(f"Datadog event: [{event.get('alert_type')}] {event.get('title')}")
            shown_events = len(intake.events())
            del recent[:-8]
            try:
                numbers = await summary.collect(
                    runtime.engine,
                    receiver,
                    intake,
                    since=since,
                    elapsed_s=time.monotonic() - began,
                )
            except Exception as exc:  # a busy database skips one redraw
                log.warning("demo_summary_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                live.update(summary.render(numbers, title="ecswatch demo", recent=recent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def _final_summary(
    runtime: Runtime,
    receiver: WebhookReceiver,
    intake: DatadogIntake,
    began: float,
    since: datetime,
    console: Any,
    recent: list[str],
) -> None:
    try:
        numbers = await summary.collect(
            runtime.engine, receiver, intake, since=since, elapsed_s=time.monotonic() - began
        )
    except Exception as exc:
        log.warning("demo_summary_failed", error=f"{type(exc).__name__}: {exc}")
        return
    if console is not None:
        console.print(summary.render(numbers, title="ecswatch demo: final summary", recent=recent))
    else:
        for line in summary.lines(numbers, title="Summary"):
            print(line, flush=True)


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()
