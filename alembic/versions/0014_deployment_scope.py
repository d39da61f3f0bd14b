"""Deployments and CodeDeploy group mappings identified within their scope.

Deployment ids and CodeDeploy application and group names are unique only within
an account and region (docs/architecture.md, "Names are labels"). The upgrade adds
``account_id`` and ``region`` to ``deployments``, back-filled from the deployment's
service ARN, else its cluster ARN, else its first raw event's ``account`` and
``region``, else '', and makes the primary key ``(account_id, region, id)`` (an
index on ``id`` alone keeps the lookups that give no scope fast; two more serve
the ``account_id=`` and ``region=`` filters of ``/v1/deployments``, in its
order). ``codedeploy_groups`` gains the same columns, back-filled from the latest
deployment naming the group, else '', and is keyed ``(account_id, region,
application, deployment_group)``.

The downgrade loses data: where deployments of one id are stored in several
scopes, only the one updated last is kept (ties: the lowest account and region);
where a group is mapped in several scopes, only its latest mapping is kept. Then
the columns go.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _scope_columns(table: str) -> None:
    for name in ("account_id", "region"):
        op.add_column(
            table, sa.Column(name, sa.Text(), server_default=sa.text("''"), nullable=False)
        )


def upgrade() -> None:
    _scope_columns("deployments")
    op.execute(
        "UPDATE deployments SET"
        " account_id = split_part(coalesce(service_arn, cluster_arn), ':', 5),"
        " region = split_part(coalesce(service_arn, cluster_arn), ':', 4)"
        " WHERE coalesce(service_arn, cluster_arn) LIKE 'arn:%'"
        " AND split_part(coalesce(service_arn, cluster_arn), ':', 5) <> ''"
        " AND split_part(coalesce(service_arn, cluster_arn), ':', 4) <> ''"
    )
    op.execute(
        "UPDATE deployments AS d SET account_id = r.account, region = r.region"
        " FROM raw_events AS r WHERE d.account_id = '' AND r.id = d.event_ids->>0"
        " AND coalesce(r.account, '') <> '' AND coalesce(r.region, '') <> ''"
    )
    op.drop_constraint("pk_deployments", "deployments", type_="primary")
    op.create_primary_key("pk_deployments", "deployments", ["account_id", "region", "id"])
    op.create_index("ix_deployments_id", "deployments", ["id"])
    for column in ("account_id", "region"):
        op.create_index(
            f"ix_deployments_{column}_started_at_id",
            "deployments",
            [column, sa.text("started_at DESC"), sa.text("id DESC")],
        )

    _scope_columns("codedeploy_groups")
    op.execute(
        "UPDATE codedeploy_groups AS g SET account_id = d.account_id, region = d.region"
        " FROM (SELECT DISTINCT ON (codedeploy_application, codedeploy_group)"
        "  codedeploy_application, codedeploy_group, account_id, region FROM deployments"
        "  WHERE codedeploy_application IS NOT NULL AND codedeploy_group IS NOT NULL"
        "  ORDER BY codedeploy_application, codedeploy_group, started_at DESC NULLS LAST) AS d"
        " WHERE d.codedeploy_application = g.application"
        " AND d.codedeploy_group = g.deployment_group"
    )
    op.drop_constraint("pk_codedeploy_groups", "codedeploy_groups", type_="primary")
    op.create_primary_key(
        "pk_codedeploy_groups",
        "codedeploy_groups",
        ["account_id", "region", "application", "deployment_group"],
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM codedeploy_groups AS g USING codedeploy_groups AS h"
        " WHERE (g.application, g.deployment_group) = (h.application, h.deployment_group)"
        " AND (g.resolved_at, h.account_id, h.region) < (h.resolved_at, g.account_id, g.region)"
    )
    op.drop_constraint("pk_codedeploy_groups", "codedeploy_groups", type_="primary")
    op.create_primary_key(
        "pk_codedeploy_groups", "codedeploy_groups", ["application", "deployment_group"]
    )
    op.drop_column("codedeploy_groups", "region")
    op.drop_column("codedeploy_groups", "account_id")

    op.execute(
        "DELETE FROM deployments AS d USING deployments AS e WHERE d.id = e.id"
        " AND (d.updated_at, e.account_id, e.region) < (e.updated_at, d.account_id, d.region)"
    )
    op.drop_index("ix_deployments_region_started_at_id", table_name="deployments")
    op.drop_index("ix_deployments_account_id_started_at_id", table_name="deployments")
    op.drop_index("ix_deployments_id", table_name="deployments")
    op.drop_constraint("pk_deployments", "deployments", type_="primary")
    op.create_primary_key("pk_deployments", "deployments", ["id"])
    op.drop_column("deployments", "region")
    op.drop_column("deployments", "account_id")
