"""The ``ecswatch`` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import create_engine
from service.demo.events import task_lifecycle
from service.schema import metadata
from service.state.models import is_raw_event_partition
from tests.rig.readiness import wait_ready

ECSWATCH = [sys.executable, "-m", "service"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_"))}
    env["ECSWATCH_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ECSWATCH, *args], env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_contract_command() -> None:
    out = _run("--help").stdout
    for command in ("run", "db", "demo", "aws", "replay", "datadog"):
        assert f"    {command} " in out


def test_datadog_install_without_keys_is_one_line() -> None:
    result = _run("datadog", "install")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ecswatch: datadog install needs DD_API_KEY (and DD_APP_KEY)"
    ]


def test_bad_setting_is_one_line_exit_2() -> None:
    result = _run("db", "upgrade", ECSWATCH_RECONCILE_INTERVAL_S="often")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("ecswatch: invalid ECSWATCH_RECONCILE_INTERVAL_S")


def test_a_prefix_in_datadogs_namespace_is_refused_at_start_up() -> None:
    result = _run("db", "upgrade", ECSWATCH_METRIC_PREFIX="aws.ecs.")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ecswatch: invalid ECSWATCH_METRIC_PREFIX: must not start with aws.:"
        " Datadog's own integrations write there"
    ]


def test_unknown_role_and_open_bind_are_refused(tmp_path: Path) -> None:
    bad_role = _run("run", "--roles", "api,scheduler")
    assert bad_role.returncode == 2
    assert "unknown role 'scheduler'" in bad_role.stderr
    open_bind = _run("run", "--roles", "api", "--host", "0.0.0.0")
    assert open_bind.returncode == 2
    assert "without ECSWATCH_API_TOKENS" in open_bind.stderr


def test_db_upgrade_on_embedded_database_then_reuse(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = _run("db", "upgrade", ECSWATCH_DATA_DIR=str(data_dir))
    assert first.returncode == 0, first.stderr
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    second = _run("db", "upgrade", ECSWATCH_DATA_DIR=str(data_dir))
    assert second.returncode == 0, second.stderr
    # The second run found the cluster and the schema in place: nothing to migrate.
    assert "Running upgrade" in first.stderr
    assert "Running upgrade" not in second.stderr


async def test_db_upgrade_on_server(empty_database_url: str) -> None:
    # On a database with no schema yet: the command must really migrate it.
    result = _run("db", "upgrade", ECSWATCH_DATABASE_URL=empty_database_url)
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" in result.stderr
    engine = create_engine(empty_database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            tables = {n for n in names if not is_raw_event_partition(n)}
    finally:
        await engine.dispose()
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_run_answers_readyz_and_exits_0_on_sigterm(database_url: str) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*ECSWATCH, "run", "--roles", "api", "--port", str(port)],
        env=_env(ECSWATCH_DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_ready(proc, port, within_s=30)
        assert ready is not None, proc.stderr.read() if proc.stderr else ""
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "roles": {"api": "running"}}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


# --- Bad input to replay: quarantined with a reason, never a traceback ----------------


async def _quarantine_and_raw_ids(engine: AsyncEngine) -> tuple[list[tuple[str, str]], set[str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT error, body FROM quarantine ORDER BY id"))).all()
        raw = set((await conn.execute(text("SELECT id FROM raw_events"))).scalars())
    return [(str(r[0]), str(r[1])) for r in rows], raw


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        # orjson refuses more than 1024 levels; json.loads then raises RecursionError
        # (it stops at about 990).
        (b"[" * 2000 + b"]" * 2000, "body is not JSON: nested too deeply"),
        # json.loads raises a plain ValueError: integer literals over 4300 digits.
        (b'{"id": "x", "n": ' + b"9" * 5000 + b"}", "body is not JSON: Exceeds the limit"),
    ],
    ids=["nested-2000", "int-5000-digits"],
)
async def test_replay_quarantines_what_the_json_decoder_refuses(
    database_url: str, engine: AsyncEngine, tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = _run("replay", str(path), ECSWATCH_DATABASE_URL=database_url)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "replayed 1 events from 1 file(s): quarantined 1"
    quarantined, raw = await _quarantine_and_raw_ids(engine)
    assert [error for error, _ in quarantined] == [quarantined[0][0]]
    assert quarantined[0][0].startswith(reason)
    assert raw == set()


async def test_replay_quarantines_a_binary_file(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "bin.dat"
    path.write_bytes(b"\x7fELF\x02\x01\x00\xff\xfe\xc3\x28 data\n\x80\x81\x82 more\n")
    result = _run("replay", str(path), ECSWATCH_DATABASE_URL=database_url)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "replayed 2 events from 1 file(s): quarantined 2"
    quarantined, raw = await _quarantine_and_raw_ids(engine)
    assert len(quarantined) == 2
    assert all(error.startswith("body is not JSON: ") for error, _ in quarantined)
    # Every byte is kept: NUL and the bytes that are not UTF-8 as escapes.
    assert {body for _, body in quarantined} == {
        "\x7fELF\x02\x01\\u0000\\udcff\\udcfe\\udcc3( data",
        "\\udc80\\udc81\\udc82 more",
    }
    assert raw == set()


async def test_replay_json_lines_with_a_line_that_is_not_utf8(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    good = task_lifecycle(random.Random(11))[0]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(json.dumps(good).encode() + b"\n\xff\xfe not json\n")
    result = _run("replay", str(path), ECSWATCH_DATABASE_URL=database_url)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "replayed 2 events from 1 file(s): applied 1, quarantined 1"
    quarantined, raw = await _quarantine_and_raw_ids(engine)
    assert len(quarantined) == 1
    error, body = quarantined[0]
    assert error.startswith("body is not JSON: ")
    assert body == "\\udcff\\udcfe not json"
    assert raw == {good["id"]}


def test_replay_names_a_directory(tmp_path: Path) -> None:
    # A bad argument, like a missing file (tests/consumer/test_replay.py): exit 2,
    # refused before the database is opened.
    result = _run("replay", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"ecswatch: replay: {tmp_path}: a directory"


# --- The database server refusing us, a port already taken: one line --------------------


def test_database_url_without_a_database_name_is_refused() -> None:
    # Without the check, asyncpg would pick a database named after the OS user.
    result = _run("db", "upgrade", ECSWATCH_DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ecswatch: invalid ECSWATCH_DATABASE_URL: name the database")


def _refused(url: str, *, user: str | None = None, database: str | None = None) -> str:
    u = make_url(url)
    if user is not None:
        u = u.set(username=user, password=None)
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def test_db_upgrade_with_a_url_the_driver_refuses_is_one_line(database_url: str) -> None:
    # Passes the settings check (the port hides in the query) and fails on connect.
    result = _run("db", "upgrade", ECSWATCH_DATABASE_URL=database_url + "?port=abc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ecswatch: invalid ECSWATCH_DATABASE_URL: "), lines


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"database": "ecswatch_no_such_db_x"}, 'database "ecswatch_no_such_db_x" does not exist'),
        ({"user": "ecswatch_no_such_role_x"}, 'role "ecswatch_no_such_role_x" does not exist'),
    ],
    ids=["unknown-database", "unknown-role"],
)
def test_db_upgrade_refused_by_the_server_is_one_line(
    database_url: str, change: dict[str, str], message: str
) -> None:
    url = _refused(database_url, **change)
    result = _run("db", "upgrade", ECSWATCH_DATABASE_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecswatch: database: ")
    assert message in lines[0]


def test_run_api_on_a_port_in_use_fails_cleanly(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        started = time.monotonic()
        args = ("run", "--roles", "api", "--port", str(port))
        result = _run(*args, timeout=30, ECSWATCH_DATABASE_URL=database_url)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Task exception was never retrieved" not in result.stderr
    assert "was destroyed but it is pending" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"ecswatch: role api failed: the API could not listen on 127.0.0.1:{port} "
        "(see the error above)"
    )
    assert f"('127.0.0.1', {port})" in result.stderr  # uvicorn's own line names the cause


def test_run_no_migrate_refuses_a_schema_not_at_head(empty_database_url: str) -> None:
    # Migrations run apart (a schema-owning user); the replicas' user cannot apply them.
    result = _run(
        "run",
        "--no-migrate",
        "--roles",
        "api",
        "--port",
        str(_free_port()),
        ECSWATCH_DATABASE_URL=empty_database_url,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ecswatch: the database is at revision none")
    assert "run `ecswatch db upgrade` first" in last
    assert "Running upgrade" not in result.stderr


def test_run_no_migrate_starts_on_a_migrated_schema(database_url: str) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*ECSWATCH, "run", "--no-migrate", "--roles", "api", "--port", str(port)],
        env=_env(ECSWATCH_DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_ready(proc, port, within_s=30)
        assert ready is not None
        assert ready.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert "Running upgrade" not in stderr
