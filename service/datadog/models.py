"""Tables of the Datadog forwarding: facts counted once, and forwarding cursors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class DatadogFact(Base):
    """A fact already counted or announced ("task X started", "deployment Y failed").

    The consumer inserts the facts an event shows (``ON CONFLICT DO NOTHING``) and
    counts only those it inserted, in the same transaction as the outbox row that
    carries the counts: a re-delivered event, or the same change re-sent under a
    new EventBridge id or seen again by reconciliation, never counts twice.
    """

    __tablename__ = "datadog_facts"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_datadog_facts_created_at", "created_at"),)


class DatadogCursor(Base):
    """How far a forwarding job has read a table (``metric_points`` by id)."""

    __tablename__ = "datadog_cursors"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
