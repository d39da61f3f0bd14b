"""Leader election: one poller at a time, through a Postgres advisory lock.

The lock is held on a dedicated connection (not one of the pool's), so it lives
exactly as long as that session: when the leader dies, or its connection drops,
PostgreSQL releases the lock and another replica takes it at its next try, at
most ``interval_s`` later. The leader checks its connection at the same pace
and stops its jobs as soon as the connection is gone.

While leader, :func:`run_as_leader` runs a small list of periodic :class:`Job`\\s
(reconcile, metrics, CodeDeploy mapping; retention pruning joins as one more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from service import telemetry
from service.logging import get_logger

log = get_logger(__name__)

#: The advisory lock's key: "ecswatch poller" (any constant all replicas share).
LOCK_KEY = 0x6563_7377_706F_6C6C % (2**63)


@dataclass(frozen=True)
class Job:
    """A periodic piece of the leader's work: ``run(now)`` every ``interval_s``."""

    name: str
    interval_s: float
    run: Callable[[datetime], Awaitable[Any]]


#: How many sessions of this database hold the leader lock (0 or 1), from
#: ``pg_locks``: a bigint advisory key is split in ``classid`` (high 32 bits) and
#: ``objid`` (low 32 bits), with ``objsubid`` 1. Any session may read it.
COUNT_LEADERS_SQL = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
    " WHERE datname = current_database())"
    f" AND classid::bigint = {LOCK_KEY >> 32} AND objid::bigint = {LOCK_KEY & 0xFFFFFFFF}"
)


def connect_kwargs(engine: AsyncEngine) -> dict[str, Any]:
    """asyncpg.connect() arguments of the engine's database (host, socket, credentials)."""
    _, kwargs = engine.sync_engine.dialect.create_connect_args(engine.url)
    return dict(kwargs)


class LeaderLock:
    """``pg_try_advisory_lock`` on a connection of its own."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], key: int = LOCK_KEY):
        self._connect = connect
        self._key = key
        self._conn: asyncpg.Connection | None = None
        self.held = False

    @classmethod
    def for_engine(cls, engine: AsyncEngine, key: int = LOCK_KEY) -> LeaderLock:
        kwargs = connect_kwargs(engine)

        async def connect() -> asyncpg.Connection:
            conn: asyncpg.Connection = await asyncpg.connect(timeout=10, **kwargs)
            return conn

        return cls(connect, key)

    async def try_acquire(self) -> bool:
        """Take the lock if free; False (never an exception) when not, or on any error."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect()
            self.held = bool(
                await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key, timeout=10)
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.info("leader_lock_unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
            await self._drop()
        return self.held

    async def still_held(self) -> bool:
        """True while the lock's connection answers (the lock lives with the session)."""
        if self._conn is None or not self.held:
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=10)
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await self._drop()
            return False

    async def release(self) -> None:
        if self._conn is not None and self.held and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.fetchval("SELECT pg_advisory_unlock($1)", self._key, timeout=5)
        await self._drop()

    async def _drop(self) -> None:
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()


async def run_as_leader(
    lock: LeaderLock,
    jobs: Sequence[Job],
    stop: asyncio.Event,
    *,
    interval_s: float,
    on_change: Callable[[bool], None] | None = None,
) -> None:
    """Try for the lock every ``interval_s``; while held, run ``jobs`` on their schedules."""
    try:
        while not stop.is_set():
            if await lock.try_acquire():
                log.info("poller_leader", leader=True)
                telemetry.POLLER_LEADER.set(1)
                if on_change is not None:
                    on_change(True)
                await _lead(lock, jobs, stop, interval_s)
                telemetry.POLLER_LEADER.set(0)
                if on_change is not None:
                    on_change(False)
                log.info("poller_leader", leader=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        telemetry.POLLER_LEADER.set(0)
        await lock.release()


async def _lead(
    lock: LeaderLock, jobs: Sequence[Job], stop: asyncio.Event, interval_s: float
) -> None:
    loop = asyncio.get_running_loop()
    due = {job.name: loop.time() for job in jobs}  # every job runs at once on taking over
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while not stop.is_set():
            now = loop.time()
            for job in jobs:
                if job.name not in running and due[job.name] <= now:
                    due[job.name] = now + job.interval_s
                    task = asyncio.create_task(run_job(job))
                    running[job.name] = task
                    task.add_done_callback(_forget(running, job.name))
            next_due = min(due.values(), default=now + interval_s)
            wait = max(0.05, min(interval_s, next_due - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if not await lock.still_held():
                log.warning("poller_leadership_lost")
                return
    finally:
        for task in list(running.values()):
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


def _forget(
    running: dict[str, asyncio.Task[None]], name: str
) -> Callable[[asyncio.Task[None]], None]:
    def forget(_: asyncio.Task[None]) -> None:
        running.pop(name, None)

    return forget


async def run_job(job: Job) -> None:
    try:
        await job.run(datetime.now(UTC))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one failed run waits for its next turn; the poller lives on
        log.warning("poller_job_failed", job=job.name, error=f"{type(exc).__name__}: {exc}"[:300])
