"""ECS's own record of service deployments on the poller's leader, end to end: events
applied by the consumer's handler, ListServiceDeployments / DescribeServiceDeployments
/ DescribeServiceRevisions answered at the wire by the rig (moto has none), the
outcome, strategy and triggered alarms written through the ordered upsert, and the
alerts, the cause and the API following."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.config import Settings, load_settings
from service.consumer.handler import Handler, Message
from service.demo.events import ACCOUNT, REGION, iso, service_arn, task_lifecycle
from service.deployments import evidence
from service.deployments.cause import classify
from service.deployments.snapshot import DeploymentKey
from service.poller.service_deployments import (
    MATCH_WINDOW,
    UNAVAILABLE_BACKOFF_S,
    Ours,
    ServiceDeploymentChecker,
    Theirs,
    described_row,
    match,
)
from service.runtime import Runtime, open_runtime
from tests.alerts import scenarios as sc
from tests.rig.aws_proxy import AwsProxy
from tests.rig.service_deployments import ServiceDeploymentStore

READ_TOKEN = "read-token-0123456789abcdef"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
TD = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:7"
TD_OLD = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:6"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings with a read token, so the test can read the API too."""
    return load_settings(
        database_url=database_url, data_dir=tmp_path / "data", api_tokens=f"read:{READ_TOKEN}"
    )


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def checker(proxied_runtime: Runtime, clock: Clock) -> ServiceDeploymentChecker:
    apis = await proxied_runtime.aws_apis()
    return ServiceDeploymentChecker(proxied_runtime.sessionmaker, apis, clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(aws_proxy: AwsProxy) -> ServiceDeploymentStore:
    return aws_proxy.service_deployments


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def sd_arn(cluster: str, service: str) -> str:
    return (
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:service-deployment/{cluster}/{service}/"
        f"{uuid.uuid4().hex[:21]}"
    )


async def apply(runtime: Runtime, events: Sequence[dict[str, Any]]) -> None:
    handler = Handler(runtime.sessionmaker)
    result = await handler.handle([Message(str(i), json.dumps(e)) for i, e in enumerate(events)])
    assert not result.retry


OTHER_REGION = "us-west-2"


def in_region(event: dict[str, Any], region: str) -> dict[str, Any]:
    """``event`` (built in REGION) with its ARNs and envelope in ``region``."""
    moved: dict[str, Any] = json.loads(
        json.dumps(event).replace(f":{REGION}:{ACCOUNT}:", f":{region}:{ACCOUNT}:")
    )
    moved["region"] = region
    return moved


async def rolling_in_progress(
    runtime: Runtime,
    cluster: str,
    service: str,
    deployment_id: str,
    start: datetime,
    *,
    region: str = REGION,
) -> None:
    """A rolling deployment seen through its IN_PROGRESS event and one running task
    (in ``region``)."""
    events = [
        sc.deployment_event(
            cluster,
            service,
            deployment_id,
            "SERVICE_DEPLOYMENT_IN_PROGRESS",
            start,
            f"ECS deployment {deployment_id} in progress.",
        )
    ]
    events += task_lifecycle(
        random.Random(deployment_id),
        cluster=cluster,
        service=service,
        deployment_id=deployment_id,
        start=start + timedelta(seconds=5),
        stop=False,
    )
    await apply(runtime, [in_region(e, region) for e in events])


def hook_event(cluster: str, service: str, arn: str, at: datetime) -> dict[str, Any]:
    """A native blue/green deployment's hook event: keyed by its service deployment ARN."""
    event = sc.sample("hook_state_change_pause_awaiting_action_docs.json")
    event["id"] = str(uuid.uuid4())
    event["time"] = iso(at, 0)
    event["resources"] = [arn]
    detail = event["detail"]
    detail["clusterArn"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"
    detail["serviceArn"] = service_arn(cluster, service)
    detail["serviceDeploymentArn"] = arn
    detail["updatedAt"] = iso(at, 9)
    return dict(event)


async def deployment(engine: AsyncEngine, deployment_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM deployments WHERE id = :id"), {"id": deployment_id}
        )
        return dict(rows.mappings().one())


async def alert_types(engine: AsyncEngine, deployment_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT type FROM alerts WHERE deployment_id = :id ORDER BY created_at"),
            {"id": deployment_id},
        )
        return [r[0] for r in rows]


# ---------------------------------------------------------------- matching (pure)


def test_matching_takes_the_arn_first_then_the_nearest_start_of_the_same_task_definition() -> None:
    t0 = START
    ours = [
        Ours("arn:sd/bg", t0, None, None),
        Ours("ecs-svc/1", t0, TD, None),
        Ours("ecs-svc/2", t0 + timedelta(minutes=30), TD, None),
        Ours("ecs-svc/3", t0, TD_OLD, "arn:sd/seen"),
    ]
    theirs = [
        Theirs("arn:sd/bg", t0, "rev/1", TD),
        Theirs("arn:sd/far", t0 - timedelta(minutes=4), "rev/2", TD),
        Theirs("arn:sd/near", t0 + timedelta(seconds=20), "rev/3", TD),
        Theirs("arn:sd/late", t0 + timedelta(minutes=30) + MATCH_WINDOW * 2, "rev/4", TD),
        Theirs("arn:sd/seen", t0 + timedelta(hours=3), "rev/5", "web:99"),
    ]
    assert match(ours, theirs) == {
        "arn:sd/bg": "arn:sd/bg",  # its id is the ARN
        "ecs-svc/1": "arn:sd/near",  # the nearest start of the same task definition
        "ecs-svc/3": "arn:sd/seen",  # matched before: by ARN, whatever else differs
    }
    # ecs-svc/2 started 30 minutes later: "late" is too far from it, "far" and
    # "near" too. A service deployment another deployment here holds is not taken.
    held = frozenset({"arn:sd/near", "arn:sd/bg"})
    assert match(ours[1:2], theirs, held) == {"ecs-svc/1": "arn:sd/far"}
    # Another task definition, or one without a revision, never matches by time.
    assert match([Ours("ecs-svc/1", t0, TD_OLD, None)], theirs) == {}
    assert match([Ours("ecs-svc/1", t0, "web", None)], [Theirs("a", t0, "r", "web")]) == {}
    # The family:revision form and the ARN form are the same task definition.
    assert match([Ours("ecs-svc/1", t0, "web:7", None)], theirs[2:3]) == {
        "ecs-svc/1": "arn:sd/near"
    }


# ---------------------------------------------------------------- end to end


async def test_a_rollback_successful_ends_an_in_progress_deployment_matched_by_task_definition(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    checker: ServiceDeploymentChecker,
    store: ServiceDeploymentStore,
    aws_proxy: AwsProxy,
) -> None:
    """The rolling deployment's events carry no service deployment ARN: the one of the
    same task definition that started nearest matches, its ROLLBACK_SUCCESSFUL ends the
    deployment (rolled_back, its alerts raised once), and the matched ARN is kept."""
    cluster, service = unique("prod"), "web"
    svc = service_arn(cluster, service)
    await rolling_in_progress(proxied_runtime, cluster, service, "ecs-svc/7001", START)
    ended = START + timedelta(minutes=8)
    store.add(  # an earlier deployment of the old task definition
        sd_arn(cluster, service),
        service_arn=svc,
        status="SUCCESSFUL",
        created_at=START - timedelta(days=2),
        task_definition=TD_OLD,
    )
    decoy = store.add(  # the same task definition, started long after
        sd_arn(cluster, service),
        service_arn=svc,
        status="IN_PROGRESS",
        created_at=START + timedelta(minutes=40),
        task_definition=TD,
    )
    ours = store.add(
        sd_arn(cluster, service),
        service_arn=svc,
        status="ROLLBACK_SUCCESSFUL",
        status_reason="Rolled back because the circuit breaker tripped",
        created_at=START - timedelta(seconds=2),
        started_at=START,
        finished_at=ended,
        task_definition=TD,
        circuit_breaker={"status": "TRIGGERED", "failureCount": 3, "threshold": 3},
        alarms={"status": "DISABLED", "alarmNames": [], "triggeredAlarmNames": []},
    )
    assert (await deployment(engine, "ecs-svc/7001"))["task_definition"] == TD

    assert await checker.check() == 1

    row = await deployment(engine, "ecs-svc/7001")
    assert row["outcome"] == "rolled_back"
    assert row["finished_at"] == ended
    assert row["service_deployment_arn"] == ours["serviceDeploymentArn"]
    assert row["strategy"] == "ROLLING"
    assert row["triggered_alarms"] == []
    assert "ROLLBACK_SUCCESSFUL" in row["reason"]
    assert "circuit breaker: 3 failed tasks (threshold 3)" in row["reason"]
    # The failure and the rollback, as for the events (docs/alerts.md), once each.
    raised = ["deployment.failed", "deployment.rolled_back"]
    assert sorted(await alert_types(engine, "ecs-svc/7001")) == raised
    # Only the listed deployment near its start needed its revision; only ours was described.
    assert aws_proxy.count("DescribeServiceRevisions") == 1
    assert store.described == [[ours["serviceDeploymentArn"]]]
    assert decoy["serviceDeploymentArn"] not in {a for call in store.described for a in call}

    # Settled: the next run asks nothing about it, and alerts nothing again.
    lists = aws_proxy.count("ListServiceDeployments")
    assert await checker.check() == 0
    assert aws_proxy.count("ListServiceDeployments") == lists
    assert sorted(await alert_types(engine, "ecs-svc/7001")) == raised


async def test_a_blue_green_deployment_matches_by_arn_with_its_strategy_and_triggered_alarms(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    checker: ServiceDeploymentChecker,
    store: ServiceDeploymentStore,
    aws_proxy: AwsProxy,
    settings: Settings,
) -> None:
    """Keyed by its hook events' serviceDeploymentArn: matched by ARN (no revision
    asked). While in progress only the strategy is added; its ROLLBACK_FAILED with a
    triggered alarm ends it, the alarm becomes the cause's evidence, and the API
    shows the strategy."""
    cluster, service = unique("prod"), "web"
    arn = sd_arn(cluster, service)
    await apply(proxied_runtime, [hook_event(cluster, service, arn, START)])
    canary = {"canaryConfiguration": {"canaryPercent": 10.0, "canaryBakeTimeInMinutes": 5}}
    store.add(
        arn,
        service_arn=service_arn(cluster, service),
        status="IN_PROGRESS",
        created_at=START,
        updated_at=START + timedelta(minutes=2),
        task_definition=TD,
        strategy="CANARY",
        configuration=canary,
    )

    assert await checker.check() == 1
    row = await deployment(engine, arn)
    assert row["kind"] == "blue_green"
    assert row["outcome"] == "in_progress"  # an unfinished status orders nothing
    assert row["strategy"] == "CANARY"
    assert row["service_deployment_arn"] == arn
    assert aws_proxy.count("DescribeServiceRevisions") == 0

    store.add(
        arn,
        service_arn=service_arn(cluster, service),
        status="ROLLBACK_FAILED",
        status_reason="Alarm web-5xx triggered; the rollback failed",
        created_at=START,
        finished_at=START + timedelta(minutes=9),
        task_definition=TD,
        strategy="CANARY",
        configuration=canary,
        alarms={
            "status": "TRIGGERED",
            "alarmNames": ["web-5xx", "web-latency"],
            "triggeredAlarmNames": ["web-5xx"],
        },
    )
    assert await checker.check() == 1
    row = await deployment(engine, arn)
    assert row["outcome"] == "rollback_failed"
    assert row["triggered_alarms"] == ["web-5xx"]
    assert "CANARY 10.0%, 5 min canary bake" in row["reason"]

    async with engine.connect() as conn:
        key = DeploymentKey(row["account_id"], row["region"], arn)
        found = await evidence.gather(evidence.connection_reader(conn), key)
    assert found is not None
    assert [a.names for a in found.facts.alarms] == [("web-5xx",)]
    cause = classify(found.facts)
    assert cause.category == "alarm"
    assert any(e.kind == "alarm" and "web-5xx" in e.detail for e in cause.evidence)

    transport = httpx.ASGITransport(app=create_app(proxied_runtime))
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as c:
        listed = await c.get("/v1/deployments", params={"cluster": cluster})
        detail = await c.get(f"/v1/deployments/{quote(arn, safe='')}")
    assert listed.status_code == 200, listed.text
    assert [(i["id"], i["strategy"]) for i in listed.json()["items"]] == [(arn, "CANARY")]
    assert detail.status_code == 200, detail.text
    assert detail.json()["strategy"] == "CANARY"
    assert detail.json()["cause"]["category"] == "alarm"


async def test_describe_takes_twenty_service_deployments_a_call(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    checker: ServiceDeploymentChecker,
    store: ServiceDeploymentStore,
) -> None:
    """25 in-progress deployments on three services: one list per service, and the
    matched ARNs described 20 and 5."""
    cluster = unique("prod")
    arns: list[str] = []
    for n in range(25):
        service = f"svc{n % 3}"
        arn = sd_arn(cluster, service)
        arns.append(arn)
        at = START + timedelta(seconds=n)
        await apply(proxied_runtime, [hook_event(cluster, service, arn, at)])
        store.add(
            arn,
            service_arn=service_arn(cluster, service),
            status="SUCCESSFUL",
            created_at=at,
            finished_at=at + timedelta(minutes=5),
            task_definition=TD,
            strategy="BLUE_GREEN",
        )

    assert await checker.check() == 25

    assert [len(call) for call in store.described] == [20, 5]
    assert sorted(a for call in store.described for a in call) == sorted(arns)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT outcome, strategy FROM deployments WHERE id = ANY(:ids)"), {"ids": arns}
        )
        assert sorted(set(rows)) == [("succeeded", "BLUE_GREEN")]


@pytest.mark.parametrize(
    "refused", ["ListServiceDeployments", "DescribeServiceDeployments", "DescribeServiceRevisions"]
)
async def test_a_refused_api_is_logged_once_and_rests_without_failing_the_poll(
    refused: str,
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    checker: ServiceDeploymentChecker,
    store: ServiceDeploymentStore,
    aws_proxy: AwsProxy,
    clock: Clock,
) -> None:
    """AccessDenied (an IAM policy without the actions, or a region without the API):
    the run ends quietly with nothing written, one warning is logged, the next runs ask
    nothing until the back-off ends, and then the check works again."""
    cluster, service = unique("prod"), "web"
    await rolling_in_progress(proxied_runtime, cluster, service, "ecs-svc/7002", START)
    store.add(
        sd_arn(cluster, service),
        service_arn=service_arn(cluster, service),
        status="SUCCESSFUL",
        created_at=START,
        finished_at=START + timedelta(minutes=4),
        task_definition=TD,
    )
    store.refuse[refused] = "AccessDeniedException"

    with structlog.testing.capture_logs() as logs:
        assert await checker.check() == 0
        calls = sum(aws_proxy.calls.values())
        clock.now += UNAVAILABLE_BACKOFF_S / 2
        assert await checker.check() == 0
        assert await checker.check() == 0
    assert sum(aws_proxy.calls.values()) == calls  # resting: no call at all
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "service_deployments_unavailable"
    ]
    assert checker.resting
    assert (await deployment(engine, "ecs-svc/7002"))["outcome"] == "in_progress"

    del store.refuse[refused]
    clock.now += UNAVAILABLE_BACKOFF_S
    assert await checker.check() == 1
    assert not checker.resting
    assert (await deployment(engine, "ecs-svc/7002"))["outcome"] == "succeeded"


