"""Precision as a deployment choice, and where a runtime profile's efficiencies come from.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Additive (nullable columns; every writer from this revision on sets them):
- runtime_profiles.weights_dtype and kv_cache_dtype (bf16 | fp8): what the profile serves in by default; every
  existing profile is bf16 (all there was);
- runtime_profiles.fp8_compute_efficiency: the fraction of the GPU's dense fp8 tensor rate an fp8 matmul reaches;
  existing profiles take their matmul row's compute_efficiency (the same fraction as bf16 of its own rate);
- runtime_profiles.calibrated_on: the GPU whose measurements the profile's efficiencies were fitted to (NULL:
  assumed, never fitted); the shipped profiles get theirs from the catalog on `db upgrade`;
- scenario_points.weights_dtype, kv_cache_dtype and peak_fp8_flops_per_s: the precision a point is priced in and
  the effective fp8 rate (NULL for a GPU without one); existing points are bf16;
- serving_points.weights_dtype and kv_cache_dtype: the precision a simulated server runs in; existing rows bf16.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # if_not_exists and IS NULL: a registry whose alembic_version was set back keeps what it has
    columns = [(table, name, sa.String(10)) for table in ("runtime_profiles", "scenario_points", "serving_points")
               for name in ("weights_dtype", "kv_cache_dtype")]
    columns += [("runtime_profiles", "fp8_compute_efficiency", sa.Double()),
                ("runtime_profiles", "calibrated_on", sa.String(100)),
                ("scenario_points", "peak_fp8_flops_per_s", sa.Double())]
    for table, name, type_ in columns:
        op.add_column(table, sa.Column(name, type_, nullable=True), if_not_exists=True)
    for table in ("runtime_profiles", "scenario_points", "serving_points"):
        for name in ("weights_dtype", "kv_cache_dtype"):
            op.execute(f"UPDATE {table} SET {name} = 'bf16' WHERE {name} IS NULL")
    op.execute(
        "UPDATE runtime_profiles SET fp8_compute_efficiency = (SELECT rc.compute_efficiency "
        "FROM runtime_profile_categories rc JOIN operator_categories c ON c.id = rc.category_id "
        "WHERE c.name = 'matmul' AND rc.runtime_profile_id = runtime_profiles.id) "
        "WHERE fp8_compute_efficiency IS NULL")


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
