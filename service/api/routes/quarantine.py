"""``GET /v1/quarantine`` (admin): messages that could never be processed.

Admin only: a quarantined body is whatever arrived on the queue, and may hold
data that read-only consumers of the API should not see.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from service.api.deps import ReadConnection, require_admin
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    list_page,
)
from service.api.schemas import QuarantinePage, responses
from service.state import models

router = APIRouter(prefix="/v1", tags=["quarantine"], dependencies=[Depends(require_admin)])

# By id, newest first: last_seen moves on every repeat, so it cannot be a keyset.
KEYSET = Keyset("quarantine", ("int",))

Q = models.QuarantinedMessage

_COLUMNS = (Q.id, Q.body, Q.error, Q.first_seen, Q.last_seen, Q.count)
LIST: ListRoute[tuple[()]] = ListRoute(KEYSET, QuarantinePage, select(*_COLUMNS), [(Q.id, True)])


@router.get(
    "/quarantine",
    summary="List quarantined messages",
    description="Messages quarantined as never processable, newest first (admin scope).",
    response_model=QuarantinePage,
    responses=responses(QuarantinePage, errors=(400, 401, 403)),
)
async def list_quarantine(
    conn: ReadConnection,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    return await list_page(conn, LIST, (), {}, limit=limit, cursor=cursor)
