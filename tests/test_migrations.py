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


_SCOPELESS = """
INSERT INTO raw_events (id, detail_type, source, account, region, time, detail)
VALUES ('ev-cd', 'CodeDeploy Deployment State-change Notification', 'aws.codedeploy',
        '210987654321', 'eu-west-1', '2025-03-01T12:00:00Z', '{}');
INSERT INTO deployments (id, service_arn, cluster_arn, kind, codedeploy_application,
                         codedeploy_group, event_ids, started_at)
VALUES ('ecs-svc/1', 'arn:aws:ecs:us-east-1:123456789012:service/prod/web', NULL, 'rolling',
        NULL, NULL, '[]', '2025-03-01T10:00:00Z'),
       ('ecs-svc/2', NULL, 'arn:aws:ecs:us-west-2:123456789012:cluster/prod', 'rolling',
        NULL, NULL, '[]', '2025-03-01T11:00:00Z'),
       ('d-CODEDEPLOY', NULL, NULL, 'codedeploy', 'shop', 'blue', '["ev-cd"]',
        '2025-03-01T12:00:00Z'),
       ('d-UNKNOWN', NULL, NULL, 'codedeploy', 'other', 'green', '["gone"]',
        '2025-03-01T13:00:00Z');
INSERT INTO codedeploy_groups (application, deployment_group, cluster_name, service_name)
VALUES ('shop', 'blue', 'prod', 'shop'), ('other', 'green', NULL, NULL), ('idle', 'g', NULL, NULL)
"""


async def test_deployments_and_groups_get_their_scope_and_lose_it_again(
    empty_engine: AsyncEngine,
) -> None:
    """0014 back-fills a deployment's scope from its service ARN, else its cluster ARN,
    else its first raw event ('' without any), and a group's from its latest
    deployment; the downgrade keeps one row of each id (the one updated last) and
    one mapping of each group (the one resolved last)."""
    await upgrade(empty_engine, "0013")
    async with empty_engine.begin() as conn:
        for statement in _SCOPELESS.split(";"):
            await conn.execute(text(statement))
    await upgrade(empty_engine)
    async with empty_engine.connect() as conn:
        deployments = (
            await conn.execute(text("SELECT id, account_id, region FROM deployments ORDER BY id"))
        ).all()
        groups = (
            await conn.execute(
                text(
                    "SELECT application, account_id, region FROM codedeploy_groups"
                    " ORDER BY application"
                )
            )
        ).all()
    assert [tuple(d) for d in deployments] == [
        ("d-CODEDEPLOY", "210987654321", "eu-west-1"),
        ("d-UNKNOWN", "", ""),
        ("ecs-svc/1", "123456789012", "us-east-1"),
        ("ecs-svc/2", "123456789012", "us-west-2"),
    ]
    assert [tuple(g) for g in groups] == [
        ("idle", "", ""),
        ("other", "", ""),
        ("shop", "210987654321", "eu-west-1"),
    ]

    # The same id and the same group in another scope are other rows now.
    async with empty_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO deployments (account_id, region, id, kind, updated_at)"
                " VALUES ('444455556666', 'us-east-1', 'ecs-svc/1', 'rolling', now())"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO codedeploy_groups (account_id, region, application,"
                " deployment_group, service_name, resolved_at)"
                " VALUES ('444455556666', 'us-east-1', 'shop', 'blue', 'newer', now())"
            )
        )

    await downgrade(empty_engine, "0013")
    async with empty_engine.connect() as conn:
        kept = (
            await conn.execute(text("SELECT id, service_arn FROM deployments ORDER BY id"))
        ).all()
        mapped = (
            await conn.execute(
                text("SELECT application, service_name FROM codedeploy_groups ORDER BY application")
            )
        ).all()
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("deployments")}
        )
    # ecs-svc/1 of the other scope was updated last: it is the one kept.
    assert [tuple(k) for k in kept] == [
        ("d-CODEDEPLOY", None),
        ("d-UNKNOWN", None),
        ("ecs-svc/1", None),
        ("ecs-svc/2", None),
    ]
    assert [tuple(m) for m in mapped] == [("idle", None), ("other", None), ("shop", "newer")]
    assert "account_id" not in columns
    await upgrade(empty_engine)
