"""Analysis runs of the HTTP service: one row per accepted run request, so that its status outlives the process.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

Additive only: one new table.
- analysis_runs: the request (its canonical JSON and the key identical requests share), the state (queued, running,
  done, failed), the report it produced or the one-line error, which service process owns it and when that process
  last touched it (a run whose owner stopped is reported failed).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analysis_runs",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("report_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(120), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="ck_analysis_runs_status"),
        sa.PrimaryKeyConstraint("run_id", name="pk_analysis_runs"),
    )
    op.create_index("ix_analysis_runs_request_key", "analysis_runs", ["request_key"])


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
