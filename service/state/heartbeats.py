"""The ``heartbeats`` table: when ecswatch's own heartbeat last came through.

The poller's leader puts a heartbeat on the default bus every
``ECSWATCH_HEARTBEAT_INTERVAL_S``; the consumer records its time here when it
takes it off the queue, so every replica and the API read the same value. Its age
is what tells that ecswatch went blind (docs/runbook.md, "ecswatch is blind").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

#: The scope of ecswatch's own account and region.
SELF_SCOPE = "self"

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
