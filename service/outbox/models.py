"""Outbox rows: one per side effect (a Datadog metric batch or event, a webhook alert)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class OutboxKind(StrEnum):
    """What a row asks the dispatcher to do."""

    DATADOG_METRICS = "datadog_metrics"
    DATADOG_EVENT = "datadog_event"
    WEBHOOK = "webhook"


class OutboxStatus(StrEnum):
    """Life of a row: pending until delivered or until the retry budget is spent."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxItem(Base):
    """A side effect to perform after commit; ``dedupe_key`` makes writes idempotent."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(Text, unique=True)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_status_created_at", "status", "created_at"),
    )
