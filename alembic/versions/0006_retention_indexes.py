"""Index for retention: webhook deliveries by attempt time.

Retention deletes deliveries attempted before its cutoff, oldest first, in small
batches; without this index every batch would scan the whole delivery log. The
other pruned tables already have a time index (raw_events.time, metric_points.timestamp,
alerts.created_at, outbox (status, created_at), tasks (last_status, arn)).

Downgrade loses no data: it drops an index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_attempted_at",
        "webhook_deliveries",
        ["attempted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_attempted_at", table_name="webhook_deliveries")
