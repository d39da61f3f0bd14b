"""``GET /v1/deployments/{deployment_id}``: events applied by the consumer's handler,
ALB points stored by the poller's own writer, then the route reads them back."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.queries import DIRECT_READ_LISTENERS
from service.aws.scopes import Scope, scope_of_arn
from service.consumer.handler import Handler, Message
from service.demo.events import deployment_events, iso, service_arn, task_lifecycle
from service.deployments import evidence
from service.deployments.cause import classify
from service.deployments.snapshot import DeploymentKey
from service.poller.metrics import ALB, Query, dimensions_key, point_rows, store_points
from service.runtime import Runtime

START = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
TARGET_GROUP = "targetgroup/web/0123456789abcdef"
LOAD_BALANCER = "app/web/fedcba9876543210"


async def _apply(runtime: Runtime, events: Sequence[dict[str, Any]]) -> None:
    handler = Handler(runtime.sessionmaker)
    result = await handler.handle([Message(str(i), json.dumps(e)) for i, e in enumerate(events)])
    assert not result.retry


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return loaded


async def _store_alb_points(
    runtime: Runtime,
    cluster: str,
    service: str,
    points: dict[str, list[tuple[datetime, float]]],
    scope: Scope | None = None,
) -> None:
    """ALB points as the poller stores a GetMetricData answer (``name/statistic`` keys),
    read by default in the scope of the demo's service ARN."""
    scope = scope or scope_of_arn(service_arn(cluster, service))
    assert scope is not None
    dims = (("LoadBalancer", LOAD_BALANCER), ("TargetGroup", TARGET_GROUP))
    batch = [
        Query(f"q{i}", ALB, *key.split("/"), "Count", dims, cluster, service)
        for i, key in enumerate(points)
    ]
    results = [
        {"Id": q.id, "Timestamps": [t for t, _ in pts], "Values": [v for _, v in pts]}
        for q, pts in zip(batch, points.values(), strict=True)
    ]
    async with runtime.sessionmaker() as session, session.begin():
        await store_points(session, point_rows(batch, results, scope))
    assert dimensions_key(dims) == f"LoadBalancer={LOAD_BALANCER};TargetGroup={TARGET_GROUP}"


async def test_an_oom_crash_loop_with_its_timeline_failed_tasks_and_target_health(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    rng = random.Random(17)
    deployment = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/2", start=START, outcome="failed"
    )
    failing = [
        task_lifecycle(rng, deployment_id="ecs-svc/2", fail=True, start=at)
        for at in (START, START + timedelta(seconds=1), START + timedelta(seconds=2))
    ]
    # A task of the same deployment stopped by a scale-in: replaced, not failed.
    replaced = task_lifecycle(rng, deployment_id="ecs-svc/2", start=START)
    await _apply(runtime, [*deployment, *[e for t in failing for e in t], *replaced])
    await _store_alb_points(
        runtime,
        "prod",
        "web",
        {
            "UnHealthyHostCount/Maximum": [
                (START - timedelta(minutes=5), 4.0),  # before the deployment: left out
                (START + timedelta(minutes=2), 2.0),
                (START + timedelta(minutes=13), 1.0),  # within 10 minutes of its end
                (START + timedelta(minutes=30), 3.0),  # long after: left out
            ],
            "HTTPCode_Target_5XX_Count/Sum": [(START + timedelta(minutes=3), 14.0)],
        },
    )
    # The same names and time read in another account: its own point, never this one's.
    await _store_alb_points(
        runtime,
        "prod",
        "web",
        {"UnHealthyHostCount/Maximum": [(START + timedelta(minutes=2), 99.0)]},
        Scope("210987654321", "us-east-1"),
    )

    response = await client.get("/v1/deployments/ecs-svc/2")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "ecs-svc/2"
    assert (body["cluster"], body["service"], body["outcome"]) == ("prod", "web", "failed")
    assert body["service_arn"] == service_arn("prod", "web")

    cause = body["cause"]
    assert cause["category"] == "out_of_memory"
    assert (cause["container"], cause["exit_code"]) == ("app", 137)
    assert cause["summary"] == (
        "container app was killed for memory (exit 137, OutOfMemoryError) in 3 of 3 failed tasks"
    )
    assert [e["kind"] for e in cause["evidence"]] == ["task_stopped"] * 3
    stamps = [e["at"] for e in cause["evidence"]]
    assert stamps == sorted(stamps)

    failed_arns = {t[0]["detail"]["taskArn"] for t in failing}
    assert {t["arn"] for t in body["failed_tasks"]} == failed_arns
    assert body["failed_tasks_count"] == 3
    for task in body["failed_tasks"]:
        assert task["stop_code"] == "EssentialContainerExited"
        assert task["stopped_reason"] == "Essential container in task exited"
        assert task["containers"] == [
            {
                "name": "app",
                "exit_code": 137,
                "reason": "OutOfMemoryError: Container killed due to memory usage",
            }
        ]

    every = [*deployment, *[e for t in failing for e in t], *replaced]
    timeline = body["timeline"]
    assert {t["event_id"] for t in timeline} == {e["id"] for e in every}
    assert [t["at"] for t in timeline] == sorted(t["at"] for t in timeline)
    kinds = {t["event_id"]: t["kind"] for t in timeline}
    assert {kinds[e["id"]] for e in deployment} == {"deployment"}
    assert {kinds[e["id"]] for e in replaced} == {"task"}
    failed_event = next(t for t in timeline if t["event_id"] == deployment[-1]["id"])
    assert failed_event["summary"] == (
        "SERVICE_DEPLOYMENT_FAILED: ECS deployment circuit breaker: task failed to start."
    )

    health = body["target_health"]
    assert [(p["name"], p["statistic"], p["value"]) for p in health] == [
        ("UnHealthyHostCount", "Maximum", 2.0),
        ("HTTPCode_Target_5XX_Count", "Sum", 14.0),
        ("UnHealthyHostCount", "Maximum", 1.0),
    ]
    assert {p["target_group"] for p in health} == {TARGET_GROUP}

    # The same facts over a plain SQLAlchemy connection (how other writers read them).
    async with engine.connect() as conn:
        [key] = await conn.execute(
            text("SELECT account_id, region, id FROM deployments WHERE id = 'ecs-svc/2'")
        )
        gathered = await evidence.gather(evidence.connection_reader(conn), DeploymentKey(*key))
    assert gathered is not None
    assert gathered.needs_cause
    assert classify(gathered.facts).as_dict()["summary"] == cause["summary"]


