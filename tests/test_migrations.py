"""Migrations run up, down and up again on a real server, and match the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import create_engine
from service.migrate import downgrade, upgrade
from service.schema import metadata
from service.state.models import include_name, is_raw_event_partition
from tests.conftest import _admin_dsn


@pytest.fixture
async def empty_engine(server_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a brand-new, empty database of its own."""
    name = f"ecswatch_mig_{uuid.uuid4().hex[:10]}"
    _, admin = _admin_dsn(server_url)
    conn = await asyncpg.connect(**admin)  # type: ignore[arg-type]
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()
        conn = await asyncpg.connect(**admin)  # type: ignore[arg-type]
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def _tables(sync_conn: Connection) -> set[str]:
    """The tables, leaving out the partitions of raw_events (in no model)."""
    names = set(inspect(sync_conn).get_table_names())
    return {n for n in names if not is_raw_event_partition(n)}


async def test_upgrade_downgrade_upgrade(empty_engine: AsyncEngine) -> None:
    expected = set(metadata.tables)
    await upgrade(empty_engine)
    async with empty_engine.connect() as conn:
        assert await conn.run_sync(_tables) == expected | {"alembic_version"}
    await downgrade(empty_engine)
    async with empty_engine.connect() as conn:
        assert await conn.run_sync(_tables) == {"alembic_version"}
        versions = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar()
        assert versions == 0
    await upgrade(empty_engine)
    async with empty_engine.connect() as conn:
        assert await conn.run_sync(_tables) == expected | {"alembic_version"}


async def test_models_and_migrations_agree(empty_engine: AsyncEngine) -> None:
    await upgrade(empty_engine)

    def diff(sync_conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "include_name": include_name}
        )
        return list(compare_metadata(ctx, metadata))

    async with empty_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_time_columns_are_timestamptz(empty_engine: AsyncEngine) -> None:
    await upgrade(empty_engine)
    async with empty_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'"
                )
            )
        ).all()
    assert rows == []


async def test_replicas_starting_together_migrate_once(empty_engine: AsyncEngine) -> None:
    """Every `ecswatch run` migrates first; three at once all succeed, at head."""
    import asyncio

    engines = [create_engine(empty_engine.url.render_as_string(hide_password=False), pool_size=1)]
    engines += [create_engine(engines[0].url.render_as_string(hide_password=False), pool_size=1)]
    try:
        await asyncio.gather(upgrade(empty_engine), *(upgrade(e) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    async with empty_engine.connect() as conn:
        heads = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars()
        assert list(heads) == [sorted(p.stem.split("_")[0] for p in _versions())[-1]]


def _versions() -> list[Path]:
    return list((Path(__file__).resolve().parents[1] / "alembic" / "versions").glob("*.py"))


# Rows as 0011 stored them: two days long past, one far in the future (no partition
# is made for it), one versionless event with its natural key.
_OLD_ROWS = """
INSERT INTO raw_events (id, detail_type, source, time, detail, natural_key)
VALUES ('a', 'ECS Task State Change', 'aws.ecs', '2025-03-01T23:59:59.5Z', '{"n": 1}', NULL),
       ('b', 'ECS Task State Change', 'aws.ecs', '2025-03-02T00:00:00Z', '{"n": 2}', NULL),
       ('c', 'ECS Service Action', 'aws.ecs', '2025-03-02T10:00:00Z', '{"n": 3}', 'key-c'),
       ('d', 'ECS Task State Change', 'aws.ecs', '2999-01-01T00:00:00Z', '{"n": 4}', NULL)
"""

_WHERE = "SELECT e.id, e.tableoid::regclass::text FROM raw_events AS e ORDER BY e.id"


async def test_partitioning_moves_the_rows_and_back(empty_engine: AsyncEngine) -> None:
    await upgrade(empty_engine, "0011")
    async with empty_engine.begin() as conn:
        await conn.execute(text(_OLD_ROWS))
    await upgrade(empty_engine)
    async with empty_engine.connect() as conn:
        placed = (await conn.execute(text(_WHERE))).all()
        keys = (
            await conn.execute(text("SELECT natural_key, id FROM raw_event_natural_keys"))
        ).all()
        partitioned = (
            await conn.execute(
                text("SELECT relkind::text FROM pg_class WHERE relname = 'raw_events'")
            )
        ).scalar_one()
    assert partitioned == "p"
    assert placed == [
        ("a", "raw_events_p20250301"),
        ("b", "raw_events_p20250302"),
        ("c", "raw_events_p20250302"),
        ("d", "raw_events_default"),
    ]
    assert keys == [("key-c", "c")]

    await downgrade(empty_engine, "0011")
    async with empty_engine.connect() as conn:
        back = (
            await conn.execute(
                text("SELECT id, time, detail::text, natural_key FROM raw_events ORDER BY id")
            )
        ).all()
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert [(r.id, r.detail, r.natural_key) for r in back] == [
        ("a", '{"n": 1}', None),
        ("b", '{"n": 2}', None),
        ("c", '{"n": 3}', "key-c"),
        ("d", '{"n": 4}', None),
    ]
    assert back[0].time.isoformat() == "2025-03-01T23:59:59.500000+00:00"
    assert not any(is_raw_event_partition(t) for t in tables)
    assert "raw_event_natural_keys" not in tables

    # Down to base and up again with the rows gone is the plain cycle; up from
    # here with rows keeps them.
    await upgrade(empty_engine)
    async with empty_engine.connect() as conn:
        assert (await conn.execute(text(_WHERE))).all() == placed
