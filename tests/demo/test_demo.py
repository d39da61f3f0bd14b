"""``ecswatch demo`` as a user runs it: a real process, its printed lines, its data."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.test_cli import _env, _free_port


async def test_demo_runs_the_whole_system(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "demo", "--port", str(port), "--duration", "60"],
        env=_env(ECSWATCH_DATABASE_URL=database_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        api_line = proc.stdout.readline().strip()
        token_line = proc.stdout.readline().strip()
        assert api_line == f"API: http://127.0.0.1:{port}"
        assert token_line.startswith("Token: ")
        token = token_line.removeprefix("Token: ")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        # The simulated failing rollout ends rolled back; the good one succeeds.
        deadline = time.monotonic() + 45
        outcomes: dict[str, str] = {}
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT id, outcome FROM deployments"))
                outcomes = {r[0]: r[1] for r in rows}
            if outcomes.get("ecs-svc/1000000000000000003") == "rolled_back":
                break
            time.sleep(0.5)
        assert outcomes.get("ecs-svc/1000000000000000003") == "rolled_back", outcomes
        assert outcomes.get("ecs-svc/1000000000000000002") == "succeeded"
        assert outcomes.get("ecs-svc/1000000000000000100") == "succeeded"
        async with engine.connect() as conn:
            failed = (
                await conn.execute(
                    text("SELECT failed_tasks FROM deployments WHERE id = :id"),
                    {"id": "ecs-svc/1000000000000000003"},
                )
            ).scalar()
            tasks = (await conn.execute(text("SELECT count(*) FROM tasks"))).scalar()
        assert failed == 3
        assert tasks is not None
        assert tasks >= 8
        # The printed token opens the API (no token: refused once tokens are set).
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers=headers).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
