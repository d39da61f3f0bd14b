"""``GET /v1/quarantine`` (admin): messages that could never be processed.

Admin only: a quarantined body is whatever arrived on the queue, and may hold
data that read-only consumers of the API should not see.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select

from service.api.deps import ReadConnection, require_admin
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    fetch,
    next_cursor,
)
from service.api.queries import fetch_dicts
from service.api.schemas import QuarantinedMessage, QuarantinePage, responses
from service.state import models

router = APIRouter(prefix="/v1", tags=["quarantine"], dependencies=[Depends(require_admin)])

# By id, newest first: last_seen moves on every repeat, so it cannot be a keyset.
KEYSET = Keyset("quarantine", ("int",))

Q = models.QuarantinedMessage

_COLUMNS = (Q.id, Q.body, Q.error, Q.first_seen, Q.last_seen, Q.count)


@router.get(
    "/quarantine",
    summary="List quarantined messages",
    description="Messages quarantined as never processable, newest first (admin scope).",
    responses=responses(QuarantinePage, errors=(400, 401, 403)),
)
async def list_quarantine(
    conn: ReadConnection,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> QuarantinePage:
    after_key = KEYSET.decode(cursor)
    stmt = select(*_COLUMNS).order_by(Q.id.desc()).limit(fetch(limit + 1))
    if after_key is not None:
        stmt = stmt.where(Q.id < after_key[0])
    rows = await fetch_dicts(conn, stmt)
    return QuarantinePage(
        items=[QuarantinedMessage.model_validate(row) for row in rows[:limit]],
        next_cursor=next_cursor(KEYSET, rows, limit, lambda row: (row["id"],)),
    )
