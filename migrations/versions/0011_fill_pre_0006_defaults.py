"""Rows stored before revision 0006 take the values their readers assumed, so the views and queries read every
column as it is.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

Data only (DuckDB cannot alter columns of tables with constraints, so the columns stay nullable; every writer since
0006 sets them):
- reports.execution and runtime_profiles.execution: `hf-eager` (the only execution before 0006);
- runtime_profiles.aten_call_s and module_call_s: 0 (no host time per aten call or per nn.Module call was priced);
- runtime_profiles.cuda_graph_decode: false;
- scenarios.kind: `what-if` (0008 set the kind of every older row; a DuckDB registry downgraded to 0007 and written
  meanwhile keeps rows without one).
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FILLS = (
    ("reports", "execution", "'hf-eager'"),
    ("runtime_profiles", "execution", "'hf-eager'"),
    ("runtime_profiles", "aten_call_s", "0.0"),
    ("runtime_profiles", "module_call_s", "0.0"),
    ("runtime_profiles", "cuda_graph_decode", "FALSE"),
    ("scenarios", "kind", "'what-if'"),
)


def upgrade() -> None:
    for table, column, value in FILLS:
        op.execute(f"UPDATE {table} SET {column} = {value} WHERE {column} IS NULL")


def downgrade() -> None:
    """Back to 0010: the filled values are the ones 0010's readers assumed for NULL, so they stay."""
