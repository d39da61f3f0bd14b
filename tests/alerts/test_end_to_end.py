"""End to end: events sent to SQS (moto) -> consumer -> PostgreSQL -> dispatcher ->
the real local receiver, which verifies every signature with ``standardwebhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from types_aiobotocore_sqs import SQSClient

from service.alerts.raising import sweep_stuck
from service.alerts.rules import AlertRules
from service.api.app import create_app
from service.cipher import cipher_for
from service.config import ServiceRef, Settings
from service.demo.receiver import WebhookReceiver
from service.roles.dispatcher import build_dispatcher, build_senders
from service.roles.supervisor import run_roles
from service.runtime import Runtime, open_runtime
from tests.alerts import scenarios as sc
from tests.alerts.test_webhook_delivery import new_secret
from tests.poller.fleet import build_fleet
from tests.poller.test_codedeploy import codedeploy_event, create_group
from tests.rig.fixtures import REGION, SqsQueue

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def e2e_settings(settings: Settings, aws_env: str, sqs_queue: SqsQueue) -> Settings:
    return settings.model_copy(
        update={
            "aws_endpoint_url": aws_env,
            "aws_region": REGION,
            "queue_url": sqs_queue.queue_url,
            "webhook_allow_private": True,  # the receiver is on loopback
            "dispatch_retry_base_s": 0.05,
            "dispatch_poll_interval_s": 0.5,
            "codedeploy_groups": {"shop/shop-blue": ServiceRef(cluster="prod", service="shop")},
        }
    )


async def send(sqs: SQSClient, queue_url: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 10):
        chunk = events[start : start + 10]
        await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": json.dumps(e)} for i, e in enumerate(chunk)],
        )


@contextlib.asynccontextmanager
async def running(
    settings: Settings, roles: tuple[str, ...] = ("consumer", "dispatcher")
) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, pool_size=5) as runtime:
        stop = asyncio.Event()
        task = asyncio.create_task(run_roles(runtime, roles, stop, port=0))
        try:
            yield runtime
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def subscribe(runtime: Runtime, url: str, secret: str, events: list[str]) -> str:
    """Create the subscription through the API, as a user would."""
    app = create_app(runtime)  # no API tokens in the test settings: loopback, open
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        response = await api.post(
            "/v1/webhooks", json={"url": url, "events": events, "secret": secret}
        )
    assert response.status_code == 201, response.text
    wid: str = response.json()["id"]
    return wid


async def wait_until(check: Callable[[], bool], within: float = 30) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.05)


async def wait_until_target_known(engine: AsyncEngine, deployment_id: str) -> None:
    async with asyncio.timeout(30):
        while True:
            async with engine.connect() as conn:
                target = (
                    await conn.execute(
                        text("SELECT rollback_target FROM deployments WHERE id = :id"),
                        {"id": deployment_id},
                    )
                ).scalar()
            if target is not None:
                return
            await asyncio.sleep(0.05)


async def test_circuit_breaker_rollback_alerts_exactly_once_each(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/cb", secret)
    events = sc.circuit_breaker_rollback("prod", "web", "ecs-svc/2", "ecs-svc/1", START)
    async with running(e2e_settings) as runtime:
        await subscribe(runtime, url, secret, ["deployment.failed", "deployment.rolled_back"])
        # Every event twice, in order as ECS sends them, then all again under new ids.
        # SQS does not keep order across receives: the rollback notice is let in
        # first, as ECS sends it first, so that the failure is known with its target
        # (a FAILED that overtakes the notice alerts without one; the fold tests
        # cover that order).
        notice = 4  # up to and including "rolling back to deploymentId ecs-svc/1"
        await send(sqs_client, sqs_queue.queue_url, [e for e in events[:notice] for _ in range(2)])
        await wait_until_target_known(engine, "ecs-svc/2")
        await send(sqs_client, sqs_queue.queue_url, [e for e in events[notice:] for _ in range(2)])
        await send(sqs_client, sqs_queue.queue_url, sc.with_new_ids(events))
        await wait_until(lambda: len(webhook_receiver.verified("/cb")) >= 2)
        await asyncio.sleep(2)  # time for any duplicate to show up
    bodies = webhook_receiver.verified("/cb")
    assert [b["type"] for b in bodies] == ["deployment.failed", "deployment.rolled_back"]
    assert all(d.verified for d in webhook_receiver.deliveries)
    failed, rolled = bodies
    assert failed["deployment"]["id"] == "ecs-svc/2"
    assert failed["deployment"]["rollback_target"] == "ecs-svc/1"
    assert rolled["deployment"]["outcome"] == "rolled_back"
    assert (failed["cluster"], failed["service"]) == ("prod", "web")
    assert set(failed) >= {"type", "id", "created_at", "cluster", "service", "deployment"}
    assert failed["events"]  # the ECS event ids behind it


async def test_a_receiver_failing_twice_still_gets_the_alert_with_one_id(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/flaky", secret)
    webhook_receiver.fail_next(500, count=2)
    events = sc.crash_loop("prod", "worker", "ecs-svc/77", START)  # no circuit breaker
    async with running(e2e_settings) as runtime:
        wid = await subscribe(runtime, url, secret, ["deployment.failed"])
        await send(sqs_client, sqs_queue.queue_url, events)
        await wait_until(lambda: len(webhook_receiver.verified("/flaky")) >= 1)
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            async with asyncio.timeout(10):  # the third attempt is recorded after its answer
                while (
                    len(log := (await api.get(f"/v1/webhooks/{wid}/deliveries")).json()["items"])
                    < 3
                ):
                    await asyncio.sleep(0.05)
            listed = (await api.get("/v1/alerts")).json()["items"]
    got = webhook_receiver.deliveries
    assert [d.status for d in got] == [500, 500, 204]
    assert len({d.headers["webhook-id"] for d in got}) == 1
    [body] = webhook_receiver.verified("/flaky")
    assert body["type"] == "deployment.failed"
    assert body["deployment"]["id"] == "ecs-svc/77"
    assert "failed to start" in body["summary"]
    assert [(x["attempt"], x["status_code"]) for x in log] == [(3, 204), (2, 500), (1, 500)]
    [alert] = [a for a in listed if a["type"] == "deployment.failed"]
    assert alert["deliveries"] == {"pending": 0, "delivered": 1, "failed": 0}


async def test_codedeploy_failure_alerts_for_the_right_service(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/cd", secret)
    events = [sc.codedeploy("d-XYZ", "START", START), sc.codedeploy("d-XYZ", "FAILURE", START)]
    async with running(e2e_settings) as runtime:
        await subscribe(runtime, url, secret, ["deployment.failed"])
        await send(sqs_client, sqs_queue.queue_url, events + sc.with_new_ids(events))
        await wait_until(lambda: len(webhook_receiver.verified("/cd")) >= 1)
        await asyncio.sleep(1)
    [body] = webhook_receiver.verified("/cd")
    assert (body["cluster"], body["service"]) == ("prod", "shop")
    assert body["deployment"]["kind"] == "codedeploy"
    assert body["deployment"]["id"] == "d-XYZ"


async def test_test_endpoint_is_really_delivered(
    e2e_settings: Settings, engine: AsyncEngine, webhook_receiver: WebhookReceiver
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/t", secret)
    async with running(e2e_settings, ("dispatcher",)) as runtime:
        wid = await subscribe(runtime, url, secret, ["deployment.failed"])
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            queued = await api.post(f"/v1/webhooks/{wid}/test")
            assert queued.status_code == 202
            await wait_until(lambda: len(webhook_receiver.verified("/t")) >= 1)
            async with asyncio.timeout(10):
                while not (
                    log := (await api.get(f"/v1/webhooks/{wid}/deliveries")).json()["items"]
                ):
                    await asyncio.sleep(0.05)
    [body] = webhook_receiver.verified("/t")
    assert body["type"] == "webhook.test"
    assert [(x["event_type"], x["status_code"]) for x in log] == [("webhook.test", 204)]


async def _add_alerts(engine: AsyncEngine, wid: str, n: int) -> None:
    async with engine.begin() as conn:
        for i in range(n):
            alert = f"alrt_{i}"
            await conn.execute(
                text(
                    "INSERT INTO alerts (id, type, dedupe_key, summary, payload) VALUES (:id,"
                    " 'deployment.failed', :id, 's', jsonb_build_object('id', CAST(:id AS text)))"
                ),
                {"id": alert},
            )
            await conn.execute(
                text(
                    "INSERT INTO outbox (kind, dedupe_key, payload) VALUES ('webhook', :k,"
                    " jsonb_build_object('webhook_id', CAST(:w AS text), 'alert_id',"
                    " CAST(:id AS text), 'event_type', 'deployment.failed'))"
                ),
                {"k": f"alert:{alert}:{wid}", "w": wid, "id": alert},
            )


async def test_two_dispatchers_deliver_each_alert_once(
    e2e_settings: Settings,
    database_url: str,
    engine: AsyncEngine,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/two", secret)
    async with contextlib.AsyncExitStack() as stack:
        runtimes = [
            await stack.enter_async_context(open_runtime(e2e_settings, pool_size=3))
            for _ in range(2)
        ]
        wid = await subscribe(runtimes[0], url, secret, ["deployment.failed"])
        stop = asyncio.Event()
        tasks = []
        for runtime in runtimes:
            senders = await build_senders(runtime, stack)
            dispatcher = build_dispatcher(runtime, senders)
            tasks.append(asyncio.create_task(dispatcher.run(stop)))
        try:
            await _add_alerts(engine, wid, 40)
            await wait_until(lambda: len(webhook_receiver.deliveries) >= 40)
            await asyncio.sleep(1)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    ids = [d.headers["webhook-id"] for d in webhook_receiver.deliveries]
    assert len(ids) == 40
    assert len(set(ids)) == 40
    assert {b["id"] for b in webhook_receiver.verified("/two")} == {f"alrt_{i}" for i in range(40)}


class StallingProxy:
    """Forwards to the receiver, but holds every answer back: the request arrives,
    the sender never hears the reply (a dispatcher killed mid-delivery)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
        up_writer.close()
        writer.close()


