"""Serving engines and hosts: engine and host profiles in the registry, and what a serving point ran on.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

Additive:
- serving_profiles: engine profiles (how an engine schedules, pads decode batches to captured CUDA graphs and
  overlaps its host work) and host profiles (what each host piece costs on one CPU, measured by `measure-host`),
  keyed by kind, name and version; the parsed document as JSON. The shipped ones are written on every upgrade.
- serving_points: the engine's profile version, the host profile (name, version), the page pipeline (CPU workers,
  renderers, closed-loop concurrency, sent in waves or not) and where the time went (GPU busy, GPU waiting for the
  host, engine idle, CPU pool utilization) with the resource that bounds throughput (bound_by). Points simulated
  before this revision ran the vllm-v1 engine without host work: host 'none', version 1; their time shares are
  unknown (NULL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_COLUMNS = [("engine_version", sa.Integer()), ("host_profile", sa.String(100)), ("host_version", sa.Integer()),
            ("cpu_workers", sa.Integer()), ("render_workers", sa.Integer()), ("concurrency", sa.Integer()),
            ("arrival_waves", sa.Boolean()), ("gpu_busy_share", sa.Double()),
            ("host_wait_share", sa.Double()), ("engine_idle_share", sa.Double()),
            ("cpu_utilization", sa.Double()), ("bound_by", sa.String(20))]


def upgrade() -> None:
    # if_not_exists and IS NULL: a registry whose alembic_version was set back keeps what it has
    if not sa.inspect(op.get_bind()).has_table("serving_profiles"):
        op.create_table(
            "serving_profiles",
            sa.Column("kind", sa.String(10), nullable=False),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("document", sa.Text(), nullable=False),
            sa.Column("origin", sa.String(20), nullable=False),
            sa.CheckConstraint("kind IN ('engine', 'host')", name="ck_serving_profiles_kind"),
            sa.PrimaryKeyConstraint("kind", "name", "version", name="pk_serving_profiles"),
        )
    for name, type_ in _COLUMNS:
        op.add_column("serving_points", sa.Column(name, type_, nullable=True), if_not_exists=True)
    op.execute("UPDATE serving_points SET engine_version = 1 WHERE engine_version IS NULL")
    op.execute("UPDATE serving_points SET host_profile = 'none', host_version = 1 WHERE host_profile IS NULL")


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
