"""Leader election on a real PostgreSQL: one poller at a time, and a quick takeover."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.poller.leader import Job, LeaderLock, run_as_leader
from tests.conftest import REPO_ROOT

INTERVAL = 0.5
#: How long a takeover may take before the test calls it lost. Two intervals is the
#: design; the slack is for a machine busy with other tests (it bounds a wait, it
#: measures nothing).
TAKEOVER_WITHIN = INTERVAL * 2 + 15


def _job(name: str, runs: list[str]) -> Job:
    async def run(now: datetime) -> None:
        runs.append(name)

    return Job("tick", 0.1, run)


async def _until(predicate: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_only_one_polls_and_the_other_takes_over_when_the_connection_dies(
    engine: AsyncEngine,
) -> None:
    key = random.randrange(1, 2**62)
    runs: list[str] = []
    stops = {name: asyncio.Event() for name in "ab"}
    locks = {name: LeaderLock.for_engine(engine, key) for name in "ab"}
    changes: list[tuple[str, bool]] = []  # (replica, leader now?) as run_as_leader reports

    def on_change(name: str) -> Callable[[bool], None]:
        return lambda leader: changes.append((name, leader))

    a = asyncio.create_task(
        run_as_leader(
            locks["a"], [_job("a", runs)], stops["a"], interval_s=INTERVAL, on_change=on_change("a")
        )
    )
    await _until(lambda: "a" in runs, within=TAKEOVER_WITHIN)
    b = asyncio.create_task(
        run_as_leader(
            locks["b"], [_job("b", runs)], stops["b"], interval_s=INTERVAL, on_change=on_change("b")
        )
    )
    await asyncio.sleep(INTERVAL * 3)
    assert "b" not in runs  # the follower never polled while the leader held the lock
    assert locks["a"].held
    assert not locks["b"].held
    assert changes == [("a", True)]
    # The leader's connection dies (server restart, network cut): the lock goes with it.
    # (The old leader may notice while this statement commits, so nothing is asserted
    # about ``changes`` between the two.)
    conn = locks["a"]._conn
    assert conn is not None
    async with engine.begin() as sql:
        await sql.execute(text(f"SELECT pg_terminate_backend({conn.get_server_pid()})"))
    # The old leader notices, and within a couple of intervals one replica leads
    # again: usually the follower, but the old leader may win the race again on a
    # new connection, which is as good (one poller, no gap worth a failover).
    await _until(lambda: ("a", False) in changes, within=TAKEOVER_WITHIN)
    await _until(lambda: any(up for _, up in changes[1:]), within=TAKEOVER_WITHIN)
    leader = next(name for name, up in changes[1:] if up)
    seen = len(runs)
    await asyncio.sleep(INTERVAL * 3)
    assert runs[seen:], "polling stopped"
    assert set(runs[seen:]) == {leader}  # only one replica polls now
    assert not locks["b" if leader == "a" else "a"].held
    for stop in stops.values():
        stop.set()
    await asyncio.gather(a, b)


async def test_a_killed_leader_process_is_replaced(engine: AsyncEngine) -> None:
    key = random.randrange(1, 2**62)
    url = engine.url.render_as_string(hide_password=False)
    script = textwrap.dedent(
        f"""
        import asyncio
        from service.db import create_engine
        from service.poller.leader import LeaderLock

        async def main():
            engine = create_engine({url!r}, pool_size=1)
            lock = LeaderLock.for_engine(engine, {key})
            assert await lock.try_acquire()
            print("leader", flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"leader"
        runs: list[str] = []
        stop = asyncio.Event()
        lock = LeaderLock.for_engine(engine, key)
        follower = asyncio.create_task(
            run_as_leader(lock, [_job("b", runs)], stop, interval_s=INTERVAL)
        )
        await asyncio.sleep(INTERVAL * 3)
        assert runs == []
        child.send_signal(signal.SIGKILL)
        await child.wait()
        await _until(lambda: "b" in runs, within=TAKEOVER_WITHIN)
        stop.set()
        await follower
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
