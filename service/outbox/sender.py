"""The seam between the dispatcher and whoever delivers a kind of outbox row.

The dispatcher (``service.outbox.dispatcher``) claims pending rows with
``FOR UPDATE SKIP LOCKED``, groups them by :class:`~service.outbox.models.OutboxKind`
and hands each group to the :class:`Sender` registered for that kind. A sender
only delivers: it never touches the outbox table. It answers one
:class:`SendResult` per row, and the dispatcher records it (delivered, retried
at ``retry_after`` or per its own backoff schedule, or dead) in a second short
transaction. A crash between send and mark resends the row with the same
idempotency key, so a sender must send the same key (``webhook-id``, a
deterministic series key) on every attempt of one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from service.outbox.models import OutboxKind


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One outbox row as the dispatcher claimed it (a snapshot, not an ORM object)."""

    id: int
    kind: OutboxKind
    dedupe_key: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one
    created_at: datetime


class SendStatus(StrEnum):
    """What became of one row's delivery attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"  # a transient failure: try again later
    DEAD = "dead"  # a permanent failure: never try again
    # Not tried now (its destination is busy): due again after ``retry_after``
    # seconds, without counting an attempt.
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The result of one row's attempt; ``error`` is kept in the row and the log."""

    row_id: int
    status: SendStatus
    error: str | None = None
    # Seconds the receiver asked us to wait (Retry-After, X-RateLimit-Reset); the
    # dispatcher waits at least this long, and otherwise follows its own schedule.
    retry_after: float | None = None


class Sender(Protocol):
    """Delivers the rows of the kinds it names; one result per row, in any order."""

    kinds: frozenset[OutboxKind]

    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]: ...
