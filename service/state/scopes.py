"""Rows of the ``scopes`` table written outside the poller's rounds.

A scope (account, region) that events come from but ecswatch holds no credentials
for is recorded once with ``monitored`` false, so ``GET /v1/accounts`` lists it.
The poller's rounds own the other columns (service.poller.scopes). Only executes:
the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Sorted, so two consumers recording the same scopes take their locks in one order.
_UNMONITORED = text(
    "INSERT INTO scopes (account_id, region, monitored)"
    " SELECT a, r, false FROM unnest(CAST(:accounts AS TEXT[]), CAST(:regions AS TEXT[]))"
    " AS s(a, r) ORDER BY a, r"
    " ON CONFLICT (account_id, region) DO NOTHING"
)


async def record_unmonitored(session: AsyncSession, scopes: Sequence[tuple[str, str]]) -> None:
    """Record each (account, region) of ``scopes`` as seen in events, not watched (a
    row that exists already, watched or not, is left as it is): one statement."""
    if not scopes:
        return
    ordered = sorted(set(scopes))
    await session.execute(
        _UNMONITORED,
        {"accounts": [a for a, _ in ordered], "regions": [r for _, r in ordered]},
    )
