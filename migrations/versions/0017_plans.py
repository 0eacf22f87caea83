"""Plans: deployment searches and the configurations they searched.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

Additive:
- plans: one `plan` run (its scenario, unique by content), its load and SLOs.
- plan_candidates: each configuration it searched (GPU, runtime, precision, engine and its settings): the highest
  rate one replica sustains within the SLOs, the replicas and money for the load, the latencies at that load, the
  resource that bounds it and the command line that starts it. Stored as each search finishes: an interrupted
  plan resumes from them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("plans"):
        return  # a registry whose alembic_version was set back keeps what it has
    op.execute(sa.schema.CreateSequence(sa.Sequence("plans_id_seq")))
    op.create_table(
        "plans",
        sa.Column("id", sa.BigInteger(), sa.Sequence("plans_id_seq"),
                  server_default=sa.text("nextval('plans_id_seq')"), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("target_pages_per_day", sa.Double(), nullable=False),
        sa.Column("ttft_p99_s", sa.Double(), nullable=True),
        sa.Column("page_latency_p99_s", sa.Double(), nullable=True),
        sa.Column("tpot_p99_s", sa.Double(), nullable=True),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
        sa.UniqueConstraint("content_sha256", name="uq_plans_content_sha256"),
    )
    op.create_table(
        "plan_candidates",
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_index", sa.Integer(), nullable=False),
        sa.Column("hardware_id", sa.BigInteger(), nullable=False),
        sa.Column("runtime_profile_id", sa.BigInteger(), nullable=False),
        sa.Column("engine", sa.String(100), nullable=False),
        sa.Column("engine_version", sa.Integer(), nullable=False),
        sa.Column("weights_dtype", sa.String(10), nullable=False),
        sa.Column("kv_cache_dtype", sa.String(10), nullable=False),
        sa.Column("max_num_seqs", sa.Integer(), nullable=False),
        sa.Column("max_num_batched_tokens", sa.Integer(), nullable=False),
        sa.Column("gpu_memory_utilization", sa.Double(), nullable=True),
        sa.Column("kv_pool_blocks", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("best_rate_per_s", sa.Double(), nullable=True),
        sa.Column("simulations", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=True),
        sa.Column("nodes", sa.Integer(), nullable=True),
        sa.Column("usd_per_hour", sa.Double(), nullable=True),
        sa.Column("monthly_usd", sa.Double(), nullable=True),
        sa.Column("usd_per_1000_pages", sa.Double(), nullable=True),
        sa.Column("ttft_p99_s", sa.Double(), nullable=True),
        sa.Column("page_latency_p99_s", sa.Double(), nullable=True),
        sa.Column("tpot_p99_s", sa.Double(), nullable=True),
        sa.Column("best_page_latency_p99_s", sa.Double(), nullable=True),
        sa.Column("bound_by", sa.String(20), nullable=True),
        sa.Column("command", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", "candidate_index", name="pk_plan_candidates"),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name="fk_plan_candidates_plan_id"),
        sa.ForeignKeyConstraint(["hardware_id"], ["hardware.id"], name="fk_plan_candidates_hardware_id"),
        sa.ForeignKeyConstraint(["runtime_profile_id"], ["runtime_profiles.id"],
                                name="fk_plan_candidates_runtime_profile_id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
