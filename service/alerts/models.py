"""Alerts raised, webhook subscriptions and the log of every delivery attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class Alert(Base):
    """One alert per deployment outcome (or incident); ``dedupe_key`` stops repeats."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(Text, unique=True)
    cluster_name: Mapped[str | None] = mapped_column(Text)
    service_name: Mapped[str | None] = mapped_column(Text)
    deployment_id: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_alerts_created_at_id", text("created_at DESC"), text("id DESC")),)


class WebhookSubscription(Base):
    """Where to POST alerts, for which event types and resources, signed with ``secret``.

    ``url``, ``secret`` and ``previous_secret`` hold Fernet tokens (service.cipher),
    never plain text. ``previous_secret`` still signs until ``previous_secret_expires_at``
    (a rotation's overlap).
    """

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    filter: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    # ``standard`` (Standard Webhooks JSON) or ``slack`` (incoming-webhook message).
    format: Mapped[str] = mapped_column(Text, server_default=text("'standard'"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_webhook_subscriptions_created_at_id", "created_at", "id"),)


class WebhookDelivery(Base):
    """One delivery attempt of one alert to one subscription."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(
        Text, ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    alert_id: Mapped[str | None] = mapped_column(Text, ForeignKey("alerts.id", ondelete="SET NULL"))
    message_id: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(server_default=func.now())
    next_attempt_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", text("id DESC")),
        Index("ix_webhook_deliveries_alert_id", "alert_id"),
        # Retention deletes the oldest attempts first (migration 0006).
        Index("ix_webhook_deliveries_attempted_at", "attempted_at"),
    )