async def test_a_service_ecs_no_longer_knows_does_not_hold_up_the_others(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    checker: ServiceDeploymentChecker,
    store: ServiceDeploymentStore,
) -> None:
    """ServiceNotFoundException for one service (deleted meanwhile): that service is
    skipped for the run, the next one is still applied, and the check does not rest."""
    cluster = unique("prod")
    for service, deployment_id in (("gone", "ecs-svc/7003"), ("web", "ecs-svc/7004")):
        await rolling_in_progress(proxied_runtime, cluster, service, deployment_id, START)
        store.add(
            sd_arn(cluster, service),
            service_arn=service_arn(cluster, service),
            status="STOPPED",
            created_at=START,
            finished_at=START + timedelta(minutes=3),
            task_definition=TD,
        )
    store.gone.add(service_arn(cluster, "gone"))

    assert await checker.check() == 1

    assert (await deployment(engine, "ecs-svc/7003"))["outcome"] == "in_progress"
    assert (await deployment(engine, "ecs-svc/7004"))["outcome"] == "stopped"
    assert not checker.resting


async def test_the_adapter_pages_the_list_and_keeps_describes_to_twenty(
    proxied_runtime: Runtime, store: ServiceDeploymentStore, aws_proxy: AwsProxy
) -> None:
    """150 service deployments since the cut-off: two pages of 100 (newest first), the
    older ones left out; a Describe of 21 ARNs is refused before any call."""
    cluster, service = unique("prod"), "web"
    svc = service_arn(cluster, service)
    for n in range(160):
        store.add(
            sd_arn(cluster, service),
            service_arn=svc,
            status="SUCCESSFUL",
            created_at=START + timedelta(minutes=n),
            task_definition=TD,
        )
    ecs = (await proxied_runtime.aws_apis()).ecs
    listed = await ecs.list_service_deployments(
        cluster, svc, created_after=START + timedelta(minutes=9, seconds=30)
    )
    assert aws_proxy.count("ListServiceDeployments") == 2
    assert len(listed) == 150
    starts = [item["createdAt"] for item in listed]
    assert starts == sorted(starts, reverse=True)
    assert min(starts) == START + timedelta(minutes=10)

    with pytest.raises(ValueError, match="1 to 20"):
        await ecs.describe_service_deployments([f"arn:{n}" for n in range(21)])
    assert aws_proxy.count("DescribeServiceDeployments") == 0


