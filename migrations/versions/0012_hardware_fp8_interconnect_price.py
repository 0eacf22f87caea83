"""The GPU catalog's fp8 rate, interconnect and price per GPU-hour.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08

Additive only (DuckDB cannot alter or drop columns of tables with constraints): nullable columns of `hardware`,
which every `db upgrade` fills from registry/data/hardware.yaml for the shipped GPUs.
- peak_fp8_flops_per_s: the dense fp8 tensor rate; NULL: the GPU has no fp8 (priced in bf16 only).
- interconnect (text, e.g. "NVLink 4, 900 GB/s") and interconnect_bytes_per_s.
- usd_per_hour: a price for one GPU-hour; NULL: no price. price_source says whose: "example: <source>, <date>" (the
  shipped catalog's dated example, replaced by each upgrade) or "user" (`hardware price`, `hardware add`; kept).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (
    ("peak_fp8_flops_per_s", sa.Double()),
    ("interconnect", sa.String(200)),
    ("interconnect_bytes_per_s", sa.Double()),
    ("usd_per_hour", sa.Double()),
    ("price_source", sa.Text()),
)


def upgrade() -> None:
    """Adds the columns the table lacks (a registry whose revision number was set back keeps them)."""
    present = {name for (name,) in op.get_bind().execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'hardware' "
        "AND table_schema = current_schema()")).all()}
    for name, type_ in COLUMNS:
        if name not in present:
            op.add_column("hardware", sa.Column(name, type_, nullable=True), if_not_exists=True)


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
