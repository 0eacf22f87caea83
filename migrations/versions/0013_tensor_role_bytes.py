"""Bytes by tensor role: the KV-cache part of each operator row's bytes, the report's matmul weight bytes, and
operator cost groups keyed on the role bytes too.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-12

Additive (DuckDB cannot alter or drop columns of tables with constraints):
- operator_metrics: `kv_cache_bytes_read`, `kv_cache_bytes_written` (nullable BigInteger): the part of bytes_read /
  bytes_written that is KV cache, from report schema version 4 on; NULL for the rows of reports older than version 4
  (and of every report stored before this revision): unknown, not 0.
- reports: `matmul_weight_bytes` (nullable BigInteger): the bytes of the parameters matmul operators read as
  weights, as a version-4 report records it; NULL for older reports (registry.store.stored derives it from their
  module tree).
- operator_cost_groups is derived data (one GROUP BY over operator_metrics, revision 0010): it is dropped and
  created again with `weight_bytes_read`, `kv_cache_bytes_read` and `kv_cache_bytes_written` in its key, so that
  rows with equal total bytes but different weight or KV bytes never share a group, and filled again from the
  operator rows. A key column cannot be NULL: an unknown KV count (a report older than version 4) is stored as -1.
  The views are dropped while migrations run (migrations/env.py) and created again at the head.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_COUNTS = ("op_calls", "kernel_launches", "flops", "bytes_read", "bytes_written", "weight_bytes_read",
           "kv_cache_bytes_read", "kv_cache_bytes_written")
UNKNOWN = -1  # operator_cost_groups.kv_cache_bytes_read / _written of rows whose KV bytes are unknown (NULL)


def upgrade() -> None:
    # IF NOT EXISTS: a registry whose alembic_version was set back below this revision keeps the columns it has
    op.add_column("operator_metrics", sa.Column("kv_cache_bytes_read", sa.BigInteger(), nullable=True),
                  if_not_exists=True)
    op.add_column("operator_metrics", sa.Column("kv_cache_bytes_written", sa.BigInteger(), nullable=True),
                  if_not_exists=True)
    op.add_column("reports", sa.Column("matmul_weight_bytes", sa.BigInteger(), nullable=True), if_not_exists=True)
    op.drop_table("operator_cost_groups")
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
    values = ", ".join(("report_id", "stage", "view_kind", "category_id", *_COUNTS[:-2],
                        f"COALESCE(kv_cache_bytes_read, {UNKNOWN})", f"COALESCE(kv_cache_bytes_written, {UNKNOWN})"))
    op.execute(f"INSERT INTO operator_cost_groups ({keys}, operator_rows) "
               f"SELECT {values}, COUNT(*) FROM operator_metrics GROUP BY {values}")


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