async def test_elb_health_check_failures_with_the_target_groups_points(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    rng = random.Random(3)
    deployment = deployment_events(
        cluster="prod",
        service="api",
        deployment_id="ecs-svc/7",
        start=START,
        outcome="failed",
        rollback_to="ecs-svc/6",
    )
    reason = (
        "Task failed ELB health checks in (target-group arn:aws:elasticloadbalancing:"
        "us-east-1:123456789012:targetgroup/web/0123456789abcdef)"
    )
    tasks = [
        task_lifecycle(
            rng,
            service="api",
            deployment_id="ecs-svc/7",
            start=START + timedelta(seconds=n),
            stop_code="ServiceSchedulerInitiated",
            stopped_reason=reason,
            exit_code=143,
        )
        for n in range(2)
    ]
    await _apply(runtime, [*deployment, *[e for t in tasks for e in t]])
    unhealthy = [(START + timedelta(minutes=1), 2.0)]
    await _store_alb_points(runtime, "prod", "api", {"UnHealthyHostCount/Maximum": unhealthy})

    body = (await client.get("/v1/deployments/" + quote("ecs-svc/7", safe=""))).json()
    assert body["outcome"] == "rolled_back"
    cause = body["cause"]
    assert cause["category"] == "health_check"
    assert cause["summary"] == (
        "tasks failed the load balancer's health checks of target group web in 2 of 2 failed tasks"
    )
    kinds = [e["kind"] for e in cause["evidence"]]
    assert kinds == ["task_stopped", "task_stopped", "target_health"]
    assert [t["containers"][0]["exit_code"] for t in body["failed_tasks"]] == [143, 143]


async def test_a_placement_failure_and_a_spot_interruption_from_aws_samples(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    placement = _sample("service_action_task_placement_failure_ec2_cpu.json")
    spot = _sample("task_state_change_fargate_spot_interruption_current_docs_snippet.json")
    # The samples' service and cluster (default/servicetest); the deployment starts
    # shortly before the placement failure's event.
    sample_time = datetime.fromisoformat(placement["time"].replace("Z", "+00:00"))
    deployment = deployment_events(
        cluster="default",
        service="servicetest",
        deployment_id="ecs-svc/123",
        start=sample_time - timedelta(minutes=5),
        outcome="failed",
    )
    for item in deployment:  # in the samples' account and region
        item["account"], item["region"] = placement["account"], placement["region"]
        item["resources"] = placement["resources"]
        item["detail"]["clusterArn"] = placement["detail"]["clusterArn"]
    # The snippet has no region and its ARNs name us-east-1: here it is a task of the
    # deployment's scope (deployment ids are unique only within one).
    spot = json.loads(json.dumps(spot).replace(":us-east-1:", f":{placement['region']}:"))
    spot["region"] = placement["region"]
    spot["time"] = iso(sample_time)
    spot["detail"]["startedBy"] = "ecs-svc/123"
    spot["detail"]["group"] = "service:servicetest"
    spot["detail"]["lastStatus"] = "STOPPED"
    spot["detail"]["version"] = 3
    # The snippet's resources name another task id than its taskArn; ECS names the task.
    spot["resources"] = [spot["detail"]["taskArn"]]
    await _apply(runtime, [*deployment, placement, spot])

    body = (await client.get("/v1/deployments/ecs-svc/123")).json()
    assert body["cause"]["category"] == "placement"
    assert body["cause"]["summary"] == "ECS could not place the tasks: not enough CPU"
    assert [e["kind"] for e in body["cause"]["evidence"]] == ["service_action"]
    assert body["failed_tasks"] == []  # the Spot interruption only replaced a task
    kinds = {t["event_id"]: t["kind"] for t in body["timeline"]}
    assert kinds[placement["id"]] == "service_action"
    assert kinds[spot["id"]] == "task"


async def test_a_succeeded_deployment_has_no_cause_and_an_unknown_one_is_404(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _apply(
        runtime,
        deployment_events(cluster="prod", service="web", deployment_id="ecs-svc/1", start=START),
    )
    body = (await client.get("/v1/deployments/ecs-svc/1")).json()
    assert (body["outcome"], body["cause"], body["failed_tasks"]) == ("succeeded", None, [])
    assert len(body["timeline"]) == 2
    assert body["target_health"] == []

    missing = await client.get("/v1/deployments/ecs-svc/404")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["status"] == 404
    # The list route is still the list route.
    listed = (await client.get("/v1/deployments")).json()
    assert [d["id"] for d in listed["items"]] == ["ecs-svc/1"]


# ---------------------------------------------------------------- query plans

SEED = """
INSERT INTO deployments (account_id, region, id, cluster_arn, cluster_name, service_arn,
                         service_name, kind, outcome, task_definition, event_ids, started_at,
                         updated_at, finished_at, last_event_at)
SELECT '123456789012', 'us-east-1', 'ecs-svc/' || d,
       'arn:aws:ecs:us-east-1:123456789012:cluster/c' || (d % 10),
       'c' || (d % 10), 'arn:aws:ecs:us-east-1:123456789012:service/c' || (d % 10) || '/svc-' || d,
       'svc-' || d, 'rolling', 'failed', 'arn:aws:ecs:us-east-1:123456789012:task-definition/svc-'
       || d || ':1', jsonb_build_array(md5('event' || d)),
       now() - make_interval(mins => d), now() - make_interval(mins => d),
       now() - make_interval(mins => d) + interval '5 minutes',
       now() - make_interval(mins => d) + interval '5 minutes'
FROM generate_series(1, 5000) AS d;
INSERT INTO services (arn, name, cluster_arn, cluster_name, status)
SELECT 'arn:aws:ecs:us-east-1:123456789012:service/c' || (d % 10) || '/svc-' || d, 'svc-' || d,
       'arn:aws:ecs:us-east-1:123456789012:cluster/c' || (d % 10), 'c' || (d % 10), 'ACTIVE'
FROM generate_series(1, 5000) AS d;
INSERT INTO tasks (arn, id, cluster_name, service_name, deployment_id, family, revision,
                   last_status, stop_code, stopped_reason, containers, created_at, updated_at)
SELECT 'arn:aws:ecs:us-east-1:123456789012:task/c' || (g / 10 % 10) || '/' || md5(g::text),
       md5(g::text), 'c' || (g / 10 % 10), 'svc-' || (g / 10), 'ecs-svc/' || (g / 10),
       'svc-' || (g / 10), 1, 'STOPPED', 'EssentialContainerExited',
       'Essential container in task exited',
       jsonb_build_array(jsonb_build_object('name', 'app', 'exit_code', 1)),
       now() - make_interval(mins => g / 10), now() - make_interval(mins => g / 10)
FROM generate_series(10, 50009) AS g;
INSERT INTO raw_events (id, detail_type, source, time, resources, detail)
SELECT md5('event' || g), CASE WHEN g % 3 = 0 THEN 'ECS Service Action'
                               ELSE 'ECS Task State Change' END, 'aws.ecs',
       now() - make_interval(secs => g * 6),
       CASE WHEN g % 3 = 0
            THEN jsonb_build_array('arn:aws:ecs:us-east-1:123456789012:service/c'
                                   || (g / 10 % 10) || '/svc-' || (g / 10))
            ELSE jsonb_build_array('arn:aws:ecs:us-east-1:123456789012:task/c' || (g / 10 % 10)
                                   || '/' || md5(g::text)) END,
       jsonb_build_object('eventName', 'SERVICE_TASK_PLACEMENT_FAILURE', 'reason', 'RESOURCE:CPU')
FROM generate_series(1, 100000) AS g;
INSERT INTO metric_points (namespace, name, statistic, cluster_name, service_name, dimensions,
                           dimensions_key, timestamp, value)
SELECT 'AWS/ApplicationELB', 'UnHealthyHostCount', 'Maximum', 'c' || (g % 10),
       'svc-' || (g % 5000),
       jsonb_build_object('TargetGroup', 'targetgroup/t' || (g % 5000) || '/x'),
       'TargetGroup=targetgroup/t' || (g % 5000) || '/x', now() - make_interval(secs => g * 3), 1
FROM generate_series(1, 100000) AS g
"""

BIG_TABLES = {"deployments", "tasks", "raw_events", "metric_points", "services"}


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


async def test_the_detail_reads_through_indexes(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    async with engine.begin() as conn:
        for statement in SEED.split(";"):
            await conn.exec_driver_sql(statement)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))

    captured: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    def record_direct(statement: str, args: Sequence[Any]) -> None:
        captured.append((statement, tuple(args)))

    sync_engine = runtime.read_engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    DIRECT_READ_LISTENERS.append(record_direct)
    try:
        response = await client.get("/v1/deployments/ecs-svc/17")
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
        DIRECT_READ_LISTENERS.remove(record_direct)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["failed_tasks"]) == 10
    assert body["cause"]["category"] == "container_exit"
    # The scopes of the id, the deployment, its tasks, its events, its service's ALB points.
    assert len(captured) == 5, [s for s, _ in captured]

    await _assert_read_through_indexes(runtime, captured)


#: A raw_events partition of under 1/SMALL_SHARE of the largest one's pages may be
#: read any way (the seed fills one partition a day, about 14,400 events each).
SMALL_SHARE = 10


async def _assert_read_through_indexes(runtime: Runtime, captured: list[tuple[str, Any]]) -> None:
    """Each statement's plan scans the big tables through their indexes only."""
    async with runtime.engine.connect() as conn:
        # raw_events is partitioned by day: a plan names each partition and its own
        # copy of an index; read them as the table and index they belong to.
        inherits = await conn.exec_driver_sql(
            "SELECT c.relname, p.relname FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        )
        parent_of = {str(child): str(parent) for child, parent in inherits.all()}
        # The partitions of days ahead are empty, and in the first hours after midnight
        # the day that has begun holds the few seed rows whose times (relative to now)
        # fall in it: PostgreSQL reads such a partition whichever way is cheapest
        # (whole, or in time order), so its scans are not the plan's shape.
        small = await conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'raw_events'::regclass"
            f" AND c.relpages * {SMALL_SHARE} < (SELECT max(k.relpages) FROM pg_inherits j"
            "  JOIN pg_class k ON k.oid = j.inhrelid WHERE j.inhparent = 'raw_events'::regclass)"
        )
        small_tables = set(small.scalars())
        small_indexes = set(
            (
                await conn.exec_driver_sql(
                    "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                    " JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = ANY($1)",
                    (sorted(small_tables),),
                )
            ).scalars()
        )

        def on_small(node: dict[str, Any]) -> bool:
            return (
                node.get("Partition") in small_tables
                or node.get("Partition index") in small_indexes
            )

        for statement, parameters in captured:
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            plan = result.scalar_one()[0]["Plan"]
            for node in _plan_nodes(plan):
                for key in ("Relation Name", "Index Name"):
                    if key in node:
                        node["Partition" if key == "Relation Name" else "Partition index"] = node[
                            key
                        ]
                        node[key] = parent_of.get(node[key], node[key])
            scans = {
                (n.get("Relation Name"), n["Node Type"])
                for n in _plan_nodes(plan)
                if n.get("Relation Name") in BIG_TABLES and not on_small(n)
            }
            assert scans, (statement, plan)
            assert all(kind != "Seq Scan" for _, kind in scans), (statement, scans)
            # Events by id, by resource (GIN) or by type and time; never a walk of
            # all events in time order filtered by resource.
            event_indexes = {
                n.get("Index Name")
                for n in _plan_nodes(plan)
                if (
                    n.get("Relation Name") == "raw_events"
                    or n.get("Index Name", "").startswith("ix_raw_events")
                )
                and not on_small(n)
            }
            assert event_indexes <= {
                "pk_raw_events",
                "ix_raw_events_resources",
                "ix_raw_events_detail_type_time",
                None,  # a Bitmap Heap Scan names its index on its child node
            }, (statement, plan)


async def test_many_deployments_are_gathered_in_four_statements(
    engine: AsyncEngine, runtime: Runtime
) -> None:
    """What the consumer gathers for the causes a batch owes: one set of statements
    for all of them, each deployment with what gathering it alone finds."""
    async with engine.begin() as conn:
        for statement in SEED.split(";"):
            await conn.exec_driver_sql(statement)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
        # One point in the scope of each of two services, a minute into its deployment.
        await conn.exec_driver_sql(
            "INSERT INTO metric_points (namespace, name, statistic, account_id, region,"
            " cluster_name, service_name, dimensions, dimensions_key, timestamp, value)"
            " SELECT 'AWS/ApplicationELB', 'UnHealthyHostCount', 'Maximum', '123456789012',"
            " 'us-east-1', 'c' || (d % 10), 'svc-' || d,"
            " jsonb_build_object('TargetGroup', 'targetgroup/own-' || d || '/x'),"
            " 'TargetGroup=targetgroup/own-' || d || '/x', now() - make_interval(mins => d - 1), 2"
            " FROM unnest(ARRAY[3, 17]) AS d"
        )
    ids = [
        DeploymentKey("123456789012", "us-east-1", i)
        for i in ("ecs-svc/17", "ecs-svc/none", "ecs-svc/4000", "ecs-svc/17", "ecs-svc/3")
    ]
    # An id of the seed in another scope is another deployment: of a service of the
    # same names there, with none of the seed's tasks (their ARNs are of the seed's
    # scope), and in a third scope, none.
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO deployments (account_id, region, id, cluster_name, service_name,"
            " kind, outcome, started_at, updated_at, finished_at)"
            " VALUES ('210987654321', 'us-east-1', 'ecs-svc/3', 'c3', 'svc-3', 'rolling',"
            " 'failed', now() - interval '3 minutes', now(), now())"
        )
    ids += [
        DeploymentKey("210987654321", "us-east-1", "ecs-svc/3"),
        DeploymentKey("210987654321", "eu-west-1", "ecs-svc/3"),
    ]
    k17, knone, k4000, _, k3, other, elsewhere = ids
    captured: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    async with runtime.engine.connect() as conn:
        read = evidence.connection_reader(conn)
        alone = {i: await evidence.gather(read, i) for i in ids}
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
        try:
            many = await evidence.gather_many(read, ids)
            for_causes = await evidence.gather_many(read, ids, task_events=False)
        finally:
            event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
    # The deployments, their tasks, their events, their services' ALB points; twice.
    assert len(captured) == 8, [s for s, _ in captured]
    assert alone[knone] is None
    assert alone[elsewhere] is None
    assert set(many) == set(for_causes) == {k17, k4000, k3, other}
    assert many[other].tasks == []
    assert many[other].points == []
    assert many[k3].tasks
    for i, gathered in many.items():
        assert gathered == alone[i]
        if i == other:
            continue
        assert gathered.tasks
        assert gathered.events
        # Without the tasks' events: the same facts, so the same cause.
        without = for_causes[i]
        assert without.facts == gathered.facts
        assert (without.deployment, without.tasks, without.points) == (
            gathered.deployment,
            gathered.tasks,
            gathered.points,
        )
        own = set(gathered.deployment["event_ids"])
        assert {e["id"] for e in without.events} == {
            e["id"]
            for e in gathered.events
            if e["detail_type"] != "ECS Task State Change" or e["id"] in own
        }
    assert any(e["detail_type"] == "ECS Task State Change" for e in many[k17].events)
    # Each deployment's own service's ALB points, in its own window.
    assert [p["target_group"] for p in many[k17].points] == ["targetgroup/own-17/x"]
    assert [p["target_group"] for p in many[k3].points] == ["targetgroup/own-3/x"]
    assert many[k4000].points == []
    await _assert_read_through_indexes(runtime, captured)
