"""Pricing: hardware catalog, runtime profiles (per-category efficiencies), scenarios and their points.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _id(sequence: str) -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Sequence(sequence), server_default=sa.text(f"nextval('{sequence}')"),
                     nullable=False)


def _double(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=nullable)


def upgrade() -> None:
    for sequence in ("hardware_id_seq", "runtime_profiles_id_seq", "scenarios_id_seq"):
        op.execute(sa.schema.CreateSequence(sa.Sequence(sequence)))
    op.create_table(
        "hardware",
        _id("hardware_id_seq"),
        sa.Column("name", sa.String(100), nullable=False), sa.Column("display_name", sa.String(200), nullable=False),
        _double("peak_bf16_flops_per_s"), _double("memory_bandwidth_bytes_per_s"),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False), sa.Column("source", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hardware"),
        sa.UniqueConstraint("name", name="uq_hardware_name"),
    )
    op.create_table(
        "runtime_profiles",
        _id("runtime_profiles_id_seq"),
        sa.Column("name", sa.String(100), nullable=False), sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False), sa.Column("source", sa.Text(), nullable=False),
        _double("kernel_launch_s"), _double("stage_call_overhead_s"), _double("decode_step_overhead_s"),
        _double("fused_bytes_factor"), sa.Column("origin", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runtime_profiles"),
        sa.UniqueConstraint("name", "version", name="uq_runtime_profiles_name"),
    )
    op.create_table(
        "runtime_profile_categories",
        sa.Column("runtime_profile_id", sa.BigInteger(), nullable=False),
        sa.Column("category_id", sa.SmallInteger(), nullable=False),
        _double("compute_efficiency"), _double("bandwidth_efficiency"),
        sa.Column("fused", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("runtime_profile_id", "category_id", name="pk_runtime_profile_categories"),
        sa.ForeignKeyConstraint(["runtime_profile_id"], ["runtime_profiles.id"],
                                name="fk_runtime_profile_categories_runtime_profile_id"),
        sa.ForeignKeyConstraint(["category_id"], ["operator_categories.id"],
                                name="fk_runtime_profile_categories_category_id"),
    )
    op.create_table(
        "scenarios",
        _id("scenarios_id_seq"),
        sa.Column("name", sa.String(200), nullable=False), sa.Column("definition", sa.Text(), nullable=False),
        _double("target_pages_per_day", True), _double("target_page_latency_s", True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scenarios"),
    )
    op.create_table(
        "scenario_points",
        sa.Column("scenario_id", sa.BigInteger(), nullable=False), sa.Column("point_index", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.BigInteger(), nullable=False), sa.Column("hardware_id", sa.BigInteger(), nullable=False),
        sa.Column("runtime_profile_id", sa.BigInteger(), nullable=False),
        _double("peak_flops_per_s"), _double("memory_bandwidth_bytes_per_s"),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False), _double("efficiency_scale"),
        sa.PrimaryKeyConstraint("scenario_id", "point_index", name="pk_scenario_points"),
        sa.ForeignKeyConstraint(["scenario_id"], ["scenarios.id"], name="fk_scenario_points_scenario_id"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_scenario_points_report_id"),
        sa.ForeignKeyConstraint(["hardware_id"], ["hardware.id"], name="fk_scenario_points_hardware_id"),
        sa.ForeignKeyConstraint(["runtime_profile_id"], ["runtime_profiles.id"],
                                name="fk_scenario_points_runtime_profile_id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
