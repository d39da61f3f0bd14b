"""The consumer's Datadog outbox rows: counted once per fact, one metrics row per batch."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.consumer.handler import Handler, Message
from service.demo.events import (
    container_instance_events,
    deployment_events,
    envelope,
    service_arn,
    task_lifecycle,
)
from service.runtime import Runtime

START = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


async def _handle(runtime: Runtime, events: list[dict[str, Any]], *, datadog: bool = True) -> None:
    handler = Handler(runtime.sessionmaker, datadog=datadog)
    messages = [Message(str(uuid.uuid4()), json.dumps(e)) for e in events]
    result = await handler.handle(messages)
    assert not result.retry


async def _rows(engine: AsyncEngine, kind: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT payload FROM outbox WHERE kind = :kind ORDER BY id"), {"kind": kind}
        )
        return [row[0] for row in result]


def _counts(rows: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(metric, the tags that are not ECS conventions) -> summed value."""
    out: Counter[tuple[str, str]] = Counter()
    conventions = ("ecs_cluster_name:", "clustername:", "ecs_service:", "servicename:")
    conventions += ("task_family:", "task_version:", "launch_type:", "region:", "aws_account:")
    for row in rows:
        for s in row["series"]:
            own = ",".join(t for t in s["tags"] if not t.startswith(conventions))
            out[(s["metric"], own)] += sum(p[1] for p in s["points"])
    return out


def _fleet() -> list[dict[str, Any]]:
    rng = random.Random(11)
    events: list[dict[str, Any]] = []
    for n in range(5):
        events += task_lifecycle(rng, deployment_id="ecs-svc/9", fail=n < 3, start=START)
    events += task_lifecycle(rng, deployment_id="ecs-svc/9", stop=False, start=START)
    events += deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/9", start=START, outcome="completed"
    )
    events += deployment_events(
        cluster="prod",
        service="api",
        deployment_id="ecs-svc/10",
        start=START,
        outcome="failed",
    )
    action = {
        "eventType": "WARN",
        "eventName": "SERVICE_TASK_PLACEMENT_FAILURE",
        "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        "createdAt": "2026-11-03T10:05:00.000Z",
        "reason": "RESOURCE:MEMORY",
    }
    events.append(envelope("ECS Service Action", [service_arn("prod", "web")], action, START))
    return events


