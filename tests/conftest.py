"""Shared fixtures: a real PostgreSQL database per test session, truncated per test.

``ECSWATCH_TEST_DATABASE_URL`` (a server URL whose user may create databases)
selects the machine's server; without it an embedded PostgreSQL is started.
Either way the session gets a fresh database of its own, dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.config import Settings, load_settings
from service.db import create_engine, create_sessionmaker, to_asyncpg_url
from service.migrate import upgrade
from service.runtime import EmbeddedPostgres, Runtime, open_runtime
from service.schema import metadata

pytest_plugins = ["tests.rig.fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _admin_dsn(url: str) -> tuple[str, dict[str, object]]:
    """asyncpg connect kwargs of ``url``'s server, on its maintenance database."""
    u = make_url(to_asyncpg_url(url))
    kwargs: dict[str, object] = {
        "user": u.username or "postgres",
        "password": u.password,
        "host": u.query.get("host") or u.host or "127.0.0.1",
        "port": u.port or 5432,
        "database": "postgres",
    }
    return to_asyncpg_url(url), kwargs


@pytest.fixture(scope="session")
async def server_url() -> AsyncIterator[str]:
    """URL of a PostgreSQL server: the configured one, or an embedded one."""
    configured = os.environ.get("ECSWATCH_TEST_DATABASE_URL")
    if configured:
        yield to_asyncpg_url(configured)
        return
    # Not under pytest's basetemp: as root the server runs as its own system user,
    # which must traverse the path, and every pytest session resets
    # /tmp/pytest-of-<user> to mode 0700 when it starts.
    data_dir = Path(tempfile.mkdtemp(prefix="ecswatch-test-pg-"))
    embedded = EmbeddedPostgres(data_dir)
    url = await embedded.start()
    try:
        yield url
    finally:
        await embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session, dropped afterwards."""
    name = f"ecswatch_test_{uuid.uuid4().hex[:10]}"
    _, admin = _admin_dsn(server_url)
    conn = await asyncpg.connect(**admin)  # type: ignore[arg-type]
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    try:
        yield url
    finally:
        conn = await asyncpg.connect(**admin)  # type: ignore[arg-type]
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A brand-new database without any schema, dropped afterwards."""
    name = f"ecswatch_empty_{uuid.uuid4().hex[:10]}"
    _, admin = _admin_dsn(server_url)
    conn = await asyncpg.connect(**admin)  # type: ignore[arg-type]
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(**admin)  # type: ignore[arg-type]
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


_TABLES = ", ".join(f'"{t.name}"' for t in reversed(metadata.sorted_tables))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the session database, emptied before the test (isolation per test)."""
    eng = create_engine(database_url, pool_size=5)
    async with eng.begin() as conn:
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings as a test process would load them, on the test database."""
    return load_settings(database_url=database_url, data_dir=tmp_path / "data")


@pytest.fixture
async def runtime(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Runtime]:
    """The real runtime on the (already emptied) test database."""
    async with open_runtime(settings, pool_size=5) as rt:
        yield rt


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every ECSWATCH_/DD_ variable so a test sees only what it sets."""
    for key in list(os.environ):
        if key.startswith(("ECSWATCH_", "DD_")):
            monkeypatch.delenv(key)
    return monkeypatch
