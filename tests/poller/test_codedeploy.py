"""CodeDeploy on the poller's leader, end to end on moto (through the counting proxy)
and PostgreSQL: a group mapped through GetDeploymentGroup gives its deployments and
their alerts the ECS service; BatchGetDeployments catches an outcome whose event
never came; blue/green alerts name their target groups."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service import telemetry
from service.alerts.raising import release_held
from service.alerts.rules import AlertRules
from service.alerts.slack import slack_message
from service.consumer.handler import Handler, Message
from service.enrich.describer import Describer
from service.poller.codedeploy import CodeDeployMapper
from service.poller.reconcile import Reconciler
from service.runtime import Runtime
from tests.alerts import scenarios as sc
from tests.alerts.test_raising import alerts, outbox, subscribe
from tests.poller.deadlocks import provoked_deadlocks
from tests.poller.fleet import Fleet, _client, build_fleet
from tests.rig.aws_proxy import AwsProxy

HOLD = AlertRules(codedeploy_hold_s=120)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def codedeploy_event(app: str, group: str, deployment_id: str, state: str, at: datetime) -> Any:
    event = sc.codedeploy(deployment_id, state, at, group=group)
    event["detail"]["application"] = app
    return event


async def handle(runtime: Runtime, events: list[dict[str, Any]], **kwargs: Any) -> None:
    handler = Handler(runtime.sessionmaker, alert_rules=HOLD, **kwargs)
    result = await handler.handle([Message(str(uuid.uuid4()), json.dumps(e)) for e in events])
    assert not result.retry


async def deployment(engine: AsyncEngine, deployment_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM deployments WHERE id = :id"), {"id": deployment_id}
            )
        ).mappings()
        return dict(row.one())


async def create_deployment(endpoint: str, fleet: Fleet, **group: Any) -> tuple[str, str]:
    """A group (see create_group) and a deployment in it: (application, deployment id)."""
    app = await create_group(endpoint, fleet, **group)
    async with _client("codedeploy", endpoint) as cd:
        created = await cd.create_deployment(
            applicationName=app,
            deploymentGroupName="dg",
            revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "{}"}},
        )
    return app, str(created["deploymentId"])


async def create_group(endpoint: str, fleet: Fleet, *, ecs_service: bool = True) -> str:
    """A CodeDeploy application and group deploying the fleet's service (blue/green)."""
    app = f"app{uuid.uuid4().hex[:8]}"
    async with _client("codedeploy", endpoint) as cd:
        await cd.create_application(applicationName=app, computePlatform="ECS")
        await cd.create_deployment_group(
            applicationName=app,
            deploymentGroupName="dg",
            serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
            ecsServices=(
                [{"clusterName": fleet.cluster, "serviceName": "web"}] if ecs_service else []
            ),
            loadBalancerInfo={
                "targetGroupPairInfoList": [
                    {
                        "targetGroups": [
                            {"name": fleet.blue_tg_arn.split("/")[-2]},
                            {"name": fleet.green_tg_arn.split("/")[-2]},
                        ],
                        "prodTrafficRoute": {"listenerArns": ["x"]},
                    }
                ]
            },
        )
    return app


@pytest.fixture
async def cd_fleet(moto_server: Any, aws_env: str) -> Fleet:
    return await build_fleet(moto_server.endpoint_url, tasks=0, native_blue_green=False)


@pytest.fixture
async def mapper(proxied_runtime: Runtime) -> CodeDeployMapper:
    apis = await proxied_runtime.aws_apis()
    return CodeDeployMapper(proxied_runtime.sessionmaker, apis, {}, rules=HOLD)


async def test_a_group_the_poller_maps_names_the_service_of_its_failed_deployment(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    moto_server: Any,
    cd_fleet: Fleet,
    mapper: CodeDeployMapper,
    aws_proxy: AwsProxy,
) -> None:
    """The group is in no ECSWATCH_CODEDEPLOY_GROUPS: its first deployment's failure
    waits for the mapping, then alerts once, naming the service and target groups."""
    app = await create_group(moto_server.endpoint_url, cd_fleet)
    wid = await subscribe(engine, ["deployment.failed"], service="web")
    now = _now()
    events = [
        codedeploy_event(app, "dg", "d-FIRST", "START", now - timedelta(seconds=30)),
        codedeploy_event(app, "dg", "d-FIRST", "FAILURE", now),
    ]
    await handle(proxied_runtime, events)
    assert await alerts(engine) == []  # held: nobody knows the service yet
    assert (await deployment(engine, "d-FIRST"))["service_name"] is None

    await mapper.map_known_groups()
    row = await deployment(engine, "d-FIRST")
    assert (row["cluster_name"], row["service_name"]) == (cd_fleet.cluster, "web")
    [alert] = await alerts(engine)
    assert (alert["type"], alert["cluster_name"], alert["service_name"]) == (
        "deployment.failed",
        cd_fleet.cluster,
        "web",
    )
    blue, green = (arn.split("/")[-2] for arn in (cd_fleet.blue_tg_arn, cd_fleet.green_tg_arn))
    body = alert["payload"]
    assert [tg["name"] for tg in body["deployment"]["target_groups"]] == [blue, green]
    assert f"(target groups {blue}, {green})" in body["summary"]
    assert f"of {cd_fleet.cluster}/web failed" in body["summary"]
    assert [r["payload"]["webhook_id"] for r in await outbox(engine)] == [wid]

    # Repeats: the mapper again, the events again under new ids: nothing new.
    await mapper.map_known_groups()
    await handle(proxied_runtime, sc.with_new_ids(events))
    assert len(await alerts(engine)) == 1
    assert len(await outbox(engine)) == 1
    calls = aws_proxy.count("GetDeploymentGroup")
    assert calls == 1  # kept in codedeploy_groups: not asked again within the hour

    # The group's next deployment is named at once by the consumer: no wait.
    await handle(proxied_runtime, [codedeploy_event(app, "dg", "d-NEXT", "FAILURE", _now())])
    [alert] = await alerts(engine, deployment_id="d-NEXT")
    assert (alert["cluster_name"], alert["service_name"]) == (cd_fleet.cluster, "web")
    assert aws_proxy.count("GetDeploymentGroup") == calls


