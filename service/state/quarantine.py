"""Quarantine: messages that can never be processed, kept with the reason."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.state.models import QuarantinedMessage


@dataclass(frozen=True, slots=True)
class Poison:
    """One unprocessable message body and why."""

    body: str
    error: str
    message_id: str | None = None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate (what
    # replay's surrogateescape makes of bytes that are not UTF-8): escape both, keep
    # the rest character for character.
    value = value.replace("\x00", "\\u0000")
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


async def quarantine(session: AsyncSession, items: Sequence[Poison]) -> None:
    """Insert or bump (``count``, ``last_seen``) one row per distinct body."""
    rows: dict[str, dict[str, object]] = {}
    for item in items:
        digest = hashlib.sha256(item.body.encode("utf-8", "surrogatepass")).hexdigest()
        if digest in rows:
            rows[digest]["count"] = int(str(rows[digest]["count"])) + 1
            continue
        rows[digest] = {
            "body_sha256": digest,
            "body": storable_text(item.body),
            "error": storable_text(item.error)[:2000],
            "source_message_id": (
                storable_text(item.message_id) if item.message_id is not None else None
            ),
            "count": 1,
        }
    if not rows:
        return
    table = QuarantinedMessage.__table__
    stmt = pg_insert(QuarantinedMessage).values(
        sorted(rows.values(), key=lambda r: str(r["body_sha256"]))
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["body_sha256"],
        set_={
            "count": table.c.count + stmt.excluded.count,
            "last_seen": func.now(),
            "error": stmt.excluded.error,
        },
    )
    await session.execute(stmt)
