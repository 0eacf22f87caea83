"""Operator categories as the spec's records: display_name and match_classes beside id, name and description.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Additive (DuckDB cannot alter columns of a table with constraints): two nullable columns, filled from
`TargetOperatorList`, the one list that maps ops and modules to categories; the descriptions follow it too.
The view v_operator_metrics (queries/views) gives the spec's OperatorMetrics fields, derived in SQL.
"""

import json

import sqlalchemy as sa
from alembic import op

from analyzer.categories import TARGET_OPERATORS

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("operator_categories", sa.Column("display_name", sa.String(100), nullable=True))
    op.add_column("operator_categories", sa.Column("match_classes", sa.Text(), nullable=True))
    categories = sa.table("operator_categories", sa.column("name", sa.String), sa.column("description", sa.Text),
                          sa.column("display_name", sa.String), sa.column("match_classes", sa.Text))
    for category in TARGET_OPERATORS.categories():
        op.execute(categories.update().where(categories.c.name == category.category_id.value).values(
            display_name=category.display_name, description=category.description,
            match_classes=json.dumps(list(category.match_classes))))


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