async def test_held_alerts_go_out_without_a_service_when_no_mapping_comes(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    now = _now()
    await handle(runtime, [codedeploy_event("nope", "dg", "d-LONE", "FAILURE", now)])
    assert await alerts(engine) == []
    async with runtime.sessionmaker() as session, session.begin():
        assert await release_held(session, rules=HOLD, now=now + timedelta(seconds=60)) == []
    async with runtime.sessionmaker() as session, session.begin():
        [raised] = await release_held(session, rules=HOLD, now=now + timedelta(seconds=121))
    assert raised.deployment_id == "d-LONE"
    [alert] = await alerts(engine)
    assert alert["service_name"] is None
    async with runtime.sessionmaker() as session, session.begin():
        assert await release_held(session, rules=HOLD, now=now + timedelta(seconds=300)) == []
    # An old event (a replay) is past its hold already: it alerts at once.
    old = now - timedelta(hours=1)
    await handle(runtime, [codedeploy_event("nope", "dg", "d-OLD", "FAILURE", old)])
    assert len(await alerts(engine, deployment_id="d-OLD")) == 1


async def test_a_group_codedeploy_maps_to_no_service_releases_its_alerts_at_once(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    moto_server: Any,
    cd_fleet: Fleet,
    mapper: CodeDeployMapper,
) -> None:
    app = await create_group(moto_server.endpoint_url, cd_fleet, ecs_service=False)
    await handle(proxied_runtime, [codedeploy_event(app, "dg", "d-NOSVC", "FAILURE", _now())])
    assert await alerts(engine) == []
    await mapper.map_known_groups()
    [alert] = await alerts(engine)
    assert alert["deployment_id"] == "d-NOSVC"
    assert alert["service_name"] is None
    # CodeDeploy's target group pair is still named.
    assert len(alert["payload"]["deployment"]["target_groups"]) == 2


def _status(status: str, **extra: Any) -> Any:
    def edit(body: dict[str, Any]) -> dict[str, Any]:
        for info in body.get("deploymentsInfo", []):
            info["status"] = status
            info.update(extra)
        return body

    return edit


async def test_batch_get_deployments_catches_a_failure_whose_event_never_came(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    moto_server: Any,
    cd_fleet: Fleet,
    mapper: CodeDeployMapper,
    aws_proxy: AwsProxy,
) -> None:
    app, deployment_id = await create_deployment(moto_server.endpoint_url, cd_fleet)
    wid = await subscribe(engine, ["deployment.failed"], service="web")
    start = _now() - timedelta(minutes=5)
    await handle(proxied_runtime, [codedeploy_event(app, "dg", deployment_id, "START", start)])
    await mapper.map_known_groups()

    # moto's deployment is still "Created": nothing ends, nothing alerts.
    assert await mapper.check_in_progress() == 0
    assert (await deployment(engine, deployment_id))["outcome"] == "in_progress"
    assert aws_proxy.count("BatchGetDeployments") == 1

    # CodeDeploy says Failed (the FAILURE event was lost on the way).
    completed = _now()
    aws_proxy.rewrite(
        "BatchGetDeployments",
        _status(
            "Failed",
            completeTime=completed.timestamp(),
            errorInformation={"code": "HEALTH_CONSTRAINTS", "message": "too many failed tasks"},
        ),
    )
    assert await mapper.check_in_progress() == 1
    row = await deployment(engine, deployment_id)
    assert row["outcome"] == "failed"
    assert row["finished_at"] == completed
    assert "HEALTH_CONSTRAINTS: too many failed tasks" in row["reason"]
    [alert] = await alerts(engine)
    assert (alert["type"], alert["service_name"]) == ("deployment.failed", "web")
    # The poller's transaction classifies the cause too: CodeDeploy's error.
    assert alert["payload"]["deployment"]["cause"]["category"] == "codedeploy"
    assert [r["payload"]["webhook_id"] for r in await outbox(engine)] == [wid]

    # No longer in progress: not asked again; the late event changes nothing.
    assert await mapper.check_in_progress() == 0
    assert aws_proxy.count("BatchGetDeployments") == 2
    late = codedeploy_event(app, "dg", deployment_id, "FAILURE", completed)
    await handle(proxied_runtime, [late, *sc.with_new_ids([late])])
    assert len(await alerts(engine)) == 1
    assert (await deployment(engine, deployment_id))["outcome"] == "failed"


async def test_a_late_event_and_the_check_agree_in_either_order(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    moto_server: Any,
    cd_fleet: Fleet,
    mapper: CodeDeployMapper,
    aws_proxy: AwsProxy,
) -> None:
    """SUCCESS seen by the check, then an older START arrives: still succeeded, once."""
    app, deployment_id = await create_deployment(moto_server.endpoint_url, cd_fleet)
    start = _now() - timedelta(minutes=5)
    await handle(proxied_runtime, [codedeploy_event(app, "dg", deployment_id, "READY", start)])
    await mapper.map_known_groups()
    aws_proxy.rewrite("BatchGetDeployments", _status("Succeeded", completeTime=_now().timestamp()))
    assert await mapper.check_in_progress() == 1
    await handle(proxied_runtime, [codedeploy_event(app, "dg", deployment_id, "START", start)])
    assert (await deployment(engine, deployment_id))["outcome"] == "succeeded"
    assert [a["type"] for a in await alerts(engine)] == ["deployment.succeeded"]


async def test_in_progress_deployments_are_checked_25_a_call(
    proxied_runtime: Runtime, engine: AsyncEngine, mapper: CodeDeployMapper, aws_proxy: AwsProxy
) -> None:
    start = _now() - timedelta(minutes=1)
    events = [codedeploy_event("shop", "dg", f"d-{n:04}", "START", start) for n in range(30)]
    old = codedeploy_event("shop", "dg", "d-ANCIENT", "START", start - timedelta(days=8))
    await handle(proxied_runtime, [*events, old])
    aws_proxy.reset()
    assert await mapper.check_in_progress() == 0  # CodeDeploy knows none of them
    assert aws_proxy.count("BatchGetDeployments") == 2  # 25 + 5; the 8-day-old one not asked


async def test_native_blue_green_hook_failure_names_both_target_groups(
    proxied_runtime: Runtime, engine: AsyncEngine, moto_server: Any
) -> None:
    fleet = await build_fleet(moto_server.endpoint_url, tasks=0, native_blue_green=True)
    scopes = await proxied_runtime.aws_scopes()
    async with Describer(proxied_runtime.sessionmaker, scopes) as describer:
        await Reconciler(proxied_runtime.sessionmaker, scopes, describer).reconcile_one(
            fleet.cluster
        )
    event = sc.hook_failed(_now())
    detail = event["detail"]
    detail["clusterArn"] = fleet.cluster_arn
    detail["serviceArn"] = fleet.service_arn
    detail["serviceDeploymentArn"] = (
        fleet.service_arn.replace(":service/", ":service-deployment/") + "/bg1"
    )
    await handle(proxied_runtime, [event])
    [alert] = await alerts(engine)
    body = alert["payload"]
    tgs = body["deployment"]["target_groups"]
    assert [(tg["name"], tg["arn"]) for tg in tgs] == [
        (fleet.blue_tg_arn.split("/")[-2], fleet.blue_tg_arn),
        (fleet.green_tg_arn.split("/")[-2], fleet.green_tg_arn),
    ]
    names = ", ".join(tg["name"] for tg in tgs)
    assert body["summary"].endswith(f"(target groups {names})")
    slack = slack_message(body)
    fields = [f["text"] for f in slack["blocks"][1]["fields"]]
    assert f"*Target groups*\n{names}" in fields


async def test_the_check_runs_again_after_a_deadlock_and_alerts_once(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    moto_server: Any,
    cd_fleet: Fleet,
    mapper: CodeDeployMapper,
    aws_proxy: AwsProxy,
) -> None:
    app, deployment_id = await create_deployment(moto_server.endpoint_url, cd_fleet)
    await subscribe(engine, ["deployment.failed"], service="web")
    start = _now() - timedelta(minutes=5)
    await handle(proxied_runtime, [codedeploy_event(app, "dg", deployment_id, "START", start)])
    await mapper.map_known_groups()
    aws_proxy.rewrite("BatchGetDeployments", _status("Failed", completeTime=_now().timestamp()))
    retried = telemetry.DB_CONTENTION.labels("codedeploy_deployments", "retried")._value.get()
    # The first write of the failed outcome meets a deadlock: the whole transaction
    # (deployment, alert, outbox rows) runs again, once.
    async with provoked_deadlocks(engine, "deployments", "NEW.outcome = 'failed'", 1):
        assert await mapper.check_in_progress() == 1
    assert telemetry.DB_CONTENTION.labels("codedeploy_deployments", "retried")._value.get() == (
        retried + 1
    )
    assert (await deployment(engine, deployment_id))["outcome"] == "failed"
    assert len(await alerts(engine)) == 1
    assert len(await outbox(engine)) == 1
