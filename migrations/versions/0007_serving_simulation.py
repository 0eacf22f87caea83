"""Serving simulation: simulated serving points and, when asked, their per-page rows; view v_serving_summary.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

Additive only: two new tables (every upgrade drops and recreates the views from queries/views).
- serving_points: one row per simulated GPU x runtime x arrival rate of a scenario (engine settings, targets and
  the simulated results).
- serving_requests: one row per simulated page of a point, written only when asked.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    metrics = ["duration_s", "pages_per_s", "output_tokens_per_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s"]
    optional = ["tpot_p50_s", "tpot_p90_s", "tpot_p99_s"]
    latency = ["page_latency_p50_s", "page_latency_p90_s", "page_latency_p99_s", "mean_page_latency_s",
               "mean_running_pages", "kv_pool_use_mean", "kv_pool_use_peak"]
    op.create_table(
        "serving_points",
        sa.Column("scenario_id", sa.BigInteger(), nullable=False),
        sa.Column("point_index", sa.Integer(), nullable=False),
        sa.Column("hardware_id", sa.BigInteger(), nullable=False),
        sa.Column("runtime_profile_id", sa.BigInteger(), nullable=False),
        sa.Column("engine", sa.String(40), nullable=False),
        sa.Column("arrival_rate_per_s", sa.Double(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("max_num_seqs", sa.Integer(), nullable=False),
        sa.Column("max_num_batched_tokens", sa.Integer(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("kv_pool_blocks", sa.BigInteger(), nullable=False),
        sa.Column("target_ttft_p99_s", sa.Double(), nullable=True),
        sa.Column("target_page_latency_p99_s", sa.Double(), nullable=True),
        *[sa.Column(name, sa.Double(), nullable=False) for name in metrics],
        *[sa.Column(name, sa.Double(), nullable=True) for name in optional],
        *[sa.Column(name, sa.Double(), nullable=False) for name in latency],
        sa.Column("preemptions", sa.BigInteger(), nullable=False),
        sa.Column("steps", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["scenario_id"], ["scenarios.id"], name="fk_serving_points_scenario_id"),
        sa.ForeignKeyConstraint(["hardware_id"], ["hardware.id"], name="fk_serving_points_hardware_id"),
        sa.ForeignKeyConstraint(["runtime_profile_id"], ["runtime_profiles.id"],
                                name="fk_serving_points_runtime_profile_id"),
        sa.PrimaryKeyConstraint("scenario_id", "point_index", name="pk_serving_points"),
    )
    op.create_table(
        "serving_requests",
        sa.Column("scenario_id", sa.BigInteger(), nullable=False),
        sa.Column("point_index", sa.Integer(), nullable=False),
        sa.Column("request_index", sa.Integer(), nullable=False),
        sa.Column("page", sa.String(40), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("new_tokens", sa.Integer(), nullable=False),
        sa.Column("arrival_s", sa.Double(), nullable=False),
        sa.Column("first_token_s", sa.Double(), nullable=False),
        sa.Column("finish_s", sa.Double(), nullable=False),
        sa.Column("preemptions", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["scenario_id", "point_index"],
                                ["serving_points.scenario_id", "serving_points.point_index"],
                                name="fk_serving_requests_scenario_id"),
        sa.PrimaryKeyConstraint("scenario_id", "point_index", "request_index", name="pk_serving_requests"),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
