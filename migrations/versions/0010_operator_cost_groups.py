"""Operator cost groups: the operator rows of a report that cost the same, stored once with their count, so that
pricing evaluates ~140 groups per report and point instead of ~2,000 operator rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27

Additive: one new table, filled from the operator rows already stored (one GROUP BY; the views that price
points read it from this revision on, and `db upgrade` recreates them).
- operator_cost_groups: per report, stage, view kind, operator category and the exact counts the pricing formula
  reads (op_calls, kernel_launches, flops, bytes_read, bytes_written), how many operator_metrics rows have them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COUNTS = ("op_calls", "kernel_launches", "flops", "bytes_read", "bytes_written")


def upgrade() -> None:
    op.create_table(
        "operator_cost_groups",
        sa.Column("report_id", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("view_kind", sa.String(20), nullable=False),
        sa.Column("category_id", sa.SmallInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _COUNTS),
        sa.Column("operator_rows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("report_id", "stage", "view_kind", "category_id", *_COUNTS,
                                name="pk_operator_cost_groups"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_operator_cost_groups_report_id"),
        sa.ForeignKeyConstraint(["category_id"], ["operator_categories.id"],
                                name="fk_operator_cost_groups_category_id"),
    )
    keys = ", ".join(("report_id", "stage", "view_kind", "category_id", *_COUNTS))
    op.execute(f"INSERT INTO operator_cost_groups ({keys}, operator_rows) "
               f"SELECT {keys}, COUNT(*) FROM operator_metrics GROUP BY {keys}")


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
