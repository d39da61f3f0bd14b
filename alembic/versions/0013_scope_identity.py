"""Scope identity: metric points keyed by the scope they were read in.

CloudWatch dimensions hold cluster and service names, which are unique only within
an account and region, so two scopes' points of one name and time would overwrite
each other under the old key. The upgrade adds ``account_id`` and ``region`` (''
on points stored before, whose scope was not recorded) and makes them part of the
unique key. The downgrade loses data: where two scopes hold a point of the same
series and time, only the one with the lowest id is kept, then the columns go.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = ["namespace", "name", "statistic", "dimensions_key", "timestamp"]


def upgrade() -> None:
    op.add_column(
        "metric_points",
        sa.Column("account_id", sa.Text(), server_default=sa.text("''"), nullable=False),
    )
    op.add_column(
        "metric_points",
        sa.Column("region", sa.Text(), server_default=sa.text("''"), nullable=False),
    )
    op.drop_constraint(
        op.f("uq_metric_points_namespace_name_statistic_dimensions_key_timestamp"),
        "metric_points",
        type_="unique",
    )
    op.create_unique_constraint(
        "uq_metric_points_scope_series_timestamp",
        "metric_points",
        ["account_id", "region", *_OLD_KEY],
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM metric_points AS p USING metric_points AS q"
        " WHERE (p.namespace, p.name, p.statistic, p.dimensions_key, p.timestamp)"
        " = (q.namespace, q.name, q.statistic, q.dimensions_key, q.timestamp) AND p.id > q.id"
    )
    op.drop_constraint("uq_metric_points_scope_series_timestamp", "metric_points", type_="unique")
    op.create_unique_constraint(
        op.f("uq_metric_points_namespace_name_statistic_dimensions_key_timestamp"),
        "metric_points",
        _OLD_KEY,
    )
    op.drop_column("metric_points", "region")
    op.drop_column("metric_points", "account_id")
