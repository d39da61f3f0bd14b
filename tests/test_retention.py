"""Retention: history past the cutoff goes, current state stays, a second run does nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.config import load_settings
from service.errors import ConfigError
from service.retention import PruneStep, plan_retention, prune
from service.roles.poller import retention_job
from service.runtime import Runtime
from tests.history_rows import count_rows, write_rows

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "days", "cutoff"),
    [
        (NOW, 30, datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        (NOW, 1, datetime(2026, 11, 30, 12, 0, tzinfo=UTC)),
        (
            datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            1,
            datetime(2026, 2, 27, 23, 0, tzinfo=UTC),
        ),
    ],
)
def test_plan_cutoff(now: datetime, days: int, cutoff: datetime) -> None:
    plan = plan_retention(now, days)
    assert plan.cutoff == cutoff
    assert plan.steps == tuple(PruneStep)


@pytest.mark.parametrize(
    ("now", "days", "message"),
    [
        (datetime(2026, 12, 1), 30, "timezone-aware"),
        (NOW, 0, "at least 1"),
        (NOW, -5, "at least 1"),
    ],
)
def test_plan_refuses(now: datetime, days: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_retention(now, days)


def test_retention_days_setting(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().retention_days == 30
    clean_env.setenv("ECSWATCH_RETENTION_DAYS", "7")
    assert load_settings().retention_days == 7
    for bad in ("0", "-1", "month"):
        clean_env.setenv("ECSWATCH_RETENTION_DAYS", bad)
        with pytest.raises(ConfigError, match=r"^invalid ECSWATCH_RETENTION_DAYS: "):
            load_settings()


def test_alerts_go_before_the_delivery_log_sweep() -> None:
    # Deliveries of a pruned alert go with it; the sweep by attempt time comes after.
    steps = plan_retention(NOW, 30).steps
    assert steps.index(PruneStep.ALERTS) < steps.index(PruneStep.WEBHOOK_DELIVERIES)


async def _keys(session: AsyncSession) -> dict[str, set[str]]:
    queries = {
        "raw_events": "SELECT id FROM raw_events",
        "metric_points": "SELECT dimensions_key FROM metric_points",
        "alerts": "SELECT id FROM alerts",
        "webhook_deliveries": "SELECT message_id FROM webhook_deliveries",
        "outbox": "SELECT dedupe_key FROM outbox",
        "tasks": "SELECT arn FROM tasks",
        "resource_tags": "SELECT resource_arn FROM resource_tags",
    }
    return {
        name: {str(r[0]) for r in (await session.execute(text(sql))).all()}
        for name, sql in queries.items()
    }


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    value = telemetry.REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_prune_deletes_history_past_retention_only(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        await write_rows(session, NOW - timedelta(days=31), "old")
        await write_rows(session, NOW - timedelta(days=29), "recent")
        await write_rows(session, NOW, "now")
    async with sessionmaker() as session:
        before = await count_rows(session)
        before_keys = await _keys(session)
        state_before = {
            t: (await session.execute(text(f"SELECT * FROM {t} ORDER BY 1"))).all()
            for t in ("clusters", "services", "container_instances", "deployments", "quarantine")
        }
        running_before = (
            await session.execute(text("SELECT * FROM tasks WHERE last_status = 'RUNNING'"))
        ).all()
    pruned_before = _sample("ecswatch_retention_rows_pruned_total", {"table": "raw_events"})

    # A batch size of 1 makes every step loop, as a large table would.
    report = await prune(sessionmaker, 30, NOW, batch_size=1)

    assert report.deleted == {
        "raw_events": 1,
        "metric_points": 1,
        "alerts": 1,
        "webhook_deliveries": 2,  # the alert's attempt and the old test delivery
        "outbox": 2,  # delivered and dead; the old pending row stays
        "tasks": 1,
        "resource_tags": 1,
    }
    async with sessionmaker() as session:
        after = await count_rows(session)
        keys = await _keys(session)
        state_after = {
            t: (await session.execute(text(f"SELECT * FROM {t} ORDER BY 1"))).all()
            for t in ("clusters", "services", "container_instances", "deployments", "quarantine")
        }
        running_after = (
            await session.execute(text("SELECT * FROM tasks WHERE last_status = 'RUNNING'"))
        ).all()

    for table, n in report.deleted.items():
        assert after[table] == before[table] - n, table
    assert not any("old" in k for k in keys["raw_events"] | keys["alerts"])
    assert keys["outbox"] == before_keys["outbox"] - {"delivered-old", "dead-old"}
    assert "pending-old" in keys["outbox"]
    assert keys["webhook_deliveries"] == {"m1-recent", "m2-recent", "m1-now", "m2-now"}
    stopped_old = "arn:aws:ecs:eu-west-1:123456789012:task/prod/old-stopped"
    assert keys["tasks"] == before_keys["tasks"] - {stopped_old}
    assert keys["resource_tags"] == before_keys["resource_tags"] - {stopped_old}
    # Current state is untouched, however old its rows are.
    assert state_after == state_before
    assert running_after == running_before
    assert len(running_after) == 3

    assert (
        _sample("ecswatch_retention_rows_pruned_total", {"table": "raw_events"})
        == pruned_before + 1
    )
    assert _sample("ecswatch_retention_last_run_timestamp_seconds") == NOW.timestamp()
    exposition = generate_latest(telemetry.REGISTRY).decode()
    assert 'ecswatch_retention_rows_pruned_total{table="outbox"}' in exposition

    # A second run finds nothing, and changes nothing.
    again = await prune(sessionmaker, 30, NOW, batch_size=1)
    assert again.deleted == {}
    assert again.total == 0
    async with sessionmaker() as session:
        assert await count_rows(session) == after


async def test_prune_in_batches_takes_every_old_row(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "INSERT INTO raw_events (id, detail_type, source, time, detail) "
                "SELECT 'e' || g, 'ECS Task State Change', 'aws.ecs', "
                "CAST(:now AS timestamptz) - make_interval(days => 40, secs => g), '{}'::jsonb "
                "FROM generate_series(1, 2500) g"
            ),
            {"now": NOW},
        )
        await session.execute(
            text(
                "INSERT INTO tasks (arn, id, last_status, stopped_at) "
                "SELECT 'arn:task/' || lpad(g::text, 5, '0'), 't' || g, 'STOPPED', "
                "CASE WHEN g % 2 = 0 THEN CAST(:now AS timestamptz) - interval '40 days' "
                "ELSE :now END "
                "FROM generate_series(1, 1001) g"
            ),
            {"now": NOW},
        )
    report = await prune(sessionmaker, 30, NOW, batch_size=100)
    assert report.deleted == {"raw_events": 2500, "tasks": 500}
    async with sessionmaker() as session:
        left = (await session.execute(text("SELECT count(*) FROM tasks"))).scalar_one()
    assert left == 501


async def test_prune_skips_rows_a_writer_holds(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        await write_rows(session, NOW - timedelta(days=60), "old")
    # Ingestion holds the old stopped task (say, a late event's upsert): pruning
    # must not wait for it, and leaves it for the next run.
    async with sessionmaker() as holder, holder.begin():
        await holder.execute(text("SELECT 1 FROM tasks WHERE last_status = 'STOPPED' FOR UPDATE"))
        report = await prune(sessionmaker, 30, NOW)
        assert "tasks" not in report.deleted
        assert report.deleted["raw_events"] == 1
    later = await prune(sessionmaker, 30, NOW)
    assert later.deleted == {"tasks": 1, "resource_tags": 1}


async def test_the_poller_leaders_retention_job_prunes(runtime: Runtime) -> None:
    """The leader runs prune() with ECSWATCH_RETENTION_DAYS as one of its jobs."""
    now = datetime(2030, 6, 1, tzinfo=UTC)
    days = runtime.settings.retention_days
    async with runtime.sessionmaker() as session, session.begin():
        await write_rows(session, now - timedelta(days=days, hours=1), "old")
        await write_rows(session, now - timedelta(days=days, hours=-1), "new")
        # Tasks that reconciliation marked gone (still RUNNING as last seen): one
        # gone before the cutoff, one after.
        for arn, gone in (("t-gone-old", days + 1), ("t-gone-new", days - 1)):
            await session.execute(
                text(
                    "INSERT INTO tasks (arn, id, cluster_name, last_status, desired_status, "
                    "updated_at, seen_at, gone_at) VALUES (:arn, :arn, 'prod', 'RUNNING', "
                    "'RUNNING', :at, :at, :at)"
                ),
                {"arn": arn, "at": now - timedelta(days=gone)},
            )
    job = retention_job(runtime)
    assert job.name == "retention"
    report = await job.run(now)
    assert report.deleted["raw_events"] == 1
    async with runtime.sessionmaker() as session:
        ids = (await session.execute(text("SELECT id FROM raw_events"))).scalars().all()
        tasks = set((await session.execute(text("SELECT arn FROM tasks"))).scalars().all())
    assert ids == ["ev-new"]
    assert "t-gone-old" not in tasks
    assert "t-gone-new" in tasks


async def test_prune_gives_way_to_a_schema_change(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        await write_rows(session, NOW - timedelta(days=60), "old")
    last_run = _sample("ecswatch_retention_last_run_timestamp_seconds")
    later = NOW + timedelta(hours=1)
    # A migration holds metric_points: pruning stops there instead of queueing
    # (and every writer behind it), and says so.
    async with sessionmaker() as migration, migration.begin():
        await migration.execute(text("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE"))
        report = await asyncio.wait_for(prune(sessionmaker, 30, later), timeout=30)
        assert report.complete is False
        assert report.deleted == {"raw_events": 1}
        assert _sample("ecswatch_retention_last_run_timestamp_seconds") == last_run
    report = await prune(sessionmaker, 30, later)
    assert report.complete is True
    assert report.deleted["metric_points"] == 1
    assert "raw_events" not in report.deleted
    assert _sample("ecswatch_retention_last_run_timestamp_seconds") == later.timestamp()
