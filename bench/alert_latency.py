"""Alert latency: a failing deployment's event sent to SQS -> the verified webhook.

In one run, on moto and a fresh database:

1. moto's own receive+delete ceiling (two receivers, as the consumer runs them);
2. background load: task events sent at ``--load`` (default 0.5) of that ceiling;
3. ``--deployments`` failing deployments, one ``SERVICE_DEPLOYMENT_FAILED`` event
   each, sent every ``--interval`` seconds while the load runs; the consumer and
   the dispatcher (as ``ecswatch run`` runs them) raise and deliver
   ``deployment.failed`` to a local receiver that verifies the signature.

Latency = the receiver's verified arrival minus the send call's start. Prints p50,
p95 and max, and writes bench/results/alert_latency.json.

``--slow-receiver S`` adds a second subscription to the same alerts whose receiver
(:mod:`service.demo.trickle`) reads each request and then answers one byte every
``S`` seconds, never finishing: the healthy receiver's latency must not suffer.
The run then also reports how many requests the slow one got and whether any row
was sent to it twice at once. Usage:

    .venv/bin/python bench/alert_latency.py [--deployments 100] [--ceiling-messages 300]
        [--slow-receiver 3]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from aiohttp import web
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path

from service.cipher import cipher_for
from service.config import load_settings
from service.db import create_engine
from service.demo.aws import MotoServer, create_queue_with_dlq
from service.demo.events import envelope, iso, service_arn, task_lifecycle
from service.demo.receiver import Delivery, WebhookReceiver
from service.demo.trickle import TrickleReceiver
from service.logging import configure_logging
from service.migrate import upgrade
from service.roles.supervisor import run_roles
from service.runtime import open_runtime


class TimedReceiver(WebhookReceiver):
    """The demo receiver, stamping when each verified alert arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived_at: dict[str, float] = {}

    async def _handle(self, request: web.Request, body: bytes) -> tuple[Delivery, web.Response]:
        delivery, response = await super()._handle(request, body)
        if delivery.verified and isinstance(delivery.json, dict):
            deployment = delivery.json.get("deployment") or {}
            self.arrived_at.setdefault(str(deployment.get("id")), time.perf_counter())
        return delivery, response


def failed_event(n: int, at: datetime) -> dict[str, Any]:
    cluster, service = "bench", f"svc{n}"
    detail = {
        "eventType": "ERROR",
        "eventName": "SERVICE_DEPLOYMENT_FAILED",
        "clusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{cluster}",
        "deploymentId": f"ecs-svc/{9_000_000_000 + n}",
        "updatedAt": iso(at, 3),
        "reason": "ECS deployment circuit breaker: task failed to start.",
    }
    return envelope("ECS Deployment State Change", [service_arn(cluster, service)], detail, at)


async def moto_ceiling(sqs: Any, bodies: list[str]) -> float:
    queue_url, _, _ = await create_queue_with_dlq(sqs, "bench-alert-ceiling")
    for start in range(0, len(bodies), 10):
        await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:][:10])],
        )
    done = 0
    finished: list[float] = []

    async def drain() -> None:
        nonlocal done
        while done < len(bodies):
            resp = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            msgs = resp.get("Messages", [])
            if msgs:
                await sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(msgs)
                    ],
                )
                done += len(msgs)
                if done >= len(bodies):
                    finished.append(time.perf_counter())

    t0 = time.perf_counter()
    await asyncio.gather(drain(), drain())
    return len(bodies) / (finished[0] - t0)


