"""Consumer → outbox → dispatcher → the real senders → the local intake, with faults.

Datadog keeps one value per series and timestamp (a re-sent point replaces the
first), so "no count doubled" means: every (metric, tags, timestamp) that
arrives more than once arrives with the same value, and the values summed over
distinct points are the counts the events show.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.datadog.forwarder import open_datadog_senders
from service.datadog.gauges import DatadogJob
from service.datadog.metrics import REGISTRY, MetricName
from service.demo.events import deployment_events, task_lifecycle
from service.demo.intake import DatadogIntake
from service.outbox.dispatcher import Dispatcher, build_registry
from service.outbox.retry import RetryPolicy
from service.outbox.sender import Sender
from tests.rig.outbox import drain_outbox

FAST = RetryPolicy(base_s=0.05, cap_s=0.2, budget_s=3600)
# Recent: Datadog takes events at most 18 hours old.
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
async def senders(datadog_intake: DatadogIntake) -> AsyncIterator[list[Sender]]:
    settings = load_settings(dd_api_key="k", datadog_url=datadog_intake.url)
    async with open_datadog_senders(settings) as opened:
        yield opened


async def _ingest(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    rng = random.Random(21)
    events: list[dict[str, Any]] = []
    for n in range(4):
        events += task_lifecycle(rng, deployment_id="ecs-svc/7", fail=n < 2, start=START)
    events += deployment_events(
        cluster="prod", service="web", deployment_id="ecs-svc/7", start=START, outcome="failed"
    )
    handler = Handler(sessionmaker, datadog=True)
    # Three transactions: three metrics rows, and events rows.
    for i in range(0, len(events), 12):
        chunk = events[i : i + 12]
        result = await handler.handle([Message(str(uuid.uuid4()), json.dumps(e)) for e in chunk])
        assert not result.retry


async def _statuses(engine: AsyncEngine) -> Counter[tuple[str, str]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT kind, status FROM outbox"))
        return Counter((r[0], r[1]) for r in result)


def _distinct_points(intake: DatadogIntake) -> dict[tuple[str, str, int], set[float]]:
    points: dict[tuple[str, str, int], set[float]] = {}
    for s in intake.series():
        for p in s["points"]:
            key = (s["metric"], ",".join(s["tags"]), p["timestamp"])
            points.setdefault(key, set()).add(p["value"])
    return points


def _counts(intake: DatadogIntake) -> Counter[str]:
    out: Counter[str] = Counter()
    for (metric, tags, _), values in _distinct_points(intake).items():
        assert len(values) == 1, f"{metric} {tags} arrived with different values {values}"
        own = [
            t for t in tags.split(",") if t.startswith(("stop_code:", "exit_class:", "outcome:"))
        ]
        out[metric + "|" + ",".join(own)] += next(iter(values))
    return out


EXPECTED = {
    "ecswatch.tasks.started|": 4,
    "ecswatch.tasks.stopped|stop_code:essentialcontainerexited": 2,
    "ecswatch.tasks.stopped|stop_code:serviceschedulerinitiated": 2,
    "ecswatch.containers.exited|exit_class:137": 2,
    "ecswatch.containers.exited|exit_class:0": 2,
    "ecswatch.containers.oom_killed|": 2,
    "ecswatch.deployments.finished|outcome:failed": 1,
}


def _check_counts(intake: DatadogIntake) -> None:
    counts = _counts(intake)
    assert {k: counts[k] for k in EXPECTED} == EXPECTED


async def test_500_three_times_and_429_once_then_everything_arrives_once(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    datadog_intake: DatadogIntake,
    senders: list[Sender],
) -> None:
    await _ingest(sessionmaker)
    before = await _statuses(engine)
    events_rows = before[("datadog_event", "pending")]
    assert before[("datadog_metrics", "pending")] >= 1
    assert events_rows == 4  # 2 OOM kills, deployment started, deployment failed
    datadog_intake.fail_next(500, count=3)
    datadog_intake.fail_next(429, headers={"X-RateLimit-Reset": "1"})
    dispatcher = Dispatcher(
        engine, sessionmaker, build_registry(senders), policy=FAST, jitter=lambda: 0.0
    )
    await drain_outbox(dispatcher, engine)
    after = await _statuses(engine)
    assert set(after) == {("datadog_metrics", "delivered"), ("datadog_event", "delivered")}
    statuses = Counter(r.status for r in datadog_intake.requests)
    assert statuses[500] == 3
    assert statuses[429] == 1
    # Every event row arrived exactly once, every count exactly once.
    titles = Counter(e["title"] for e in datadog_intake.events())
    assert sum(titles.values()) == events_rows
    assert titles["ECS deployment failed: prod/web"] == 1
    _check_counts(datadog_intake)
    for values in _distinct_points(datadog_intake).values():
        assert len(values) == 1
    accepted = [
        r for r in datadog_intake.requests if r.path == "/api/v2/series" and r.status == 202
    ]
    keys = Counter(
        (s["metric"], tuple(s["tags"]), p["timestamp"])
        for r in accepted
        for s in r.json["series"]
        for p in s["points"]
    )
    assert set(keys.values()) == {1}  # no point accepted twice


async def test_a_dispatcher_killed_mid_batch_loses_nothing_and_doubles_no_count(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    datadog_intake: DatadogIntake,
    senders: list[Sender],
) -> None:
    await _ingest(sessionmaker)
    datadog_intake.pause()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.datadog.dispatch_child",
        database_url,
        datadog_intake.url,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # Its requests are on the wire (held by the intake) when it dies.
        await datadog_intake.wait_arrived(2, within=30)
        await asyncio.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    held = datadog_intake.arrived
    datadog_intake.resume()  # the held requests now succeed: sent, but never recorded
    await datadog_intake.wait_for(held, within=10)
    assert any(r.status == 202 for r in datadog_intake.requests)
    assert ("datadog_metrics", "delivered") not in await _statuses(engine)
    await asyncio.sleep(1.2)  # the dead dispatcher's lease runs out
    dispatcher = Dispatcher(
        engine, sessionmaker, build_registry(senders), policy=FAST, jitter=lambda: 0.0
    )
    await drain_outbox(dispatcher, engine)
    after = await _statuses(engine)
    assert set(after) == {("datadog_metrics", "delivered"), ("datadog_event", "delivered")}
    # The killed dispatcher's metrics went out, and were sent again by the next one ...
    accepted = [
        r for r in datadog_intake.requests if r.path == "/api/v2/series" and r.status == 202
    ]
    keys = Counter(
        (s["metric"], tuple(s["tags"]), p["timestamp"])
        for r in accepted
        for s in r.json["series"]
        for p in s["points"]
    )
    assert max(keys.values()) == 2
    # ... with the same values: Datadog keeps one per series and second, nothing doubles.
    _check_counts(datadog_intake)
    titles = {e["title"] for e in datadog_intake.events()}
    assert "ECS deployment failed: prod/web" in titles  # nothing lost


async def test_a_run_sends_only_documented_metrics_with_documented_tags(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    datadog_intake: DatadogIntake,
    senders: list[Sender],
) -> None:
    # The cluster's ECS tags are known (enrichment) before its events arrive.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO resource_tags (resource_arn, tags, known) VALUES"
                " ('arn:aws:ecs:us-east-1:123456789012:cluster/prod',"
                " CAST(:t AS jsonb), true) ON CONFLICT (resource_arn) DO UPDATE"
                " SET tags = excluded.tags, known = true"
            ),
            {"t": json.dumps({"Team": "Payments", "region": "clash"})},
        )
        await conn.execute(
            text(
                "INSERT INTO metric_points (namespace, name, statistic, unit, cluster_name,"
                " service_name, dimensions, dimensions_key, timestamp, value) VALUES"
                " ('AWS/ApplicationELB', 'HealthyHostCount', 'Average', 'Count', 'prod', 'web',"
                " CAST(:d AS jsonb), 'k', now() - interval '2 minutes', 3)"
            ),
            {"d": json.dumps({"TargetGroup": "targetgroup/web/1", "LoadBalancer": "app/lb/2"})},
        )
    await _ingest(sessionmaker)
    await DatadogJob(sessionmaker, interval_s=60).run_once()
    dispatcher = Dispatcher(
        engine, sessionmaker, build_registry(senders), policy=FAST, jitter=lambda: 0.0
    )
    await drain_outbox(dispatcher, engine)
    series = datadog_intake.series()
    names = {s["metric"].removeprefix("ecswatch.") for s in series}
    assert {"tasks.started", "deployments.in_progress", "aws.alb.healthy_host_count"} <= names
    for s in series:
        spec = REGISTRY[MetricName(s["metric"].removeprefix("ecswatch."))]
        keys = {t.split(":", 1)[0] for t in s["tags"]}
        assert keys <= set(spec.tags) | {"team"}, (s["metric"], keys - set(spec.tags))
        assert "region:clash" not in s["tags"]  # an ECS tag never overrides a convention
        assert not any("task/" in t or t.startswith("task_arn") for t in s["tags"])
    started = next(s for s in series if s["metric"] == "ecswatch.tasks.started")
    assert "team:payments" in started["tags"]
    for event in datadog_intake.events():
        assert "team:payments" in event["tags"]
        assert "ecs_cluster_name:prod" in event["tags"]
