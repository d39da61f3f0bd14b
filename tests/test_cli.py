"""The ``ecswatch`` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from service.db import create_engine
from service.schema import metadata

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


@pytest.mark.parametrize("args", [("datadog", "install")])
def test_commands_not_built_yet_say_so(args: tuple[str, ...]) -> None:
    result = _run(*args)
    assert result.returncode != 0
    assert "not built yet" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_is_one_line_exit_2() -> None:
    result = _run("db", "upgrade", ECSWATCH_RECONCILE_INTERVAL_S="often")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("ecswatch: invalid ECSWATCH_RECONCILE_INTERVAL_S")


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
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
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
        deadline = time.monotonic() + 30
        ready = None
        # A probe polls: the socket may accept a moment before every role reports.
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
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
