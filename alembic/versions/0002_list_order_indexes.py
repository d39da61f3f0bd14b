"""Indexes for the REST list orders: tasks by cluster name, deployments by start.

/v1/tasks?cluster=<name> pages by ARN within a cluster; /v1/deployments pages by
(started_at DESC, id DESC), optionally within one outcome. The updated_at
indexes of deployments served an order the API no longer uses.

Downgrade loses no data: it drops these indexes and recreates the ones the
upgrade dropped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_cluster_name_arn", "tasks", ["cluster_name", "arn"], unique=False)
    op.drop_index("ix_deployments_updated_at_id", table_name="deployments")
    op.drop_index("ix_deployments_outcome_updated_at", table_name="deployments")
    op.create_index(
        "ix_deployments_started_at_id",
        "deployments",
        [sa.literal_column("started_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index(
        "ix_deployments_outcome_started_at_id",
        "deployments",
        ["outcome", sa.literal_column("started_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_outcome_started_at_id", table_name="deployments")
    op.drop_index("ix_deployments_started_at_id", table_name="deployments")
    op.create_index(
        "ix_deployments_outcome_updated_at",
        "deployments",
        ["outcome", sa.literal_column("updated_at DESC")],
        unique=False,
    )
    op.create_index(
        "ix_deployments_updated_at_id",
        "deployments",
        [sa.literal_column("updated_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.drop_index("ix_tasks_cluster_name_arn", table_name="tasks")
