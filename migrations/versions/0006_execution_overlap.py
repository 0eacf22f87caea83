"""Runtimes that execute what they claim: the execution of reports and runtime profiles, host-time parameters of the
overlap formula, the vLLM memory model, and the attention_masked category.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

Additive only (DuckDB cannot alter or drop columns of tables with constraints); every new column is nullable and
its readers COALESCE (a report or profile stored before this revision is `hf-eager`: the only execution there was).

- reports: `execution` (hf-eager | vllm) and `category_records` (the report's own OperatorCategory records as JSON,
  so that a stored report rebuilds exactly even after a later revision rewrites operator_categories). The records
  of version-2 reports stored before this revision are copied from operator_categories before it changes: ingest
  held them equal to those rows.
- operator_categories: every category of `TargetOperatorList` missing from the table is added (attention_masked),
  with the next ids; every row takes its display name, description and match classes from the list again.
- runtime_profiles: `execution`, `aten_call_s` (host time per aten call), `module_call_s` (host time per nn.Module
  call), `cuda_graph_decode`, `graph_kernel_s` (device time per kernel of a CUDA-graph replay),
  `gpu_memory_utilization` and `max_num_batched_tokens` (the vLLM memory model). `fused_bytes_factor` and
  runtime_profile_categories.fused stay (additive) but no view reads them any more.
- runtime_profile_categories: every existing profile gets rows for the new categories, with the values of its
  `attention` row (masked attention was priced as attention until now).
"""

import json

import sqlalchemy as sa
from alembic import op

from analyzer.categories import TARGET_OPERATORS, CategoryId

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reports", sa.Column("execution", sa.String(20), nullable=True))
    op.add_column("reports", sa.Column("category_records", sa.Text(), nullable=True))
    for column in (sa.Column("execution", sa.String(20), nullable=True),
                   sa.Column("aten_call_s", sa.Double(), nullable=True),
                   sa.Column("module_call_s", sa.Double(), nullable=True),
                   sa.Column("cuda_graph_decode", sa.Boolean(), nullable=True),
                   sa.Column("graph_kernel_s", sa.Double(), nullable=True),
                   sa.Column("gpu_memory_utilization", sa.Double(), nullable=True),
                   sa.Column("max_num_batched_tokens", sa.Integer(), nullable=True)):
        op.add_column("runtime_profiles", column)

    conn = op.get_bind()
    # The category records version-2 reports were stored against, before the rows change below.
    rows = conn.execute(sa.text(
        "SELECT name, display_name, description, match_classes FROM operator_categories ORDER BY id")).all()
    known = {name for name, *_ in rows}
    if rows and conn.execute(sa.text("SELECT COUNT(*) FROM reports WHERE schema_version = 2")).scalar():
        records = json.dumps([{"category_id": name, "display_name": display_name or "", "description": description,
                               "match_classes": json.loads(match_classes or "[]")}
                              for name, display_name, description, match_classes in rows],
                             sort_keys=True, separators=(",", ":"))
        conn.execute(sa.text("UPDATE reports SET category_records = :records WHERE schema_version = 2"),
                     {"records": records})

    categories = sa.table("operator_categories", sa.column("id", sa.SmallInteger), sa.column("name", sa.String),
                          sa.column("description", sa.Text), sa.column("display_name", sa.String),
                          sa.column("match_classes", sa.Text))
    next_id = int(conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM operator_categories")).scalar()) + 1
    attention_id = conn.execute(sa.text("SELECT id FROM operator_categories WHERE name = :n"),
                                {"n": CategoryId.ATTENTION.value}).scalar()
    for category in TARGET_OPERATORS.categories():
        values = dict(display_name=category.display_name, description=category.description,
                      match_classes=json.dumps(list(category.match_classes)))
        if category.category_id.value in known:
            op.execute(categories.update().where(categories.c.name == category.category_id.value).values(**values))
            continue
        op.execute(categories.insert().values(id=next_id, name=category.category_id.value, **values))
        if attention_id is not None:
            conn.execute(sa.text(
                "INSERT INTO runtime_profile_categories (runtime_profile_id, category_id, compute_efficiency, "
                "bandwidth_efficiency, fused) SELECT runtime_profile_id, :new_id, compute_efficiency, "
                "bandwidth_efficiency, fused FROM runtime_profile_categories WHERE category_id = :attention_id"),
                {"new_id": next_id, "attention_id": attention_id})
        next_id += 1


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
