"""Rounds over every scope: fair, bounded, isolated; and each scope's status.

A reconcile or metrics round visits every watched scope (account, region) once,
at most ``ECSWATCH_SCOPE_CONCURRENCY`` of them at a time, each scope's work on
its own: a large scope holds one slot, never the others' turn. A scope whose
work fails (access denied, an expired trust, a region not enabled, a timeout:
any error counts the same) is recorded with its last error and backs off on its
own: it is skipped for an exponentially growing time (one interval of the job,
doubling up to an hour) while every other scope carries on. Its first success
clears the backoff.

The status lives in the ``scopes`` table (last successful reconcile and metrics
poll, last error and its time, ``monitored``), read by ``GET /v1/accounts``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.aws.backoff import backoff_delay
from service.aws.scopes import Scope
from service.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
JobName = Literal["reconcile", "metrics"]

#: The longest a failing scope is skipped before it is tried again.
MAX_BACKOFF_S = 3600.0
#: Characters of an error kept in ``scopes.last_error``.
ERROR_CHARS = 500

_SUCCESS = {
    "reconcile": text(
        "INSERT INTO scopes (account_id, region, monitored, last_reconcile_at, updated_at)"
        " VALUES (:account, :region, true, :at, now())"
        " ON CONFLICT (account_id, region) DO UPDATE SET monitored = true,"
        " last_reconcile_at = excluded.last_reconcile_at, updated_at = now()"
    ),
    "metrics": text(
        "INSERT INTO scopes (account_id, region, monitored, last_metrics_at, updated_at)"
        " VALUES (:account, :region, true, :at, now())"
        " ON CONFLICT (account_id, region) DO UPDATE SET monitored = true,"
        " last_metrics_at = excluded.last_metrics_at, updated_at = now()"
    ),
}
_ERROR = text(
    "INSERT INTO scopes (account_id, region, monitored, last_error, last_error_at, updated_at)"
    " VALUES (:account, :region, true, :error, :at, now())"
    " ON CONFLICT (account_id, region) DO UPDATE SET monitored = true,"
    " last_error = excluded.last_error, last_error_at = excluded.last_error_at,"
    " updated_at = now()"
)
_WATCHED = text(
    "INSERT INTO scopes (account_id, region, monitored)"
    " SELECT a, r, true FROM unnest(CAST(:accounts AS TEXT[]), CAST(:regions AS TEXT[]))"
    " AS s(a, r)"
    " ON CONFLICT (account_id, region) DO UPDATE SET monitored = true, updated_at = now()"
    " WHERE NOT scopes.monitored"
)
_UNWATCH = text(
    "UPDATE scopes SET monitored = false, updated_at = now() WHERE monitored"
    " AND (account_id, region) NOT IN"
    " (SELECT * FROM unnest(CAST(:accounts AS TEXT[]), CAST(:regions AS TEXT[])))"
)


async def record_watched(
    sessionmaker: async_sessionmaker[AsyncSession], scopes: Sequence[Scope]
) -> None:
    """The watched scopes are monitored; every other row of ``scopes`` is not."""
    params = {"accounts": [s.account for s in scopes], "regions": [s.region for s in scopes]}
    async with sessionmaker() as session, session.begin():
        await session.execute(_WATCHED, params)
        await session.execute(_UNWATCH, params)


async def record_success(
    sessionmaker: async_sessionmaker[AsyncSession], scope: Scope, job: JobName, at: datetime
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            _SUCCESS[job], {"account": scope.account, "region": scope.region, "at": at}
        )


async def record_error(
    sessionmaker: async_sessionmaker[AsyncSession], scope: Scope, error: str, at: datetime
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            _ERROR,
            {
                "account": scope.account,
                "region": scope.region,
                "error": error[:ERROR_CHARS],
                "at": at,
            },
        )


@dataclass
class _Failing:
    failures: int
    not_before: float


class ScopeRounds:
    """Runs one job over every scope: fair, bounded, and with a backoff per scope."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        job: JobName,
        *,
        interval_s: float,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.job: JobName = job
        self._interval = interval_s
        self._concurrency = max(1, concurrency)
        self._clock = clock
        self._failing: dict[Scope, _Failing] = {}
        #: The last error of each scope that is failing now.
        self.errors: dict[Scope, str] = {}

    def backing_off(self, scope: Scope) -> bool:
        failing = self._failing.get(scope)
        return failing is not None and self._clock() < failing.not_before

    async def run(
        self, scopes: Sequence[Scope], work: Callable[[Scope], Awaitable[T]]
    ) -> dict[Scope, T]:
        """``work(scope)`` for each scope not backing off; the results of those that
        succeeded. Never raises for one scope's failure."""
        slots = asyncio.Semaphore(self._concurrency)
        results: dict[Scope, T] = {}

        async def one(scope: Scope) -> None:
            if self.backing_off(scope):
                return
            async with slots:
                try:
                    results[scope] = await work(scope)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._failed(scope, exc)
                    return
            self._failing.pop(scope, None)
            self.errors.pop(scope, None)
            await self._record(record_success(self._sessionmaker, scope, self.job, _now()))

        await asyncio.gather(*(one(scope) for scope in scopes))
        return results

    async def _failed(self, scope: Scope, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        previous = self._failing.get(scope)
        failures = 1 if previous is None else previous.failures + 1
        delay = backoff_delay(failures - 1, initial=self._interval, cap=MAX_BACKOFF_S, jitter=0)
        self._failing[scope] = _Failing(failures, self._clock() + delay)
        self.errors[scope] = error
        telemetry.SCOPE_FAILURES.labels(scope.account, scope.region, self.job).inc()
        log.warning(
            "scope_failed",
            job=self.job,
            account_id=scope.account,
            region=scope.region,
            failures=failures,
            retry_in=delay,
            error=error,
        )
        await self._record(record_error(self._sessionmaker, scope, error, _now()))

    async def _record(self, write: Awaitable[None]) -> None:
        try:
            await write
        except Exception as exc:  # the status is informative: never fail a round on it
            log.info("scope_status_not_recorded", error=f"{type(exc).__name__}: {exc}"[:300])


def _now() -> datetime:
    return datetime.now(UTC)
