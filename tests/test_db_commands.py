"""``ecswatch db upgrade|downgrade|current`` and plain ``alembic`` on a full database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from service.db import create_engine, create_sessionmaker
from service.migrate import alembic_config, head_revisions
from service.schema import metadata
from service.state.models import is_raw_event_partition
from tests.conftest import REPO_ROOT
from tests.history_rows import count_rows, write_rows

HEAD = head_revisions()[0]
# The revision before head: one step down, what `alembic downgrade -1` reaches.
PREVIOUS = str(ScriptDirectory.from_config(alembic_config()).get_revision(HEAD).down_revision)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_"))}
    env["ECSWATCH_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


def _ecswatch(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "db", *args],
        env=_env(ECSWATCH_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alembic(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), *args],
        cwd=REPO_ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tables(sync_conn: Connection) -> set[str]:
    """The tables, leaving out the partitions of raw_events (in no model)."""
    names = inspect(sync_conn).get_table_names()
    return {n for n in names if not is_raw_event_partition(n)}


async def _fill(url: str) -> dict[str, int]:
    engine = create_engine(url, pool_size=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            now = datetime.now(UTC)
            await write_rows(session, now - timedelta(days=90), "old")
            await write_rows(session, now, "new")
        async with create_sessionmaker(engine)() as session:
            return await count_rows(session)
    finally:
        await engine.dispose()


async def _state(url: str) -> tuple[set[str], list[str]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            versions: list[str] = []
            if "alembic_version" in tables:
                rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
                versions = [r[0] for r in rows]
            return tables, versions
    finally:
        await engine.dispose()


async def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            return await count_rows(session)
    finally:
        await engine.dispose()


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


async def test_db_downgrade_and_upgrade_on_a_full_database(empty_database_url: str) -> None:
    url = empty_database_url
    _ok(_ecswatch(url, "upgrade"))
    assert _ok(_ecswatch(url, "current")).strip() == f"{HEAD} (head)"
    filled = await _fill(url)
    assert all(n > 0 for n in filled.values()), filled

    # One step down keeps the data; back up to head.
    _ok(_ecswatch(url, "downgrade", PREVIOUS))
    assert _ok(_ecswatch(url, "current")).strip() == PREVIOUS
    assert await _counts(url) == filled
    _ok(_ecswatch(url, "upgrade"))
    assert (await _state(url))[1] == [HEAD]
    assert await _counts(url) == filled

    # All the way down with rows in every table, then up again.
    _ok(_ecswatch(url, "downgrade", "base"))
    tables, versions = await _state(url)
    assert tables == {"alembic_version"}
    assert versions == []
    assert _ok(_ecswatch(url, "current")).startswith("none")
    _ok(_ecswatch(url, "upgrade"))
    tables, versions = await _state(url)
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert versions == [HEAD]
    assert set((await _counts(url)).values()) == {0}


async def test_db_downgrade_refuses_an_unknown_or_upward_revision(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    _ok(_ecswatch(url, "upgrade"))
    _ok(_ecswatch(url, "downgrade", PREVIOUS))
    for rev, message in (
        ("nosuchrev", "Can't locate revision identified by 'nosuchrev'"),
        (HEAD, "is not a valid downgrade target"),
    ):
        result = _ecswatch(url, "downgrade", rev)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("ecswatch: db downgrade: ")
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert (await _state(url))[1] == [PREVIOUS]
    missing = _ecswatch(url, "downgrade")
    assert missing.returncode == 2
    assert "REV" in missing.stderr


async def test_plain_alembic_uses_ecswatch_database_url(empty_database_url: str) -> None:
    url = empty_database_url
    _ok(_alembic("upgrade", "head", ECSWATCH_DATABASE_URL=url))
    assert (await _state(url))[1] == [HEAD]
    filled = await _fill(url)
    assert HEAD in _ok(_alembic("current", ECSWATCH_DATABASE_URL=url))
    _ok(_alembic("downgrade", "-1", ECSWATCH_DATABASE_URL=url))
    assert (await _state(url))[1] == [PREVIOUS]
    _ok(_alembic("upgrade", "head", ECSWATCH_DATABASE_URL=url))
    assert await _counts(url) == filled
    _ok(_alembic("downgrade", "base", ECSWATCH_DATABASE_URL=url))
    assert (await _state(url))[0] == {"alembic_version"}
    _ok(_alembic("upgrade", "head", ECSWATCH_DATABASE_URL=url))
    assert (await _state(url))[0] == set(metadata.tables) | {"alembic_version"}


def test_plain_alembic_without_any_url_says_what_to_set() -> None:
    result = _alembic("upgrade", "head")
    assert result.returncode != 0
    assert "set ECSWATCH_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    bad = _alembic("upgrade", "head", ECSWATCH_DATABASE_URL="mysql://u@h/db")
    assert bad.returncode != 0
    assert "invalid ECSWATCH_DATABASE_URL" in bad.stderr
    assert "Traceback" not in bad.stderr
