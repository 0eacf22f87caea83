"""Views: the pricing formula moves to v_point_operator_time (per module and category); v_point_stage_time sums it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

No table changes: every upgrade drops and recreates the views from queries/views.
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
