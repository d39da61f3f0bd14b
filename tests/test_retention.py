"""Retention: history past the cutoff goes, current state stays, a second run does nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.config import load_settings
from service.errors import ConfigError
from service.retention import (
    PruneStep,
    partition_days,
    partitions_to_add,
    partitions_to_drop,
    plan_retention,
    prune,
)
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


# Partitions: whole days go, the boundary day stays, the week ahead is made.
PART_NOW = datetime(2029, 3, 10, 6, 0, tzinfo=UTC)  # cutoff (30 days): 2029-02-08 06:00


async def _partitions(session: AsyncSession) -> list[str]:
    names = await session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'raw_events'::regclass AND c.relname LIKE 'raw_events_p2029%' "
            "ORDER BY 1"
        )
    )
    return list(names.scalars())


def test_partition_days_to_add_and_drop() -> None:
    names = ["raw_events_default", "raw_events_p20290206", "raw_events_p20290207", "other"]
    days = partition_days([*names, "raw_events_p2029x", "raw_events_p20291399"])
    assert [d.isoformat() for d in days] == ["2029-02-06", "2029-02-07"]
    cutoff = plan_retention(PART_NOW, 30).cutoff
    # 2029-02-07 ends at 02-08 00:00, before the cutoff; 02-08 ends after it.
    assert partitions_to_drop([*days, date(2029, 2, 8)], cutoff) == days
    ahead = partitions_to_add([date(2029, 3, 12)], PART_NOW)
    assert [d.day for d in ahead] == [10, 11, 13, 14, 15, 16, 17]


async def test_prune_drops_whole_days_and_adds_the_week_ahead(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker.begin() as session:
        for day in (date(2029, 2, 6), date(2029, 2, 7), date(2029, 2, 8)):
            await session.execute(text("SELECT raw_events_add_day(:d)"), {"d": day})
        # A row every 12 hours from 02-06 12:00 to 02-09 00:00, each with a natural key.
        await session.execute(
            text(
                "INSERT INTO raw_events (id, detail_type, source, time, detail, natural_key) "
                "SELECT 'p' || g, 'ECS Service Action', 'aws.ecs', "
                "CAST('2029-02-06T12:00:00Z' AS timestamptz) + make_interval(hours => g * 12), "
                "'{}'::jsonb, 'key-' || g FROM generate_series(0, 5) g"
            )
        )
        await session.execute(
            text(
                "INSERT INTO raw_event_natural_keys (natural_key, id, time) "
                "SELECT natural_key, id, time FROM raw_events WHERE id LIKE 'p%'"
            )
        )
    async with sessionmaker() as session:
        assert await _partitions(session) == [
            "raw_events_p20290206",
            "raw_events_p20290207",
            "raw_events_p20290208",
        ]
        # Earlier tests' partitions (empty) are all before the cutoff, too.
        earlier = await session.execute(
            text(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'raw_events'::regclass "
                "AND inhrelid::regclass::text >= 'raw_events_p' "
                "AND inhrelid::regclass::text < 'raw_events_p20290208'"
            )
        )
        to_drop = earlier.scalar_one()
    assert to_drop >= 2
    report = await prune(sessionmaker, 30, PART_NOW)
    assert report.complete
    assert report.partitions_dropped == to_drop
    assert report.partitions_added == 8
    # Rows p0-p2 lived on the two dropped days; p3 (02-08 00:00) is past the cutoff
    # too but waits for its day's partition to go whole.
    assert report.deleted == {"raw_events": 3, "raw_event_natural_keys": 4}
    async with sessionmaker() as session:
        ids = (await session.execute(text("SELECT id FROM raw_events ORDER BY id"))).scalars()
        keys = (
            await session.execute(text("SELECT id FROM raw_event_natural_keys ORDER BY id"))
        ).scalars()
        assert list(ids) == ["p3", "p4", "p5"]
        # The natural keys go at the cutoff itself, as other history does.
        assert list(keys) == ["p4", "p5"]
        assert await _partitions(session) == [
            "raw_events_p20290208",
            *(f"raw_events_p202903{d}" for d in range(10, 18)),
        ]
    again = await prune(sessionmaker, 30, PART_NOW)
    assert (again.deleted, again.partitions_added, again.partitions_dropped) == ({}, 0, 0)


async def test_a_partition_drop_gives_way_to_a_lock(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A reader that holds raw_events (a long report, a migration) is never queued
    behind: the drop gives up after its lock timeout and the next run drops it."""
    async with sessionmaker.begin() as session:
        await session.execute(text("SELECT raw_events_add_day(:d)"), {"d": date(2029, 1, 1)})
    async with sessionmaker() as holder, holder.begin():
        await holder.execute(text("LOCK TABLE raw_events IN ACCESS SHARE MODE"))
        report = await asyncio.wait_for(prune(sessionmaker, 30, PART_NOW), timeout=30)
        assert report.complete is False
        assert report.partitions_dropped == 0
    report = await prune(sessionmaker, 30, PART_NOW)
    assert report.complete is True
    assert report.partitions_dropped == 1
