"""Alerts and dispatch: NOTIFY on outbox writes, webhook formats, stuck deployments.

* ``outbox_notify``: a statement-level trigger that calls
  ``pg_notify('ecswatch_outbox', '')`` in every transaction that inserts outbox
  rows, so the dispatcher wakes when (and only when) that transaction commits,
  whoever the writer is (consumer, API, the Datadog forwarder).
* ``webhook_subscriptions.format``: ``standard`` (Standard Webhooks JSON) or
  ``slack`` (a Slack incoming-webhook message).
* ``deployments.stuck``: a deployment with no running task of its task
  definition after ``ECSWATCH_STUCK_AFTER_S``.

Downgrade loses data: ``deployments.stuck`` and ``webhook_subscriptions.format``
are dropped, so Slack subscriptions become Standard Webhooks ones (delete or
fix them by hand); the trigger carries no data.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_subscriptions",
        sa.Column("format", sa.Text(), server_default=sa.text("'standard'"), nullable=False),
    )
    op.add_column(
        "deployments",
        sa.Column("stuck", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.execute(
        "CREATE FUNCTION ecswatch_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_notify('ecswatch_outbox', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox"
        " FOR EACH STATEMENT EXECUTE FUNCTION ecswatch_outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS ecswatch_outbox_notify()")
    op.drop_column("deployments", "stuck")
    op.drop_column("webhook_subscriptions", "format")