async def background_load(
    sqs: Any, queue_url: str, rate: float, stop: asyncio.Event, sent: list[int]
) -> None:
    """Task events at ``rate`` per second, in batches of 10."""
    rng = random.Random(7)
    pending: list[str] = []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    n = 0
    next_at = time.perf_counter()
    while not stop.is_set():
        if len(pending) < 10:
            pending += [
                json.dumps(e)
                for e in task_lifecycle(
                    rng,
                    cluster="load",
                    service=f"load{n % 20}",
                    start=start + timedelta(seconds=n),
                    deployment_id=f"ecs-svc/{5_000 + n % 20}",
                )
            ]
            n += 1
            continue
        chunk, pending = pending[:10], pending[10:]
        await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)],
        )
        sent[0] += len(chunk)
        next_at += len(chunk) / rate
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between them")
    parser.add_argument("--ceiling-messages", type=int, default=300)
    parser.add_argument("--load", type=float, default=0.5, help="fraction of moto's ceiling")
    parser.add_argument(
        "--slow-receiver",
        type=float,
        default=None,
        metavar="S",
        help="also deliver every alert to a receiver answering one byte every S seconds",
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the last alert"
    )
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    db_url = await benchdb.fresh_database(args.database_url, "ecswatch_bench_alerts")
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        with MotoServer() as moto:
            session = get_session()
            async with (
                session.create_client(
                    "sqs", endpoint_url=moto.endpoint_url, region_name="us-east-1"
                ) as sqs,
                TimedReceiver() as receiver,
                TrickleReceiver(args.slow_receiver or 1.0) as slow,
            ):
                filler = [json.dumps({"n": i}) for i in range(args.ceiling_messages)]
                ceiling = await moto_ceiling(sqs, filler)
                rate = ceiling * args.load
                queue_url, _, _ = await create_queue_with_dlq(sqs, "bench-alerts")
                secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
                url = receiver.expect("/bench", secret)
                settings = load_settings(
                    database_url=db_url,
                    queue_url=queue_url,
                    aws_endpoint_url=moto.endpoint_url,
                    aws_region="us-east-1",
                    webhook_allow_private=True,
                )
                cipher = cipher_for(settings)
                subscriptions = [("wh_bench", url)]
                if args.slow_receiver is not None:
                    subscriptions.append(("wh_slow", slow.url + "/slow"))
                async with open_runtime(settings, pool_size=6) as runtime:
                    async with runtime.sessionmaker() as s, s.begin():
                        for wid, target in subscriptions:
                            await s.execute(
                                text(
                                    "INSERT INTO webhook_subscriptions (id, url, events, secret)"
                                    " VALUES (:id, :url, '[\"deployment.failed\"]', :secret)"
                                ),
                                {
                                    "id": wid,
                                    "url": cipher.encrypt(target),
                                    "secret": cipher.encrypt(secret),
                                },
                            )
                    stop = asyncio.Event()
                    roles = asyncio.create_task(
                        run_roles(runtime, ("consumer", "dispatcher"), stop)
                    )
                    load_stop = asyncio.Event()
                    load_sent = [0]
                    load = asyncio.create_task(
                        background_load(sqs, queue_url, rate, load_stop, load_sent)
                    )
                    await asyncio.sleep(2)  # the consumer reaches its queue, load flows
                    sent_at: dict[str, float] = {}
                    t_load, load_before = time.perf_counter(), load_sent[0]
                    for n in range(args.deployments):
                        event = failed_event(n, datetime.now(UTC))
                        sent_at[event["detail"]["deploymentId"]] = time.perf_counter()
                        await sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
                        await asyncio.sleep(args.interval)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(args.wait):
                            while len(receiver.arrived_at) < args.deployments:
                                await asyncio.sleep(0.05)
                    load_stop.set()
                    await load
                    load_rate = (load_sent[0] - load_before) / (time.perf_counter() - t_load)
                    stop.set()
                    await roles
    finally:
        await benchdb.drop_database(db_url)
    latencies = sorted(receiver.arrived_at[k] - sent_at[k] for k in receiver.arrived_at)
    if not latencies:
        latencies = [float("nan")]
    return {
        "deployments": args.deployments,
        "arrived": len(receiver.arrived_at),
        "slow_receiver_interval_s": args.slow_receiver,
        "slow_receiver_requests": len(slow.requests) if args.slow_receiver else None,
        "slow_receiver_overlaps": slow.overlaps if args.slow_receiver else None,
        "moto_ceiling_per_s": round(ceiling, 1),
        "background_load_per_s": round(load_rate, 1),
        "background_vs_ceiling": round(load_rate / ceiling, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(latencies[max(0, int(len(latencies) * 0.95) - 1)] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
    }


def report(results: dict[str, Any]) -> None:
    """Print the table and write bench/results/alert_latency.json."""
    rows = [
        ("failing deployments", f"{results['deployments']}"),
        ("alerts arrived (healthy receiver)", f"{results['arrived']}"),
        ("moto receive+delete ceiling", f"{results['moto_ceiling_per_s']:,.1f} msg/s"),
        (
            "background task events",
            f"{results['background_load_per_s']:,.1f} msg/s"
            f" ({results['background_vs_ceiling']:.0%} of ceiling)",
        ),
        ("latency p50 (send -> verified webhook)", f"{results['p50_ms']:,.1f} ms"),
        ("latency p95", f"{results['p95_ms']:,.1f} ms"),
        ("latency max", f"{results['max_ms']:,.1f} ms"),
    ]
    if results["slow_receiver_interval_s"] is not None:
        rows += [
            (
                "slow receiver: requests (overlapping)",
                f"{results['slow_receiver_requests']} ({results['slow_receiver_overlaps']})",
            )
        ]
    for name, value in rows:
        print(f"{name:<42} {value:>28}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "alert_latency.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
