"""Initial registry schema: architectures, modules, workloads, reports, stages, categories, metrics.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CATEGORIES = [
    (1, "matmul", "dense matrix products (mm, addmm, bmm, baddbmm)"),
    (2, "attention", "fused scaled-dot-product attention kernels"),
    (3, "conv", "convolutions"),
    (4, "norm", "LayerNorm / RMSNorm and every op inside norm modules"),
    (5, "elementwise", "activations and pointwise arithmetic"),
    (6, "embedding", "embedding lookups"),
    (7, "moe_routing", "MoE router: gate projection, softmax, top-k, dispatch bookkeeping"),
    (8, "softmax_reduction", "softmax, sums, means, max/argmax, top-k outside the router"),
    (9, "data_movement", "copies, concatenation, indexing, padding, resampling, fills"),
    (10, "other", "ops not mapped to a category"),
]


def _id(sequence: str) -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Sequence(sequence), server_default=sa.text(f"nextval('{sequence}')"),
                     nullable=False)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _str(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    for sequence in ("architectures_id_seq", "modules_id_seq", "workloads_id_seq", "reports_id_seq"):
        op.execute(sa.schema.CreateSequence(sa.Sequence(sequence)))

    op.create_table(
        "architectures",
        _id("architectures_id_seq"),
        _str("tree_hash", 64), _str("model_id", 200), _str("variant", 20), _str("transformers_model", 100),
        _str("transformers_version", 40), _str("dtype", 20), _count("parameters"), _count("checkpoint_parameters"),
        _count("weight_bytes"), _count("kv_cache_bytes_per_token"), _int("module_count"),
        sa.PrimaryKeyConstraint("id", name="pk_architectures"),
        sa.UniqueConstraint("tree_hash", name="uq_architectures_tree_hash"),
    )
    op.create_table(
        "modules",
        _id("modules_id_seq"),
        sa.Column("architecture_id", sa.BigInteger(), nullable=False),
        _str("path", 300), _str("parent_path", 300, nullable=True), _str("name", 200), _str("class_name", 200),
        _int("depth"), _count("parameters"), _count("parameters_self"), _count("weight_bytes"), _str("stages", 100),
        sa.PrimaryKeyConstraint("id", name="pk_modules"),
        sa.ForeignKeyConstraint(["architecture_id"], ["architectures.id"], name="fk_modules_architecture_id"),
        sa.UniqueConstraint("architecture_id", "path", name="uq_modules_architecture_id"),
    )
    op.create_table(
        "workloads",
        _id("workloads_id_seq"),
        _str("workload_hash", 64), _str("profile_id", 200, nullable=True), _str("variant", 20), _str("mode", 20),
        _int("page_width_px"), _int("page_height_px"), _int("min_tiles", True), _int("max_tiles", True),
        _int("global_view_px"), _int("tile_px"), _int("tiles_wide"), _int("tiles_high"),
        _int("global_feature_tokens"), _int("tile_feature_tokens"), _int("image_placeholder_tokens"),
        _int("prompt_text_tokens"), _int("prefill_tokens"), _int("new_tokens"), _int("decode_steps"), _int("batch"),
        _str("decoding", 20),
        sa.PrimaryKeyConstraint("id", name="pk_workloads"),
        sa.UniqueConstraint("workload_hash", name="uq_workloads_workload_hash"),
    )
    op.create_table(
        "reports",
        _id("reports_id_seq"),
        _str("report_id", 64), _int("schema_version"),
        sa.Column("architecture_id", sa.BigInteger(), nullable=False),
        sa.Column("workload_id", sa.BigInteger(), nullable=False),
        _str("model_id", 200), _str("variant", 20), _str("analyzer_version", 40), _str("torch_version", 40),
        _int("routing_experts"), _int("routing_experts_per_token"), _int("routing_shared_experts"),
        _str("routing_assumption", 40), _str("routing_counting_implementation", 40),
        sa.Column("parameters_note", sa.Text(), nullable=False), sa.Column("notes", sa.Text(), nullable=False),
        _count("total_flops"), _count("total_bytes"), _count("total_kernel_launches"), _str("source", 1000),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.ForeignKeyConstraint(["architecture_id"], ["architectures.id"], name="fk_reports_architecture_id"),
        sa.ForeignKeyConstraint(["workload_id"], ["workloads.id"], name="fk_reports_workload_id"),
        sa.UniqueConstraint("report_id", name="uq_reports_report_id"),
    )
    op.create_table(
        "report_stages",
        sa.Column("report_id", sa.BigInteger(), nullable=False), _str("stage", 20), _str("view_kind", 20),
        _int("view_px"), _count("calls"), _count("items"), _count("tokens_per_item"), _count("context_start"),
        _count("context_end"), _count("flops"), _count("bytes_read"), _count("bytes_written"),
        _count("weight_bytes_read"), _count("kernel_launches"), _count("op_calls"), _count("activation_peak_bytes"),
        _count("kv_cache_bytes"), sa.Column("distinct_experts_per_call", sa.Double(), nullable=False),
        _count("step_flops_base"), _count("step_flops_per_context_token"), _count("step_bytes_base"),
        _count("step_bytes_per_context_token"),
        sa.PrimaryKeyConstraint("report_id", "stage", "view_kind", name="pk_report_stages"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_report_stages_report_id"),
    )
    categories = op.create_table(
        "operator_categories",
        sa.Column("id", sa.SmallInteger(), nullable=False, autoincrement=False), _str("name", 40),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operator_categories"),
        sa.UniqueConstraint("name", name="uq_operator_categories_name"),
    )
    op.create_table(
        "module_metrics",
        sa.Column("report_id", sa.BigInteger(), nullable=False), sa.Column("module_id", sa.BigInteger(), nullable=False),
        _str("stage", 20), _str("view_kind", 20), _count("forward_calls"), _count("inclusive_flops"),
        _count("inclusive_bytes"), _count("inclusive_kernel_launches"),
        sa.PrimaryKeyConstraint("report_id", "module_id", "stage", "view_kind", name="pk_module_metrics"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_module_metrics_report_id"),
        sa.ForeignKeyConstraint(["module_id"], ["modules.id"], name="fk_module_metrics_module_id"),
    )
    op.create_table(
        "operator_metrics",
        sa.Column("report_id", sa.BigInteger(), nullable=False), sa.Column("module_id", sa.BigInteger(), nullable=False),
        _str("stage", 20), _str("view_kind", 20), sa.Column("category_id", sa.SmallInteger(), nullable=False),
        _count("op_calls"), _count("kernel_launches"), _count("flops"), _count("bytes_read"), _count("bytes_written"),
        _count("weight_bytes_read"),
        sa.PrimaryKeyConstraint("report_id", "module_id", "stage", "view_kind", "category_id",
                                name="pk_operator_metrics"),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name="fk_operator_metrics_report_id"),
        sa.ForeignKeyConstraint(["module_id"], ["modules.id"], name="fk_operator_metrics_module_id"),
        sa.ForeignKeyConstraint(["category_id"], ["operator_categories.id"], name="fk_operator_metrics_category_id"),
    )
    op.bulk_insert(categories, [{"id": i, "name": n, "description": d} for i, n, d in CATEGORIES])


def downgrade() -> None:
    raise NotImplementedError("the registry schema only moves forward")
