"""ECS's own record of a deployment: its strategy, the alarms that triggered, the
service deployment it matched.

``deployments.strategy`` (ROLLING, BLUE_GREEN, LINEAR, CANARY),
``deployments.triggered_alarms`` (the CloudWatch alarm names ECS reports as
triggered, JSONB) and ``deployments.service_deployment_arn`` (the ECS service
deployment matched to the deployment: docs/events.md, "Service deployments") are
filled by the poller from ListServiceDeployments / DescribeServiceDeployments.

The downgrade drops the three columns: it loses their data (the strategy, the
triggered alarms and the matched ARNs); the poller fills them again for
deployments still in progress after a new upgrade, not for older ones.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deployments", sa.Column("strategy", sa.Text(), nullable=True))
    op.add_column(
        "deployments",
        sa.Column("triggered_alarms", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column("deployments", sa.Column("service_deployment_arn", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "service_deployment_arn")
    op.drop_column("deployments", "triggered_alarms")
    op.drop_column("deployments", "strategy")
