"""Measurements: measured files (per GPU and runtime) and their rows, linked to the workload they time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("measurement_sets_id_seq")))
    op.create_table(
        "measurement_sets",
        sa.Column("id", sa.BigInteger(), sa.Sequence("measurement_sets_id_seq"),
                  server_default=sa.text("nextval('measurement_sets_id_seq')"), nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=False), sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("hardware_id", sa.BigInteger(), nullable=False),
        sa.Column("runtime_profile_id", sa.BigInteger(), nullable=False),
        sa.Column("scenario_id", sa.BigInteger(), nullable=False), sa.Column("env", sa.Text(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_measurement_sets"),
        sa.ForeignKeyConstraint(["hardware_id"], ["hardware.id"], name="fk_measurement_sets_hardware_id"),
        sa.ForeignKeyConstraint(["runtime_profile_id"], ["runtime_profiles.id"],
                                name="fk_measurement_sets_runtime_profile_id"),
        sa.ForeignKeyConstraint(["scenario_id"], ["scenarios.id"], name="fk_measurement_sets_scenario_id"),
        sa.UniqueConstraint("file_hash", "hardware_id", "runtime_profile_id", name="uq_measurement_sets_file_hash"),
    )
    op.create_table(
        "measurements",
        sa.Column("measurement_set_id", sa.BigInteger(), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False), sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("variant", sa.String(20), nullable=True), sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("workload", sa.String(300), nullable=False),
        sa.Column("median_ms", sa.Double(), nullable=True), sa.Column("min_ms", sa.Double(), nullable=True),
        sa.Column("max_ms", sa.Double(), nullable=True), sa.Column("reps", sa.Integer(), nullable=True),
        sa.Column("report_id", sa.BigInteger(), nullable=True), sa.Column("stage", sa.String(20), nullable=True),
        sa.Column("view_kind", sa.String(20), nullable=True), sa.Column("compared", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False), sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("measurement_set_id", "row_index", name="pk_measurements"),
        sa.ForeignKeyConstraint(["measurement_set_id"], ["measurement_sets.id"],
                                name="fk_measurements_measurement_set_id"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_measurements_report_id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
