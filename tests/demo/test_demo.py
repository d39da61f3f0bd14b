"""``ecswatch demo`` as a user runs it: a real process, its printed lines, its API.

One run of ``ecswatch demo --duration 90`` in an empty directory. While it runs,
the API shows the moto fleet (clusters, tagged services and tasks, container
instances), CloudWatch points for ECS and the ALB that the poller read from
moto, and the web rollout rolled back by the circuit breaker; the demo's
receiver verified that deployment's alert, and its Datadog intake received
series and an error event. Then it stops by itself with exit code 0, a final
summary, and no warning or traceback in its output.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.test_cli import _env, _free_port

FAILING = "ecs-svc/1000000000000000003"
SUCCEEDING = "ecs-svc/1000000000000000002"
CRASH_LOOPING = "ecs-svc/1000000000000000004"
DURATION_S = 90

pytestmark = pytest.mark.timeout(180)


async def _eventually(
    what: str, check: Callable[[], Awaitable[Any]], *, within_s: float = 60
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    last: Any = None
    try:
        async with asyncio.timeout(within_s):
            while not (last := await check()):
                await asyncio.sleep(1)
    except TimeoutError:
        pytest.fail(f"the demo never showed {what} (last answer: {last!r})")
    return last


async def test_demo_shows_the_whole_system(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    port = _free_port()
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "demo",
            "--port",
            str(port),
            "--duration",
            str(DURATION_S),
            env=_env(ECSWATCH_DATABASE_URL=database_url),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    lines: list[str] = []

    async def read_all() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            lines.append(line.decode().rstrip("\n"))

    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            api_line = (await proc.stdout.readline()).decode().strip()
            token_line = (await proc.stdout.readline()).decode().strip()
        api = f"http://127.0.0.1:{port}"
        assert api_line == f"API: {api}"
        assert token_line.startswith("Token: ")
        token = token_line.removeprefix("Token: ")
        reader = asyncio.create_task(read_all())
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=10) as client:

            async def items(path: str, **params: str) -> list[dict[str, Any]]:
                response = await client.get(path, params={"limit": "200", **params})
                assert response.status_code == 200, response.text
                found: list[dict[str, Any]] = response.json()["items"]
                return found

            async def clusters() -> set[str]:
                names = {c["name"] for c in await items("/v1/clusters")}
                return names if {"demo-ec2", "demo-fargate"} <= names else set()

            await _eventually("both clusters", clusters)

            async def tagged_services() -> list[dict[str, Any]]:
                found = await items("/v1/services")
                tagged = [s for s in found if s["tags_known"] and s["tags"].get("env") == "demo"]
                # The home scope's five beside the other scopes' "edge".
                names = {s["name"] for s in tagged}
                return (
                    tagged if names >= {"web", "api", "checkout", "worker", "batch", "edge"} else []
                )

            # Two accounts in two regions: every scope is watched, and its clusters and
            # running tasks (described with that account's credentials) are counted.
            async def scopes() -> dict[str, dict[str, Any]]:
                found = {f"{a['account_id']}/{a['region']}": a for a in await items("/v1/accounts")}
                ready = all(
                    a["monitored"] and a["clusters_count"] >= 1 and a["running_tasks_count"] >= 2
                    for a in found.values()
                )
                return found if ready and len(found) == 4 else {}

            by_scope = await _eventually("four scopes with their clusters", scopes)
            assert set(by_scope) == {
                "123456789012/us-east-1",
                "123456789012/us-west-2",
                "210987654321/us-east-1",
                "210987654321/us-west-2",
            }
            assert by_scope["123456789012/us-east-1"]["clusters_count"] == 2
            edge = await items("/v1/clusters")
            edge_arns = {c["arn"] for c in edge if c["name"] == "demo-edge"}
            assert edge_arns == {
                f"arn:aws:ecs:{s.split('/')[1]}:{s.split('/')[0]}:cluster/demo-edge"
                for s in by_scope
                if s != "123456789012/us-east-1"
            }

            services = await _eventually("six tagged services", tagged_services)
            assert {s["name"] for s in services} == {
                "web",
                "api",
                "checkout",
                "worker",
                "batch",
                "edge",
            }

            async def tagged_tasks() -> list[dict[str, Any]]:
                found = await items("/v1/tasks", last_status="RUNNING")
                return [t for t in found if t["tags_known"] and t["tags"].get("team")]

            tasks = await _eventually("running tasks with their tags", tagged_tasks)
            assert {t["tags"]["env"] for t in tasks} == {"demo"}

            async def instances() -> list[dict[str, Any]]:
                found = await items("/v1/container-instances", cluster="demo-ec2")
                draining = [i for i in found if i["status"] == "DRAINING"]
                lost = [i for i in found if i["agent_connected"] is False]
                return found if len(found) == 3 and draining and lost else []

            await _eventually(
                "three container instances, one draining, one without agent", instances
            )

            async def rolled_back() -> list[dict[str, Any]]:
                found = await items("/v1/deployments", service="web")
                return [
                    d
                    for d in found
                    if d["id"] == FAILING and d["outcome"] in ("failed", "rolled_back")
                ]

            [deployment] = await _eventually("the web rollout failed or rolled back", rolled_back)
            assert deployment["failed_tasks"] == 3

            for namespace in ("AWS/ECS", "AWS/ApplicationELB"):

                async def points(namespace: str = namespace) -> list[dict[str, Any]]:
                    return await items("/v1/metrics", namespace=namespace)

                found = await _eventually(f"{namespace} metric points", points)
                if namespace == "AWS/ApplicationELB":
                    assert {p["service"] for p in found} == {"checkout"}
                    groups = {p["dimensions"]["TargetGroup"].split("/")[1] for p in found}
                    assert groups == {"demo-checkout-blue", "demo-checkout-green"}

            # The receiver verified the failed deployment's alert; the intake has
            # series and an error event.
            def printed(prefix: str) -> list[str]:
                return [line for line in lines if line.startswith(prefix)]

            async def verified_alert() -> list[str]:
                return [
                    line
                    for line in printed("Webhook: deployment.failed ")
                    if FAILING in line and "(signature verified)" in line
                ]

            [failed_line, *_] = await _eventually(
                "the failed deployment's verified alert", verified_alert
            )
            # Each failing deployment's alert line ends with its classified cause.
            assert "| cause: image_pull: " in failed_line

            async def oom_alert() -> list[str]:
                return [
                    line for line in printed("Webhook: deployment.failed ") if CRASH_LOOPING in line
                ]

            [oom_line, *_] = await _eventually("the crash loop's verified alert", oom_alert)
            assert "| cause: out_of_memory: " in oom_line

            # The curl line's deployment URL (encoded) answers with the cause.
            [detail_path] = [
                line.strip().rsplit(api, 1)[1].rstrip("'")
                for line in lines[2:12]
                if "/v1/deployments/" in line
            ]
            detail = await client.get(detail_path)
            assert detail.status_code == 200, detail.text
            assert detail.json()["id"] == FAILING
            assert detail.json()["cause"]["category"] == "image_pull"

            async def intake_series() -> list[str]:
                return [
                    line
                    for line in printed("Datadog intake: ")
                    if not line.startswith("Datadog intake: 0 series")
                ]

            await _eventually("series at the Datadog intake", intake_series)

            async def error_event() -> list[str]:
                return printed("Datadog event: [error] ")

            await _eventually("an error event at the Datadog intake", error_event)
        # --duration stops it: exit 0, a final summary, nothing alarming on stderr.
        assert await asyncio.wait_for(proc.wait(), DURATION_S + 30) == 0
        await asyncio.wait_for(reader, 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert lines[:2] == [f"Docs: {api}/docs", "Try:"]
    assert any(line.strip().startswith("curl -s -H") for line in lines[2:10])
    assert "Summary:" in lines
    summary = lines[lines.index("Summary:") :]
    assert any(line.strip().startswith("Deployments by outcome:") for line in summary)
    assert any(line.strip().endswith("/v1/accounts'") for line in lines[2:12])
    # The final summary counts each scope's clusters, running tasks, deployments (the
    # "edge" rollout of each scope is its own) and events.
    for scope in ("123456789012/us-west-2", "210987654321/us-east-1", "210987654321/us-west-2"):
        [row] = [line for line in summary if line.strip().startswith(f"Scope {scope}:")]
        counts = r": 1 clusters, 2 running tasks, 1 deployments, [1-9]\d* events$"
        assert re.search(counts, row), row
    # A library warning or a traceback in normal use is a defect (as scripts/check-install).
    alarming = re.compile(r"[A-Za-z]+Warning\b|Traceback \(most recent call last\)")
    output = [*lines, *stderr_path.read_text().splitlines()]
    assert [line for line in output if alarming.search(line)] == []
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, outcome FROM deployments"))
        outcomes = {row[0]: row[1] for row in rows}
    assert outcomes[SUCCEEDING] == "succeeded"
    assert outcomes[CRASH_LOOPING] == "failed"