async def test_a_run_produces_the_documented_counts_and_events(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    await _handle(runtime, _fleet())
    metrics = await _rows(engine, "datadog_metrics")
    assert len(metrics) == 1  # one row for the whole transaction
    counts = _counts(metrics)
    assert counts[("tasks.started", "")] == 6
    assert counts[("tasks.stopped", "stop_code:essentialcontainerexited")] == 3
    assert counts[("tasks.stopped", "stop_code:serviceschedulerinitiated")] == 2
    assert counts[("containers.exited", "exit_class:137")] == 3
    assert counts[("containers.exited", "exit_class:0")] == 2
    assert counts[("containers.oom_killed", "")] == 3
    assert counts[("deployments.finished", "outcome:succeeded,deployment_kind:rolling")] == 1
    assert counts[("deployments.finished", "outcome:failed,deployment_kind:rolling")] == 1
    assert counts[("deployment.duration", "outcome:succeeded,deployment_kind:rolling")] == 180
    series = metrics[0]["series"]
    task_series = [s for s in series if s["metric"] == "tasks.started"]
    assert task_series[0]["tags"] == [
        "ecs_cluster_name:prod",
        "clustername:prod",
        "ecs_service:web",
        "servicename:web",
        "task_family:web",
        "task_version:7",
        "launch_type:fargate",
        "region:us-east-1",
        "aws_account:123456789012",
    ]
    # No per-task or per-ARN tag anywhere.
    for s in series:
        assert not any("arn:" in t or "task/" in t or "task_arn" in t for t in s["tags"])

    events = await _rows(engine, "datadog_event")
    by_title = Counter(e["title"].split(":")[0] for e in events)
    assert by_title["ECS container killed out of memory"] == 3
    assert by_title["ECS deployment started"] == 2
    assert by_title["ECS deployment succeeded"] == 1
    assert by_title["ECS deployment failed"] == 1
    assert by_title["ECS service SERVICE_TASK_PLACEMENT_FAILURE"] == 1
    failed = next(e for e in events if e["title"].startswith("ECS deployment failed"))
    assert failed["alert_type"] == "error"
    assert failed["aggregation_key"] == "123456789012/us-east-1/ecs-svc/10"
    assert "cluster: prod" in failed["text"]
    assert "service: api" in failed["text"]
    assert "circuit breaker" in failed["text"]
    assert "ecs_service:api" in failed["tags"]
    succeeded = next(e for e in events if e["title"].startswith("ECS deployment succeeded"))
    assert succeeded["alert_type"] == "success"
    warn = next(e for e in events if e["title"].startswith("ECS service"))
    assert warn["alert_type"] == "warning"


async def test_a_redelivered_or_resent_event_writes_nothing(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    events = _fleet()
    await _handle(runtime, events)
    before = (await _rows(engine, "datadog_metrics"), await _rows(engine, "datadog_event"))
    await _handle(runtime, events)  # re-delivered: same EventBridge ids
    resent = json.loads(json.dumps(events))
    for e in resent:
        e["id"] = str(uuid.uuid4())  # the same changes under new ids
    await _handle(runtime, resent)
    # And one by one, in reverse order, each in its own transaction.
    for e in reversed(resent):
        await _handle(runtime, [e])
    after = (await _rows(engine, "datadog_metrics"), await _rows(engine, "datadog_event"))
    assert after == before


async def test_counts_split_across_batches_add_up_once(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    events = _fleet()
    random.Random(3).shuffle(events)
    for i in range(0, len(events), 7):
        await _handle(runtime, events[i : i + 7])
    counts = _counts(await _rows(engine, "datadog_metrics"))
    assert counts[("tasks.started", "")] == 6
    assert counts[("containers.oom_killed", "")] == 3
    assert counts[("tasks.stopped", "stop_code:essentialcontainerexited")] == 3


async def test_rollback_is_counted_and_announced_once(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    earlier = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/1", start=START, outcome="completed"
    )
    failing = deployment_events(
        cluster="prod",
        service="web",
        deployment_id="ecs-svc/2",
        start=START + timedelta(hours=1),
        outcome="failed",
        rollback_to="ecs-svc/1",
    )
    await _handle(runtime, earlier)
    await _handle(runtime, failing[:2])
    again = json.loads(json.dumps(earlier[-1]))
    again["id"] = "restored"
    again["detail"]["updatedAt"] = "2026-11-03T11:09:00Z"
    await _handle(runtime, [failing[2], again])
    await _handle(runtime, [again])
    events = await _rows(engine, "datadog_event")
    titles = Counter(e["title"] for e in events)
    assert titles["ECS deployment failed: prod/web"] == 1
    assert titles["ECS deployment rolled back: prod/web"] == 1
    rolled = next(e for e in events if e["title"].startswith("ECS deployment rolled back"))
    assert rolled["alert_type"] == "warning"
    assert "rollback target: ecs-svc/1" in rolled["text"]
    counts = _counts(await _rows(engine, "datadog_metrics"))
    assert counts[("deployments.finished", "outcome:rolled_back,deployment_kind:rolling")] == 1


async def test_resource_tags_travel_with_rows_once_known(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    rng = random.Random(2)
    first = task_lifecycle(rng, service="web", start=START)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO services (arn, name, cluster_name) VALUES (:arn, 'web', 'prod');"),
            {"arn": service_arn("prod", "web")},
        )
        await conn.execute(
            text(
                "INSERT INTO resource_tags (resource_arn, tags, known)"
                " VALUES (:arn, CAST(:tags AS jsonb), true)"
            ),
            {"arn": service_arn("prod", "web"), "tags": json.dumps({"team": "Payments"})},
        )
    await _handle(runtime, first)
    unknown = task_lifecycle(rng, service="api", start=START)
    await _handle(runtime, unknown)
    rows = await _rows(engine, "datadog_metrics")
    web = [s for s in rows[0]["series"]]
    assert all(s["resource_tags"] == {"team": "Payments"} for s in web)
    api = [s for s in rows[1]["series"]]
    assert all("resource_tags" not in s for s in api)  # tags not fetched yet: none


async def test_container_instance_draining_is_announced_once_per_episode(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    [a, b, c] = container_instance_events(random.Random(4), count=3, start=START)
    b["detail"]["status"] = "DRAINING"
    c2 = json.loads(json.dumps(b))
    c2["id"] = str(uuid.uuid4())
    c2["detail"]["version"] = b["detail"]["version"] + 1  # still draining
    await _handle(runtime, [a, b])
    await _handle(runtime, [c2])
    c["detail"]["version"] = c2["detail"]["version"] + 5  # ACTIVE again
    await _handle(runtime, [c])
    again = json.loads(json.dumps(b))
    again["id"] = str(uuid.uuid4())
    again["detail"]["version"] = c["detail"]["version"] + 1  # a second episode
    again["detail"]["updatedAt"] = "2026-11-03T11:00:00.000Z"
    await _handle(runtime, [again])
    titles = [e["title"] for e in await _rows(engine, "datadog_event")]
    assert titles.count("ECS container instance draining: prod") == 2


async def test_nothing_is_written_when_forwarding_is_off(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    await _handle(runtime, _fleet(), datadog=False)
    assert await _rows(engine, "datadog_metrics") == []
    assert await _rows(engine, "datadog_event") == []


async def test_a_failure_event_carries_the_alert_cause_and_a_fix_is_announced_once(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    rng = random.Random(7)
    begun = deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/7", start=START
    )[:1]  # in progress, then a crash loop
    crashes = [
        e
        for n in range(3)
        for e in task_lifecycle(
            rng, deployment_id="ecs-svc/7", fail=True, start=START + timedelta(minutes=n)
        )
    ]
    await _handle(runtime, begun + crashes)
    fix = deployment_events(
        cluster="prod",
        service="web",
        deployment_id="ecs-svc/8",
        start=START + timedelta(hours=1),
        outcome="completed",
    )
    await _handle(runtime, fix)
    await _handle(runtime, [{**e, "id": str(uuid.uuid4())} for e in fix])
    events = await _rows(engine, "datadog_event")
    [failed] = [e for e in events if e["title"] == "ECS deployment failed: prod/web"]
    async with engine.connect() as conn:
        alert = (
            await conn.execute(text("SELECT payload FROM alerts WHERE type = 'deployment.failed'"))
        ).scalar_one()
    cause = alert["deployment"]["cause"]
    assert cause["category"] == "out_of_memory"
    # The same cause, read from the same snapshot, not computed again.
    assert failed["text"].splitlines()[1] == f"cause: out_of_memory: {cause['summary']}"
    [recovered] = [e for e in events if e["title"] == "ECS deployment recovered: prod/web"]
    assert recovered["alert_type"] == "success"
    # Grouped with the failure it closes: the failed deployment's scope and id.
    assert recovered["aggregation_key"] == failed["aggregation_key"]
    assert recovered["aggregation_key"].endswith("/ecs-svc/7")
    assert "recovers: ecs-svc/7" in recovered["text"]