async def test_a_dispatcher_killed_mid_delivery_delivers_after_restart(
    e2e_settings: Settings,
    database_url: str,
    engine: AsyncEngine,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/kill", secret)
    port = int(webhook_receiver.url.rsplit(":", 1)[1])
    proxy = StallingProxy(port)
    await proxy.start()
    async with open_runtime(e2e_settings, pool_size=2) as runtime:
        wid = await subscribe(runtime, url, secret, ["deployment.failed"])
    cipher = cipher_for(e2e_settings)  # URLs are stored encrypted
    async with engine.begin() as conn:
        # Delivery goes through the stalling proxy for the first process.
        await conn.execute(
            text("UPDATE webhook_subscriptions SET url = :u WHERE id = :w"),
            {"u": cipher.encrypt(f"http://127.0.0.1:{proxy.port}/kill"), "w": wid},
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_", "AWS_"))}
    env.update(
        ECSWATCH_DATABASE_URL=database_url,
        ECSWATCH_LOG_FORMAT="json",
        ECSWATCH_WEBHOOK_ALLOW_PRIVATE="true",
        ECSWATCH_DATA_DIR=str(e2e_settings.data_dir),  # the same derived key
        ECSWATCH_DISPATCH_LEASE_S="5",
        ECSWATCH_WEBHOOK_TIMEOUT_S="2.5",
        ECSWATCH_DISPATCH_POLL_INTERVAL_S="0.5",
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, then only signalled
        [sys.executable, "-m", "service", "run", "--roles", "dispatcher"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _add_alerts(engine, wid, 1)
        await webhook_receiver.wait_for(1, within=30)
        proc.send_signal(signal.SIGKILL)  # mid-delivery: the answer never reached it
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        await proxy.stop()
    async with engine.begin() as conn:
        row = (await conn.execute(text("SELECT status, attempts FROM outbox"))).one()
        assert tuple(row) == ("pending", 0)  # leased, not recorded
        await conn.execute(
            text("UPDATE webhook_subscriptions SET url = :u WHERE id = :w"),
            {"u": cipher.encrypt(url), "w": wid},
        )
    async with running(e2e_settings, ("dispatcher",)):
        await wait_until(lambda: len(webhook_receiver.deliveries) >= 2, within=30)
        async with asyncio.timeout(10):
            while True:
                async with engine.connect() as conn:
                    status = await conn.scalar(text("SELECT status FROM outbox"))
                if status == "delivered":
                    break
                await asyncio.sleep(0.1)
    first, second = webhook_receiver.deliveries
    assert first.verified
    assert second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.json == second.json


async def test_codedeploy_failure_of_a_group_only_the_poller_maps_reaches_a_filtered_subscription(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
    moto_server: Any,
) -> None:
    """No ECSWATCH_CODEDEPLOY_GROUPS: the poller's leader maps the group through
    GetDeploymentGroup (moto), and the one alert names the service and target groups,
    so a subscription filtered by service receives it."""
    fleet = await build_fleet(moto_server.endpoint_url, tasks=0, native_blue_green=False)
    app = await create_group(moto_server.endpoint_url, fleet)
    settings = e2e_settings.model_copy(
        update={
            "codedeploy_groups": {},
            "codedeploy_interval_s": 1,
            "clusters": (fleet.cluster,),
            "metrics_interval_s": 3600,
        }
    )
    secret = new_secret()
    url = webhook_receiver.expect("/mapped", secret)
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        codedeploy_event(app, "dg", "d-MAPPED", "START", now),
        codedeploy_event(app, "dg", "d-MAPPED", "FAILURE", now),
    ]
    async with running(settings, ("consumer", "dispatcher", "poller")) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            created = await api.post(
                "/v1/webhooks",
                json={
                    "url": url,
                    "events": ["deployment.failed"],
                    "secret": secret,
                    "filter": {"cluster": fleet.cluster, "service": "web"},
                },
            )
            assert created.status_code == 201, created.text
        await send(sqs_client, sqs_queue.queue_url, events + sc.with_new_ids(events))
        await wait_until(lambda: len(webhook_receiver.verified("/mapped")) >= 1)
        await asyncio.sleep(2)  # time for any duplicate to show up
    [body] = webhook_receiver.verified("/mapped")
    assert (body["cluster"], body["service"]) == (fleet.cluster, "web")
    assert body["deployment"]["id"] == "d-MAPPED"
    assert body["deployment"]["codedeploy_application"] == app
    assert [tg["name"] for tg in body["deployment"]["target_groups"]] == [
        fleet.blue_tg_arn.split("/")[-2],
        fleet.green_tg_arn.split("/")[-2],
    ]


# ----------------------------------------------------------- why it failed (cause)


async def wait_until_stopped(engine: AsyncEngine, deployment_id: str, n: int) -> None:
    """Until ``n`` stopped tasks of the deployment are stored (the failure comes after)."""
    async with asyncio.timeout(30):
        while True:
            async with engine.connect() as conn:
                stopped = await conn.scalar(
                    text(
                        "SELECT count(*) FROM tasks WHERE deployment_id = :d"
                        " AND last_status = 'STOPPED'"
                    ),
                    {"d": deployment_id},
                )
            if stopped is not None and stopped >= n:
                return
            await asyncio.sleep(0.05)


def delivered_once(receiver: WebhookReceiver, path: str) -> list[Any]:
    """The bodies delivered on ``path``: every delivery signed and verified, each alert once."""
    got = [d for d in receiver.deliveries if d.path == path]
    assert got
    assert all(d.verified for d in got)
    assert all(d.headers["webhook-signature"].startswith("v1,") for d in got)
    bodies = receiver.verified(path)
    assert len({b["id"] for b in bodies}) == len(bodies) == len(got)
    return bodies


async def circuit_breaker_failure(
    sqs: SQSClient,
    queue_url: str,
    engine: AsyncEngine,
    failed: str,
    tasks: list[dict[str, Any]],
    *,
    service: str = "web",
) -> list[dict[str, Any]]:
    """A rollout of ``failed`` whose tasks stop (stored first, as ECS stops them before
    the circuit breaker trips), then the breaker's failure and the restore of
    ecs-svc/1; every event twice, then all again under new ids. The events sent."""
    rollout = sc.circuit_breaker_rollback("prod", service, failed, "ecs-svc/1", START)
    begun, ended = rollout[:3], rollout[3:]
    await send(sqs, queue_url, begun + tasks)
    await wait_until_stopped(engine, failed, 3)
    await send(sqs, queue_url, [e for e in ended for _ in range(2)])
    await send(sqs, queue_url, sc.with_new_ids(begun + tasks + ended))
    return begun + tasks + ended


async def test_image_pull_failure_alerts_with_its_cause_and_the_fix_recovers_once(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/pull", secret)
    tasks = sc.stopped_tasks(
        "prod",
        "web",
        "ecs-svc/2",
        START + timedelta(minutes=1),
        stop_code="TaskFailedToStart",
        stopped_reason=sc.ECR_NOT_FOUND,
    )
    fix = (
        sc.deployment_event(
            "prod",
            "web",
            "ecs-svc/3",
            "SERVICE_DEPLOYMENT_IN_PROGRESS",
            START + timedelta(hours=1),
            "",
        ),
        sc.deployment_event(
            "prod",
            "web",
            "ecs-svc/3",
            "SERVICE_DEPLOYMENT_COMPLETED",
            START + timedelta(hours=1, minutes=4),
            "",
        ),
    )
    events = ["deployment.failed", "deployment.rolled_back", "deployment.recovered"]
    async with running(e2e_settings) as runtime:
        await subscribe(runtime, url, secret, events)
        await circuit_breaker_failure(sqs_client, sqs_queue.queue_url, engine, "ecs-svc/2", tasks)
        await wait_until(lambda: len(webhook_receiver.verified("/pull")) >= 2)
        # The roll-forward fix, twice, and again under new ids.
        await send(sqs_client, sqs_queue.queue_url, [*fix, *fix, *sc.with_new_ids(list(fix))])
        await wait_until(lambda: len(webhook_receiver.verified("/pull")) >= 3)
        await asyncio.sleep(2)  # time for any duplicate to show up
    bodies = delivered_once(webhook_receiver, "/pull")
    assert sorted(b["type"] for b in bodies) == sorted(events)
    by_type = {b["type"]: b for b in bodies}
    for kind in ("deployment.failed", "deployment.rolled_back"):
        cause = by_type[kind]["deployment"]["cause"]
        assert cause["category"] == "image_pull", cause
        assert "not found" in cause["summary"]
        assert [e["kind"] for e in cause["evidence"]] == ["task_stopped"] * 3
    recovered = by_type["deployment.recovered"]
    assert recovered["recovers"] == "ecs-svc/2"
    assert recovered["deployment"]["id"] == "ecs-svc/3"
    assert recovered["deployment"]["cause"] is None
    assert (recovered["cluster"], recovered["service"]) == ("prod", "web")


async def test_oom_crash_loop_alerts_out_of_memory_once(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/oom", secret)
    events = sc.crash_loop("prod", "worker", "ecs-svc/78", START)  # exit 137, OutOfMemoryError
    async with running(e2e_settings) as runtime:
        await subscribe(runtime, url, secret, ["deployment.failed"])
        await send(sqs_client, sqs_queue.queue_url, events + sc.with_new_ids(events))
        await wait_until(lambda: len(webhook_receiver.verified("/oom")) >= 1)
        await asyncio.sleep(2)
    [body] = delivered_once(webhook_receiver, "/oom")
    cause = body["deployment"]["cause"]
    assert cause["category"] == "out_of_memory", cause
    assert (cause["container"], cause["exit_code"]) == ("app", 137)
    assert cause["evidence"]
    assert all(e["kind"] == "task_stopped" for e in cause["evidence"])
    stamps = [e["at"] for e in cause["evidence"]]
    assert stamps == sorted(stamps)  # oldest first


async def test_elb_health_check_failure_alerts_health_check_once(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    url = webhook_receiver.expect("/elb", secret)
    tasks = sc.stopped_tasks(
        "prod",
        "api",
        "ecs-svc/5",
        START + timedelta(minutes=1),
        stop_code="ServiceSchedulerInitiated",
        stopped_reason=sc.ELB_UNHEALTHY,
        exit_code=143,
    )
    async with running(e2e_settings) as runtime:
        await subscribe(runtime, url, secret, ["deployment.failed"])
        await circuit_breaker_failure(
            sqs_client, sqs_queue.queue_url, engine, "ecs-svc/5", tasks, service="api"
        )
        await wait_until(lambda: len(webhook_receiver.verified("/elb")) >= 1)
        await asyncio.sleep(2)
    [body] = delivered_once(webhook_receiver, "/elb")
    cause = body["deployment"]["cause"]
    assert cause["category"] == "health_check", cause
    assert "web-tg" in cause["summary"]


async def test_placement_failure_of_a_stuck_deployment_alerts_placement_once(
    e2e_settings: Settings,
    engine: AsyncEngine,
    sqs_client: SQSClient,
    sqs_queue: SqsQueue,
    webhook_receiver: WebhookReceiver,
) -> None:
    """No task of the rollout can be placed: the deployment never fails, it is stuck,
    and its ``deployment.stuck`` says why."""
    secret = new_secret()
    url = webhook_receiver.expect("/place", secret)
    begun = sc.deployment_event(
        "prod", "batch", "ecs-svc/6", "SERVICE_DEPLOYMENT_IN_PROGRESS", START, ""
    )
    actions = [
        sc.placement_failure("prod", "batch", START + timedelta(minutes=m), "MEMORY")
        for m in (1, 2)
    ]
    events = [begun, *actions]
    async with running(e2e_settings) as runtime:
        await subscribe(runtime, url, secret, ["deployment.stuck"])
        await send(sqs_client, sqs_queue.queue_url, events + sc.with_new_ids(events))
        async with asyncio.timeout(30):
            while True:
                async with engine.connect() as conn:
                    stored = await conn.scalar(
                        text(
                            "SELECT count(*) FROM raw_events"
                            " WHERE detail_type = 'ECS Service Action' AND EXISTS"
                            " (SELECT 1 FROM deployments WHERE id = 'ecs-svc/6')"
                        )
                    )
                if stored and stored >= 2:
                    break
                await asyncio.sleep(0.05)
        # What the dispatcher's sweep does every 30 s, now, twice.
        rules = AlertRules(stuck_after_s=1800)
        for _ in range(2):
            async with runtime.sessionmaker() as session, session.begin():
                await sweep_stuck(session, rules=rules, now=datetime.now(UTC))
        await wait_until(lambda: len(webhook_receiver.verified("/place")) >= 1)
        await asyncio.sleep(2)
    [body] = delivered_once(webhook_receiver, "/place")
    assert body["type"] == "deployment.stuck"
    cause = body["deployment"]["cause"]
    assert cause["category"] == "placement", cause
    assert "memory" in cause["summary"]
    assert [e["kind"] for e in cause["evidence"]] == ["service_action", "service_action"]
