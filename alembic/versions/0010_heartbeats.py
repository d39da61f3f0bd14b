"""Heartbeats: when the newest ecswatch heartbeat came through the event path.

One row per scope (``self`` for ecswatch's own account and region): the time of
the newest heartbeat the consumer took off the queue. The upgrade seeds the
``self`` row with the migration's time, so a deployment whose heartbeats never
arrive shows a growing age from the start instead of no value. The downgrade
drops the table: it loses only that time, which the next heartbeat rewrites.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "consumed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_heartbeats")),
    )
    op.execute("INSERT INTO heartbeats (scope, last_at) VALUES ('self', now())")


def downgrade() -> None:
    op.drop_table("heartbeats")
