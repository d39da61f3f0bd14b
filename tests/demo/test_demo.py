"""``ecswatch demo`` as a user runs it: a real process, its printed lines, its data."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.test_cli import _env, _free_port

FAILING = "ecs-svc/1000000000000000003"
SUCCEEDING = "ecs-svc/1000000000000000002"
STABLE_WEB = "ecs-svc/1000000000000000100"


async def _outcomes(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, outcome FROM deployments"))
        return {r[0]: r[1] for r in rows}


async def test_demo_runs_the_whole_system(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "demo",
        "--port",
        str(port),
        "--duration",
        "60",
        env=_env(ECSWATCH_DATABASE_URL=database_url),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            api_line = (await proc.stdout.readline()).decode().strip()
            token_line = (await proc.stdout.readline()).decode().strip()
        assert api_line == f"API: http://127.0.0.1:{port}"
        assert token_line.startswith("Token: ")
        token = token_line.removeprefix("Token: ")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            # The simulated failing rollout ends rolled back; the good one succeeds.
            outcomes: dict[str, str] = {}
            async with asyncio.timeout(45):
                while (outcomes := await _outcomes(engine)).get(FAILING) != "rolled_back":
                    await asyncio.sleep(0.5)
            assert outcomes[SUCCEEDING] == "succeeded"
            assert outcomes[STABLE_WEB] == "succeeded"
            async with engine.connect() as conn:
                failed = (
                    await conn.execute(
                        text("SELECT failed_tasks FROM deployments WHERE id = :id"),
                        {"id": FAILING},
                    )
                ).scalar()
                tasks = (await conn.execute(text("SELECT count(*) FROM tasks"))).scalar()
            assert failed == 3
            assert tasks is not None
            assert tasks >= 8
            headers = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/healthz", headers=headers)).status_code == 200
            # The failing deployment's alert arrives at the demo's receiver, verified,
            # and the local Datadog intake receives series and events, as printed.
            lines: list[str] = []

            def seen_all() -> bool:
                return (
                    any(f"deployment.failed {FAILING}" in line for line in lines)
                    and any(
                        line.startswith("Datadog intake: ")
                        and not line.startswith("Datadog intake: 0 series")
                        for line in lines
                    )
                    and any(
                        line.startswith("Datadog event: [error] ECS deployment failed")
                        for line in lines
                    )
                )

            async with asyncio.timeout(30):
                while not seen_all():
                    line = (await proc.stdout.readline()).decode()
                    assert line, "the demo stopped printing"
                    lines.append(line.strip())
            [shown] = [line for line in lines if f"deployment.failed {FAILING}" in line]
            assert shown.startswith("Webhook: deployment.failed")
            assert "(signature verified)" in shown
            alerts = (await client.get("/v1/alerts", headers=headers)).json()["items"]
            failed = [a for a in alerts if a["type"] == "deployment.failed"]
            assert [a["deployment_id"] for a in failed] == [FAILING]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
