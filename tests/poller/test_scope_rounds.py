"""Rounds over scopes: each scope once, a bounded number at a time, a failing scope
isolated and backing off on its own (no timing: gates and a clock the test moves)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.aws.scopes import Scope
from service.poller.scopes import ScopeRounds

SCOPES = [Scope(f"{n:012}", region) for n in (1, 2, 3) for region in ("us-east-1", "eu-west-1")]


async def test_every_scope_once_never_more_than_the_bound_in_flight(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    rounds = ScopeRounds(sessionmaker, "reconcile", interval_s=600, concurrency=2)
    in_flight = 0
    most = 0
    calls: list[Scope] = []

    async def work(scope: Scope) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        calls.append(scope)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        return 1

    done = await rounds.run(SCOPES, work)
    assert sorted(calls) == sorted(SCOPES)
    assert most == 2
    assert set(done) == set(SCOPES)


async def test_a_large_scope_holds_one_slot_and_never_the_others_turn(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The first scope finishes only once every other scope is done: with the others
    queued behind it, the round could never end."""
    rounds = ScopeRounds(sessionmaker, "metrics", interval_s=60, concurrency=2)
    big = SCOPES[0]
    others_done: set[Scope] = set()
    release = asyncio.Event()

    async def work(scope: Scope) -> str:
        if scope == big:
            await release.wait()
            return "big"
        others_done.add(scope)
        if others_done == set(SCOPES) - {big}:
            release.set()
        return "small"

    async with asyncio.timeout(30):
        done = await rounds.run(SCOPES, work)
    assert done[big] == "big"
    assert len(done) == len(SCOPES)


async def test_a_failing_scope_backs_off_alone_and_reports_its_error(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    now = [1000.0]
    rounds = ScopeRounds(
        sessionmaker, "reconcile", interval_s=600, concurrency=3, clock=lambda: now[0]
    )
    bad = SCOPES[1]
    failing = True
    calls: list[Scope] = []

    async def work(scope: Scope) -> None:
        calls.append(scope)
        if scope == bad and failing:
            raise RuntimeError("An error occurred (AccessDenied) when calling AssumeRole")

    await rounds.run(SCOPES, work)
    assert set(rounds.errors) == {bad}
    assert "AccessDenied" in rounds.errors[bad]
    # Next round, before the backoff ends: every other scope, not the failing one.
    calls.clear()
    now[0] += 599
    await rounds.run(SCOPES, work)
    assert sorted(calls) == sorted(set(SCOPES) - {bad})
    # After one interval it is tried again; it fails again and waits twice as long.
    calls.clear()
    now[0] += 2
    await rounds.run(SCOPES, work)
    assert bad in calls
    now[0] += 1199
    assert rounds.backing_off(bad)
    now[0] += 2
    assert not rounds.backing_off(bad)
    failing = False
    await rounds.run(SCOPES, work)
    assert rounds.errors == {}
    async with sessionmaker() as session:
        rows = {
            (a, r): (ok, err)
            for a, r, ok, err in await session.execute(
                text(
                    "SELECT account_id, region, last_reconcile_at IS NOT NULL, last_error"
                    " FROM scopes"
                )
            )
        }
    assert set(rows) == {(s.account, s.region) for s in SCOPES}
    # The last error is kept beside the later success, with its time.
    assert rows[bad.account, bad.region][0] is True
    assert "AccessDenied" in str(rows[bad.account, bad.region][1])
    assert all(rows[s.account, s.region] == (True, None) for s in SCOPES if s != bad)
