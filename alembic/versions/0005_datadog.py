"""Datadog forwarding: facts counted once, and forwarding cursors.

Downgrade loses data: ``datadog_facts`` and ``datadog_cursors`` are dropped, so
facts already counted may be counted again after a later upgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datadog_facts",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_datadog_facts")),
    )
    op.create_index("ix_datadog_facts_created_at", "datadog_facts", ["created_at"], unique=False)
    op.create_table(
        "datadog_cursors",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_datadog_cursors")),
    )


def downgrade() -> None:
    op.drop_table("datadog_cursors")
    op.drop_index("ix_datadog_facts_created_at", table_name="datadog_facts")
    op.drop_table("datadog_facts")
