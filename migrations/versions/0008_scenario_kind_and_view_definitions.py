"""What a scenario is (scenarios.kind), idempotent runs (scenarios.content_hash), and the views' definitions.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

Additive only:
- scenarios.kind: what-if, summary, measurement, serving or serving-probe; older rows get theirs from how they
  were recorded (a `summary:` or `measurements:` name, a `:probes` name, serving points).
- scenarios.content_hash: sha256 of what a run priced; the same run again reuses its scenario.
- view_definitions: the sha256 of each view's SQL and comments, so that an upgrade recreates (and re-grants) only
  the views that changed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _scenario_columns() -> set[str]:
    return {row[0] for row in op.get_bind().execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'scenarios'")).all()}


def upgrade() -> None:
    present = _scenario_columns()  # a DuckDB registry downgraded to 0007 kept them (see downgrade)
    if "kind" not in present:
        op.add_column("scenarios", sa.Column("kind", sa.String(20), nullable=True))
    if "content_hash" not in present:
        op.add_column("scenarios", sa.Column("content_hash", sa.String(64), nullable=True))
    op.execute(
        "UPDATE scenarios SET kind = CASE "
        "WHEN name LIKE 'summary:%' THEN 'summary' "
        "WHEN name LIKE 'measurements:%' THEN 'measurement' "
        "WHEN name LIKE '%\\:probes' THEN 'serving-probe' "
        "WHEN id IN (SELECT scenario_id FROM serving_points) THEN 'serving' "
        "ELSE 'what-if' END WHERE kind IS NULL")
    op.create_table(
        "view_definitions",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("definition_sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_view_definitions"),
    )


def downgrade() -> None:
    """Back to 0007: view_definitions and the two columns go, and the views with them (they read scenarios.kind);
    the code of revision 0007 creates its own views when it upgrades. DuckDB cannot drop a column of a table that
    others reference (scenario_points), so there the two nullable columns stay, unread by 0007's code, and the
    next upgrade fills the kind of the rows written meanwhile."""
    from registry.store import views

    views.drop_views(op.get_bind())
    op.drop_table("view_definitions")
    if op.get_bind().dialect.name != "duckdb":
        op.drop_column("scenarios", "content_hash")
        op.drop_column("scenarios", "kind")