@pytest.mark.parametrize(
    ("status", "outcome", "ordered", "finished"),
    [
        ("SUCCESSFUL", "succeeded", True, True),
        ("STOPPED", "stopped", True, True),
        ("ROLLBACK_IN_PROGRESS", "failed", True, False),
        ("ROLLBACK_SUCCESSFUL", "rolled_back", True, True),
        ("ROLLBACK_FAILED", "rollback_failed", True, True),
        ("PENDING", "in_progress", False, False),
        ("IN_PROGRESS", "in_progress", False, False),
        ("STOP_REQUESTED", "in_progress", False, False),
        ("ROLLBACK_REQUESTED", "in_progress", False, False),
    ],
)
def test_each_status_maps_to_an_outcome_and_only_an_end_is_ordered(
    status: str, outcome: str, ordered: bool, finished: bool
) -> None:
    at = START + timedelta(minutes=5)
    info = {
        "serviceDeploymentArn": "arn:sd",
        "status": status,
        "updatedAt": at,
        "startedAt": START,
        "deploymentConfiguration": {},
    }
    row = described_row((ACCOUNT, REGION), "ecs-svc/1", info, TD, now=START + timedelta(hours=1))
    assert row["outcome"] == outcome
    assert row["last_event_at"] == (at if ordered else None)
    assert row["finished_at"] == (at if finished else None)
    assert row["strategy"] == "ROLLING"  # ECS's default when none is named
    assert row["triggered_alarms"] is None  # the answer had no alarms block


