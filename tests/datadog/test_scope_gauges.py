"""Per-scope health in Datadog: each watched scope's heartbeat age and whether its
last round failed, sent by the Datadog job through the real senders to the local
intake, tagged with the scope's ``aws_account`` and ``region``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.aws.scopes import Scope
from service.config import load_settings
from service.datadog.forwarder import open_datadog_senders
from service.datadog.gauges import DatadogJob
from service.datadog.metrics import REGISTRY, MetricName
from service.demo.intake import DatadogIntake
from service.outbox.dispatcher import Dispatcher, build_registry
from service.outbox.retry import RetryPolicy
from service.outbox.sender import Sender
from service.poller.scopes import ScopeRounds, record_watched
from service.state.heartbeats import record_heartbeat, scope_key
from service.state.scopes import record_unmonitored
from tests.rig.outbox import drain_outbox

FAST = RetryPolicy(base_s=0.05, cap_s=0.2, budget_s=3600)
HEALTHY = Scope("111111111111", "us-east-1")
DENIED = Scope("222222222222", "eu-west-1")
SILENT = Scope("111111111111", "eu-west-1")  # watched, no heartbeat yet
UNWATCHED = Scope("333333333333", "us-east-1")


@pytest.fixture
async def senders(datadog_intake: DatadogIntake) -> AsyncIterator[list[Sender]]:
    settings = load_settings(dd_api_key="k", datadog_url=datadog_intake.url)
    async with open_datadog_senders(settings) as opened:
        yield opened


async def _round(
    sessionmaker: async_sessionmaker[AsyncSession], rounds: ScopeRounds, failing: set[Scope]
) -> None:
    async def work(scope: Scope) -> int:
        if scope in failing:
            raise PermissionError(f"AccessDenied in {scope}")
        return 1

    await rounds.run([HEALTHY, DENIED, SILENT], work)


async def _send(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], senders: list[Sender]
) -> None:
    dispatcher = Dispatcher(
        engine, sessionmaker, build_registry(senders), policy=FAST, jitter=lambda: 0.0
    )
    await drain_outbox(dispatcher, engine)


def _by_scope(intake: DatadogIntake, metric: MetricName, ts: int) -> dict[Scope, float]:
    out: dict[Scope, float] = {}
    for series in intake.series():
        if series["metric"] != f"ecswatch.{metric.value}":
            continue
        tags = dict(t.split(":", 1) for t in series["tags"])
        assert set(tags) == set(REGISTRY[metric].tags)
        for point in series["points"]:
            if point["timestamp"] == ts:
                out[Scope(tags["aws_account"], tags["region"])] = point["value"]
    return out


async def test_each_watched_scope_reports_its_heartbeat_age_and_failure(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    senders: list[Sender],
    datadog_intake: DatadogIntake,
) -> None:
    await record_watched(sessionmaker, [HEALTHY, DENIED, SILENT])
    async with sessionmaker() as session, session.begin():
        await record_unmonitored(session, [(UNWATCHED.account, UNWATCHED.region)])
    reconcile = ScopeRounds(sessionmaker, "reconcile", interval_s=60)
    metrics = ScopeRounds(sessionmaker, "metrics", interval_s=60)
    await _round(sessionmaker, reconcile, set())
    await _round(sessionmaker, metrics, set())
    # DENIED's next reconcile fails; its metrics poll still succeeds afterwards: the
    # reconcile's failure stands until a reconcile succeeds.
    await _round(sessionmaker, reconcile, {DENIED})
    await _round(sessionmaker, metrics, set())
    now = datetime.now(UTC) + timedelta(seconds=1)
    async with sessionmaker() as session, session.begin():
        for scope, age in ((HEALTHY, 30), (DENIED, 900), (UNWATCHED, 10)):
            key = scope_key(scope.account, scope.region)
            await record_heartbeat(session, now - timedelta(seconds=age), now=now, scope=key)
    job = DatadogJob(sessionmaker, interval_s=60)
    await job.run_once(now=now)
    await _send(engine, sessionmaker, senders)
    ts = int(now.timestamp()) - int(now.timestamp()) % 60
    ages = _by_scope(datadog_intake, MetricName.SELF_SCOPE_HEARTBEAT_AGE, ts)
    assert ages == {HEALTHY: 30.0, DENIED: 900.0}  # none before a first heartbeat, none unwatched
    errors = _by_scope(datadog_intake, MetricName.SELF_SCOPE_ERROR, ts)
    assert errors == {HEALTHY: 0.0, DENIED: 1.0, SILENT: 0.0}

    # A successful reconcile clears it (a new round runner: the old one backs DENIED
    # off); a metrics round failing sets it again.
    await _round(sessionmaker, ScopeRounds(sessionmaker, "reconcile", interval_s=60), set())
    later = now + timedelta(seconds=60)
    await job.run_once(now=later)
    await _send(engine, sessionmaker, senders)
    ts_later = ts + 60
    assert _by_scope(datadog_intake, MetricName.SELF_SCOPE_ERROR, ts_later) == {
        HEALTHY: 0.0,
        DENIED: 0.0,
        SILENT: 0.0,
    }
    await _round(sessionmaker, metrics, {SILENT})
    last = later + timedelta(seconds=60)
    await job.run_once(now=last)
    await _send(engine, sessionmaker, senders)
    assert _by_scope(datadog_intake, MetricName.SELF_SCOPE_ERROR, ts_later + 60) == {
        HEALTHY: 0.0,
        DENIED: 0.0,
        SILENT: 1.0,
    }
