"""Enrichment and reconciliation: Describe* details, gone markers, task definitions.

Clusters gain the Container Insights setting and their settings; services their
capacity-provider strategy, deployment configuration, current deployments and
load balancers; clusters, services, tasks and container instances a ``gone_at``
(ECS no longer lists or describes them: marked, never deleted). Task definitions
are immutable and described once.

Downgrade loses data that the next enrichment and reconcile rebuild: the
Describe* columns, the ``gone_at`` markers and ``task_definitions``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _json_column(name: str, default: str) -> sa.Column[object]:
    return sa.Column(
        name,
        postgresql.JSONB(astext_type=sa.Text()),
        server_default=sa.text(f"'{default}'::jsonb"),
        nullable=False,
    )


def upgrade() -> None:
    op.add_column("clusters", sa.Column("container_insights", sa.Text(), nullable=True))
    op.add_column("clusters", _json_column("settings", "[]"))
    op.add_column("clusters", sa.Column("described_at", _TS, nullable=True))
    op.add_column("clusters", sa.Column("gone_at", _TS, nullable=True))

    op.add_column("services", _json_column("capacity_provider_strategy", "[]"))
    op.add_column("services", _json_column("deployment_configuration", "{}"))
    op.add_column("services", _json_column("current_deployments", "[]"))
    op.add_column("services", _json_column("load_balancers", "[]"))
    op.add_column("services", sa.Column("described_at", _TS, nullable=True))
    op.add_column("services", sa.Column("gone_at", _TS, nullable=True))

    op.add_column("tasks", sa.Column("gone_at", _TS, nullable=True))
    op.add_column("container_instances", sa.Column("gone_at", _TS, nullable=True))

    op.create_table(
        "task_definitions",
        sa.Column("arn", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("cpu", sa.Text(), nullable=True),
        sa.Column("memory", sa.Text(), nullable=True),
        sa.Column("network_mode", sa.Text(), nullable=True),
        _json_column("requires_compatibilities", "[]"),
        _json_column("containers", "[]"),
        sa.Column("fetched_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("arn", name=op.f("pk_task_definitions")),
    )


def downgrade() -> None:
    op.drop_table("task_definitions")
    op.drop_column("container_instances", "gone_at")
    op.drop_column("tasks", "gone_at")
    for column in (
        "gone_at",
        "described_at",
        "load_balancers",
        "current_deployments",
        "deployment_configuration",
        "capacity_provider_strategy",
    ):
        op.drop_column("services", column)
    for column in ("gone_at", "described_at", "settings", "container_insights"):
        op.drop_column("clusters", column)