async def test_a_circuit_breaker_failure_ends_rolled_back_by_ecs_record_alone(
    proxied_runtime: Runtime,
    engine: AsyncEngine,
    checker: ServiceDeploymentChecker,
    store: ServiceDeploymentStore,
) -> None:
    """FAILED by its event, and the rollback target's events never came: an older
    IN_PROGRESS description changes nothing, ROLLBACK_SUCCESSFUL makes it rolled_back."""
    cluster, service = unique("prod"), "web"
    await rolling_in_progress(proxied_runtime, cluster, service, "ecs-svc/7005", START)
    failed_at = START + timedelta(minutes=6)
    await apply(
        proxied_runtime,
        [
            sc.deployment_event(
                cluster,
                service,
                "ecs-svc/7005",
                "SERVICE_DEPLOYMENT_FAILED",
                failed_at,
                "ECS deployment circuit breaker: task failed to start.",
            )
        ],
    )
    arn = sd_arn(cluster, service)
    common: dict[str, Any] = {
        "service_arn": service_arn(cluster, service),
        "created_at": START,
        "task_definition": TD,
    }
    store.add(arn, status="IN_PROGRESS", updated_at=failed_at + timedelta(minutes=1), **common)
    await checker.check()
    row = await deployment(engine, "ecs-svc/7005")
    assert (row["outcome"], row["finished_at"]) == ("failed", failed_at)
    assert row["reason"] == "ECS deployment circuit breaker: task failed to start."

    ended = START + timedelta(minutes=11)
    store.add(arn, status="ROLLBACK_SUCCESSFUL", finished_at=ended, **common)
    assert await checker.check() == 1
    row = await deployment(engine, "ecs-svc/7005")
    assert (row["outcome"], row["finished_at"]) == ("rolled_back", ended)
    assert row["service_deployment_arn"] == arn


