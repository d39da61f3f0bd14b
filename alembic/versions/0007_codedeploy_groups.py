"""CodeDeploy deployment groups as the poller maps them.

``codedeploy_groups`` keeps what GetDeploymentGroup said about each group (the ECS
cluster and service of ``ecsServices``, the blue/green target group pair), so the
consumer names the service of a CodeDeploy deployment at once and alerts carry the
target groups. A partial index finds a group's deployments for the mapper's back-fill.

Downgrade loses data that the poller rebuilds: ``codedeploy_groups`` is dropped
and read again from GetDeploymentGroup for the groups that deployments name.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "codedeploy_groups",
        sa.Column("application", sa.Text(), nullable=False),
        sa.Column("deployment_group", sa.Text(), nullable=False),
        sa.Column("cluster_name", sa.Text(), nullable=True),
        sa.Column("service_name", sa.Text(), nullable=True),
        sa.Column(
            "target_groups",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "resolved_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "application", "deployment_group", name=op.f("pk_codedeploy_groups")
        ),
    )
    op.create_index(
        "ix_deployments_codedeploy_group",
        "deployments",
        ["codedeploy_application", "codedeploy_group"],
        unique=False,
        postgresql_where=sa.text("codedeploy_application IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_deployments_codedeploy_group",
        table_name="deployments",
        postgresql_where=sa.text("codedeploy_application IS NOT NULL"),
    )
    op.drop_table("codedeploy_groups")
