"""The ``heartbeats`` table: when ecswatch's own heartbeat last came through.

The poller's leader puts a heartbeat on the default bus every
``ECSWATCH_HEARTBEAT_INTERVAL_S``; the consumer records its time here when it
takes it off the queue, so every replica and the API read the same value. Its age
is what tells that ecswatch went blind (docs/runbook.md, "ecswatch is blind").
ecswatch's own heartbeat is the ``self`` row; each other watched scope's heartbeat
(service.poller.heartbeat) has a row ``<account_id>/<region>``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

#: The scope of ecswatch's own account and region.
SELF_SCOPE = "self"
#: Characters of a scope key kept at most (an account id and a region are short).
MAX_SCOPE_CHARS = 80


def scope_key(account_id: str, region: str) -> str:
    """The row of a watched scope's own heartbeat: ``<account_id>/<region>``."""
    return f"{account_id}/{region}"[:MAX_SCOPE_CHARS]


# A redelivered or late heartbeat never moves the time back.
_RECORD = text(
    "INSERT INTO heartbeats (scope, last_at, consumed_at) VALUES (:scope, :last_at, :now)"
    " ON CONFLICT (scope) DO UPDATE SET"
    " last_at = greatest(heartbeats.last_at, excluded.last_at),"
    " consumed_at = excluded.consumed_at"
)
_AGE = text(
    "SELECT extract(epoch FROM coalesce(CAST(:now AS timestamptz), now()) - last_at)"
    " FROM heartbeats WHERE scope = :scope"
)


async def record_heartbeat(
    session: AsyncSession, last_at: datetime, *, now: datetime, scope: str = SELF_SCOPE
) -> None:
    """Record a consumed heartbeat sent at ``last_at`` (clamped to ``now``)."""
    await session.execute(_RECORD, {"scope": scope, "last_at": min(last_at, now), "now": now})


async def heartbeat_age_s(
    conn: AsyncConnection | AsyncSession,
    *,
    now: datetime | None = None,
    scope: str = SELF_SCOPE,
) -> float | None:
    """Seconds from the newest consumed heartbeat's time to ``now`` (by default
    the database's clock); ``None`` when none was ever recorded."""
    value = (await conn.execute(_AGE, {"scope": scope, "now": now})).scalar()
    return None if value is None else max(0.0, float(value))


_AGES = text(
    "SELECT scope, extract(epoch FROM coalesce(CAST(:now AS timestamptz), now()) - last_at)"
    " FROM heartbeats WHERE scope <> :self ORDER BY scope LIMIT :limit"
)
#: Scope heartbeat rows read at most for /metrics.
MAX_SCOPE_ROWS = 10_000


async def scope_heartbeat_ages_s(
    conn: AsyncConnection | AsyncSession, *, now: datetime | None = None
) -> dict[tuple[str, str], float]:
    """Each watched scope's heartbeat age in seconds, by (account_id, region)."""
    rows = await conn.execute(_AGES, {"now": now, "self": SELF_SCOPE, "limit": MAX_SCOPE_ROWS})
    ages: dict[tuple[str, str], float] = {}
    for scope, value in rows:
        account, _, region = str(scope).partition("/")
        if account and region and value is not None:
            ages[(account, region)] = max(0.0, float(value))
    return ages