async def test_each_scope_is_asked_about_its_own_service_of_the_same_names(
    proxied_runtime: Runtime,
    proxied_settings: Settings,
    engine: AsyncEngine,
    store: ServiceDeploymentStore,
    clock: Clock,
) -> None:
    """Two regions hold a service of the same names, each with a deployment in
    progress: each is listed and described with its own region's client and ends by
    its own service deployment; a region ecswatch does not watch is never asked."""
    cluster, service = unique("prod"), "web"
    watched = proxied_settings.model_copy(update={"regions": (REGION, OTHER_REGION)})
    async with open_runtime(watched, pool_size=5) as runtime:
        scopes = await runtime.aws_scopes()
        checker = ServiceDeploymentChecker(
            runtime.sessionmaker, await runtime.aws_apis(), scopes=scopes, clock=clock
        )
        starts = {REGION: START, OTHER_REGION: START + timedelta(minutes=1), "eu-west-1": START}
        ids = {REGION: "ecs-svc/8001", OTHER_REGION: "ecs-svc/8002", "eu-west-1": "ecs-svc/8003"}
        for region, deployment_id in ids.items():
            await rolling_in_progress(
                proxied_runtime, cluster, service, deployment_id, starts[region], region=region
            )
            svc = service_arn(cluster, service).replace(f":{REGION}:", f":{region}:")
            store.add(
                sd_arn(cluster, service).replace(f":{REGION}:", f":{region}:"),
                service_arn=svc,
                status="ROLLBACK_SUCCESSFUL",
                created_at=starts[region] - timedelta(seconds=2),
                started_at=starts[region],
                finished_at=starts[region] + timedelta(minutes=8),
                task_definition=TD.replace(f":{REGION}:", f":{region}:"),
            )

        assert await checker.check() == 2

    for region in (REGION, OTHER_REGION):
        row = await deployment(engine, ids[region])
        assert row["outcome"] == "rolled_back", region
        assert f":{region}:" in row["service_deployment_arn"], region
    assert (await deployment(engine, ids["eu-west-1"]))["outcome"] == "in_progress"
    signed = {(operation, region) for operation, region in store.asked}
    for region in (REGION, OTHER_REGION):
        assert ("ListServiceDeployments", region) in signed
        assert ("DescribeServiceDeployments", region) in signed
    assert not {r for _, r in store.asked} - {REGION, OTHER_REGION}
