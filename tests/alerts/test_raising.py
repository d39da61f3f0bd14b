"""Alerts raised by the consumer's handler on a real PostgreSQL: once, in any order."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.alerts.raising import sweep_stuck
from service.alerts.rules import AlertRules
from service.config import ServiceRef
from service.consumer.handler import Handler, Message
from service.runtime import Runtime
from tests.alerts import scenarios as sc

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


async def handle(runtime: Runtime, events: list[dict[str, Any]], **kwargs: Any) -> None:
    handler = Handler(runtime.sessionmaker, **kwargs)
    messages = [Message(str(uuid.uuid4()), json.dumps(e)) for e in events]
    result = await handler.handle(messages)
    assert not result.retry


async def alerts(engine: AsyncEngine, **where: str) -> list[dict[str, Any]]:
    clause = " AND ".join(f"{k} = :{k}" for k in where) or "true"
    async with engine.connect() as conn:
        found = await conn.execute(
            text(f"SELECT * FROM alerts WHERE {clause} ORDER BY type, id"), where
        )
        return [dict(r) for r in found.mappings()]


async def outbox(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT * FROM outbox ORDER BY id"))
        return [dict(r) for r in found.mappings()]


async def subscribe(engine: AsyncEngine, events: list[str], **filter_: str) -> str:
    wid = "wh_" + uuid.uuid4().hex[:8]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, url, events, filter, secret) VALUES"
                " (:id, 'https://hooks.example.com/x', CAST(:events AS jsonb),"
                " CAST(:filter AS jsonb), 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0')"
            ),
            {"id": wid, "events": json.dumps(events), "filter": json.dumps(filter_)},
        )
    return wid


async def test_circuit_breaker_rollback_alerts_once_each(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    wid = await subscribe(engine, ["deployment.failed", "deployment.rolled_back"])
    other = await subscribe(engine, ["deployment.failed"], cluster="staging")
    events = sc.circuit_breaker_rollback("prod", "web", "ecs-svc/2", "ecs-svc/1", START)
    await handle(runtime, events[:4])  # up to the rollback notice
    [failed] = await alerts(engine, deployment_id="ecs-svc/2")
    assert failed["type"] == "deployment.failed"
    assert failed["payload"]["deployment"]["rollback_target"] == "ecs-svc/1"
    assert "rolling back to ecs-svc/1" in failed["summary"]
    # The rest, every event twice, then everything again under new ids.
    await handle(runtime, events[4:] + events)
    await handle(runtime, sc.with_new_ids(events))
    found = await alerts(engine, deployment_id="ecs-svc/2")
    assert [a["type"] for a in found] == ["deployment.failed", "deployment.rolled_back"]
    rolled = found[1]
    assert rolled["payload"]["deployment"]["outcome"] == "rolled_back"
    assert rolled["summary"] == "Deployment ecs-svc/2 of prod/web was rolled back to ecs-svc/1"
    # The restore's completion is no success of its own to announce (and its old
    # completion came in the batch that named it as the rollback target).
    assert await alerts(engine, deployment_id="ecs-svc/1") == []
    rows = await outbox(engine)
    assert sorted((r["payload"]["webhook_id"], r["payload"]["event_type"]) for r in rows) == [
        (wid, "deployment.failed"),
        (wid, "deployment.rolled_back"),
    ]
    assert other not in {r["payload"]["webhook_id"] for r in rows}
    assert {r["payload"]["alert_id"] for r in rows} == {a["id"] for a in found}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_any_order_and_batching_raises_the_same_alerts(
    runtime: Runtime, engine: AsyncEngine, data: st.DataObject
) -> None:
    # Unique names per example: no cleanup between examples needed.
    service = "svc-" + uuid.uuid4().hex[:8]
    failed, target = f"ecs-svc/{uuid.uuid4().int % 10**19}", f"ecs-svc/{uuid.uuid4().int % 10**19}"
    events = sc.circuit_breaker_rollback("prod", service, failed, target, START)[2:]
    events += data.draw(st.lists(st.sampled_from(events), max_size=4))
    order = data.draw(st.permutations(events))
    cut = data.draw(st.integers(min_value=0, max_value=len(order)))
    await handle(runtime, order[:cut])
    await handle(runtime, order[cut:])
    await handle(runtime, sc.with_new_ids(order))
    found = await alerts(engine, deployment_id=failed)
    assert [a["type"] for a in found] == ["deployment.failed", "deployment.rolled_back"]
    failed_alert, rolled_back = found
    assert rolled_back["payload"]["deployment"]["rollback_target"] == target
    # Raised as soon as the failure is known: the target is named when the
    # rollback notice had arrived by then (FAILED alone does not name it).
    assert failed_alert["payload"]["deployment"]["rollback_target"] in (None, target)


async def test_crash_loop_without_circuit_breaker(runtime: Runtime, engine: AsyncEngine) -> None:
    wid = await subscribe(engine, ["deployment.failed", "task.failed_to_start"])
    events = sc.crash_loop("prod", "worker", "ecs-svc/77", START, tasks=2)
    await handle(runtime, events)
    assert [a["type"] for a in await alerts(engine, deployment_id="ecs-svc/77")] == [
        "task.failed_to_start"
    ]
    third = sc.crash_loop("prod", "worker", "ecs-svc/77", START + timedelta(minutes=2), tasks=3)
    await handle(runtime, third[-12:] + sc.with_new_ids(events))
    found = await alerts(engine, deployment_id="ecs-svc/77")
    assert [a["type"] for a in found] == ["deployment.failed", "task.failed_to_start"]
    failed = found[0]
    assert failed["payload"]["deployment"]["outcome"] == "failed"
    assert "failed to start within 10 min" in failed["summary"]
    assert sorted(r["payload"]["event_type"] for r in await outbox(engine)) == [
        "deployment.failed",
        "task.failed_to_start",
    ]
    assert {r["payload"]["webhook_id"] for r in await outbox(engine)} == {wid}


async def test_crash_loop_threshold_is_configurable(runtime: Runtime, engine: AsyncEngine) -> None:
    events = sc.crash_loop("prod", "worker", "ecs-svc/78", START, tasks=3)
    await handle(runtime, events, alert_rules=AlertRules(crashloop_tasks=4))
    assert [a["type"] for a in await alerts(engine, deployment_id="ecs-svc/78")] == [
        "task.failed_to_start"
    ]


async def test_codedeploy_failure_alerts_for_the_mapped_service(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    wid = await subscribe(engine, ["deployment.failed"], service="shop")
    groups = {"shop/shop-blue": ServiceRef(cluster="prod", service="shop")}
    events = [sc.codedeploy("d-ABC", "START", START), sc.codedeploy("d-ABC", "FAILURE", START)]
    await handle(runtime, events, codedeploy_groups=groups)
    await handle(runtime, sc.with_new_ids(events), codedeploy_groups=groups)
    [alert] = await alerts(engine, deployment_id="d-ABC")
    assert (alert["type"], alert["cluster_name"], alert["service_name"]) == (
        "deployment.failed",
        "prod",
        "shop",
    )
    assert alert["payload"]["deployment"]["kind"] == "codedeploy"
    assert alert["payload"]["deployment"]["codedeploy_group"] == "shop-blue"
    assert [r["payload"]["webhook_id"] for r in await outbox(engine)] == [wid]


async def test_hook_failure_alerts_with_its_stage(runtime: Runtime, engine: AsyncEngine) -> None:
    await handle(runtime, [sc.hook_failed(START)])
    [alert] = await alerts(engine)
    assert alert["type"] == "deployment.failed"
    assert alert["payload"]["deployment"]["kind"] == "blue_green"
    assert alert["payload"]["deployment"]["lifecycle_stage"] == "POST_TEST_TRAFFIC_SHIFT"
    assert "HOOK_FAILED at POST_TEST_TRAFFIC_SHIFT" in alert["summary"]


async def test_placement_failures_cool_down_per_service(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    base = sc.sample("service_action_task_placement_failure_ec2_cpu.json")
    later = json.loads(json.dumps(base))
    later["id"] = str(uuid.uuid4())
    later["detail"]["createdAt"] = "2019-06-08T11:30:00.000Z"  # far past any cool-down
    await handle(runtime, [base, *sc.with_new_ids([base])])
    assert len(await alerts(engine, type="service.placement_failure")) == 1
    await handle(runtime, [later], alert_rules=AlertRules(cooldown_s=900))
    assert len(await alerts(engine, type="service.placement_failure")) == 2


async def test_placement_failures_of_the_same_names_in_two_accounts_are_two_alerts(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    base = sc.sample("service_action_task_placement_failure_ec2_cpu.json")
    wanted = await subscribe(
        engine, ["service.placement_failure"], account_id="210987654321", region="eu-west-1"
    )
    # The same event from another account and region: every ARN says so too.
    where = f"{base['region']}:{base['account']}:"
    other = json.loads(json.dumps(base).replace(where, "eu-west-1:210987654321:"))
    other["id"] = str(uuid.uuid4())
    other["account"], other["region"] = "210987654321", "eu-west-1"
    await handle(runtime, [base])
    assert len(await alerts(engine, type="service.placement_failure")) == 1
    await handle(runtime, [other])
    raised = await alerts(engine, type="service.placement_failure")
    assert len(raised) == 2  # one service name, two accounts: two services
    scopes = {(a["payload"]["account_id"], a["payload"]["region"]) for a in raised}
    assert scopes == {(base["account"], base["region"]), ("210987654321", "eu-west-1")}
    # The subscription filtered on the second account receives only its alert.
    deliveries = [r for r in await outbox(engine) if r["dedupe_key"].endswith(f":{wanted}")]
    assert len(deliveries) == 1
    [mine] = [a for a in raised if a["payload"]["account_id"] == "210987654321"]
    assert deliveries[0]["dedupe_key"] == f"alert:{mine['id']}:{wanted}"


async def test_service_action_reasons_attach_to_the_deployment(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    impaired = sc.sample("service_action_task_start_impaired.json")
    service_arn = impaired["resources"][0]
    cluster, service = service_arn.split("/")[-2:]
    start = sc.deployment_event(
        cluster,
        service,
        "ecs-svc/5",
        "SERVICE_DEPLOYMENT_IN_PROGRESS",
        datetime(2019, 1, 1, tzinfo=UTC),
        "in progress",
    )
    start["resources"] = [service_arn]
    start["region"] = impaired["region"]
    start["account"] = impaired["account"]
    start["detail"]["clusterArn"] = impaired["detail"]["clusterArn"]
    await handle(runtime, [start, impaired])
    async with engine.connect() as conn:
        reason = await conn.scalar(text("SELECT reason FROM deployments WHERE id = 'ecs-svc/5'"))
    assert reason is not None
    assert reason.startswith("SERVICE_TASK_START_IMPAIRED")


async def test_stuck_sweep(runtime: Runtime, engine: AsyncEngine) -> None:
    wid = await subscribe(engine, ["deployment.stuck"])
    now = datetime.now(UTC)
    old = now - timedelta(hours=2)
    events = [
        sc.deployment_event("prod", "web", "ecs-svc/9", "SERVICE_DEPLOYMENT_IN_PROGRESS", old, "x"),
        sc.deployment_event("prod", "api", "ecs-svc/8", "SERVICE_DEPLOYMENT_IN_PROGRESS", now, "y"),
    ]
    # A deployment known only through its tasks' startedBy is not a rollout to flag.
    tasks_only = sc.crash_loop("prod", "batch", "ecs-svc/7", old, tasks=1)
    await handle(runtime, [*events, *tasks_only])
    rules = AlertRules(stuck_after_s=1800)
    async with runtime.sessionmaker() as session, session.begin():
        flagged = await sweep_stuck(session, rules=rules, now=now)
    assert [k.id for k in flagged] == ["ecs-svc/9"]
    assert flagged[0].account_id, "a deployment's key carries the scope of its events"
    async with runtime.sessionmaker() as session, session.begin():
        assert await sweep_stuck(session, rules=rules, now=now) == []
    [alert] = await alerts(engine, type="deployment.stuck")
    assert alert["deployment_id"] == "ecs-svc/9"
    assert [r["payload"]["webhook_id"] for r in await outbox(engine)] == [wid]
    async with engine.connect() as conn:
        stuck = await conn.scalar(text("SELECT stuck FROM deployments WHERE id = 'ecs-svc/9'"))
    assert stuck is True


async def test_deployment_samples_raise_their_alerts(runtime: Runtime, engine: AsyncEngine) -> None:
    await handle(runtime, [sc.sample("deployment_state_change_in_progress.json")])
    assert await alerts(engine) == []
    await handle(runtime, [sc.sample("deployment_state_change_in_progress_rollback.json")])
    await handle(runtime, [sc.sample("deployment_state_change_failed_circuit_breaker.json")])
    [failed] = await alerts(engine)
    assert failed["type"] == "deployment.failed"
    assert failed["payload"]["deployment"]["rollback_target"] == "deploymentID"
    assert failed["cluster_name"] == "default"
    assert failed["service_name"] == "servicetest"


def _fix(deployment_id: str, at: datetime) -> list[dict[str, Any]]:
    """A later deployment of prod/web that completes (a roll-forward fix)."""
    return [
        sc.deployment_event("prod", "web", deployment_id, name, at + timedelta(minutes=m), "")
        for name, m in (("SERVICE_DEPLOYMENT_IN_PROGRESS", 0), ("SERVICE_DEPLOYMENT_COMPLETED", 4))
    ]


async def test_a_fix_after_a_rollback_recovers_once(runtime: Runtime, engine: AsyncEngine) -> None:
    wid = await subscribe(engine, ["deployment.recovered"])
    failing = sc.circuit_breaker_rollback("prod", "web", "ecs-svc/2", "ecs-svc/1", START)
    await handle(runtime, failing[:4])
    await handle(runtime, failing[4:])
    # The restore of ecs-svc/1 completed: no recovery (it is the rollback's end).
    assert await alerts(engine, type="deployment.recovered") == []
    fix = _fix("ecs-svc/3", START + timedelta(hours=1))
    await handle(runtime, fix + fix)
    await handle(runtime, sc.with_new_ids(fix))
    [recovered] = await alerts(engine, type="deployment.recovered")
    assert recovered["deployment_id"] == "ecs-svc/3"
    assert recovered["payload"]["recovers"] == "ecs-svc/2"
    assert recovered["summary"] == (
        "prod/web recovered: deployment ecs-svc/3 succeeded after ecs-svc/2 failed"
    )
    assert [r["payload"]["alert_id"] for r in await outbox(engine)] == [recovered["id"]]
    assert {r["payload"]["webhook_id"] for r in await outbox(engine)} == {wid}
    # The next success closes nothing: its last deployment with a verdict succeeded.
    await handle(runtime, _fix("ecs-svc/4", START + timedelta(hours=2)))
    assert len(await alerts(engine, type="deployment.recovered")) == 1
    assert len(await alerts(engine, type="deployment.succeeded")) == 2


async def test_a_success_after_a_crash_loop_recovers_it(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    begun = sc.deployment_event(
        "prod", "web", "ecs-svc/77", "SERVICE_DEPLOYMENT_IN_PROGRESS", START, ""
    )
    await handle(runtime, [begun, *sc.crash_loop("prod", "web", "ecs-svc/77", START)])
    [failed] = await alerts(engine, type="deployment.failed")
    cause = failed["payload"]["deployment"]["cause"]
    assert cause["category"] == "out_of_memory"
    await handle(runtime, _fix("ecs-svc/78", START + timedelta(hours=1)))
    [recovered] = await alerts(engine, type="deployment.recovered")
    assert recovered["payload"]["recovers"] == "ecs-svc/77"


async def test_evidence_is_gathered_only_for_alerts_raised_now(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    """The ingestion cost: once a failure's alerts are raised, a batch touching the
    failed deployment (or a succeeded one) runs the alerts' one insert, which finds
    them there, and nothing more: no evidence read, no payload rewritten."""
    from sqlalchemy import event

    from service.alerts.raising import raise_alerts
    from service.deployments.reads import read_snapshots
    from service.deployments.snapshot import DeploymentKey

    await handle(runtime, sc.crash_loop("prod", "web", "ecs-svc/77", START))
    await handle(runtime, _fix("ecs-svc/78", START + timedelta(hours=1)))
    [failed] = await alerts(engine, type="deployment.failed")
    assert failed["payload"]["deployment"]["cause"]["category"] == "out_of_memory"
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sync_engine = runtime.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", seen)
    try:
        async with runtime.sessionmaker() as session, session.begin():
            keys = await session.execute(
                text(
                    "SELECT account_id, region, id FROM deployments"
                    " WHERE id IN ('ecs-svc/77', 'ecs-svc/78')"
                )
            )
            snapshots = await read_snapshots(session, [DeploymentKey(*k) for k in keys])
            statements.clear()
            raised = await raise_alerts(session, [], snapshots, rules=AlertRules(), now=START)
    finally:
        event.remove(sync_engine, "before_cursor_execute", seen)
    assert raised.alerts == []
    assert [d.cause for d in raised.snapshots] == [None, None]
    assert len(statements) == 1
    assert statements[0].startswith("INSERT INTO alerts")
