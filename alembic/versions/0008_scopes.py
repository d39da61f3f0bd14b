"""The ``scopes`` table: each watched (account, region) and its jobs' last outcome.

The poller records a scope's last successful reconcile and metrics poll, and its
last error with its time; the enricher records scopes that events come from but
ecswatch has no credentials for (``monitored`` false). ``GET /v1/accounts`` reads
it. The downgrade drops the table: it loses only this status, which the poller
writes again on its next round.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scopes",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("monitored", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_reconcile_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_metrics_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("account_id", "region", name=op.f("pk_scopes")),
    )


def downgrade() -> None:
    op.drop_table("scopes")
