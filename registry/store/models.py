"""SQLAlchemy models of the registry. Migrations in migrations/ create exactly these tables (a drift test holds it).

Portable between DuckDB and PostgreSQL: surrogate keys come from sequences (`server_default=nextval`), foreign keys
are declared inside CREATE TABLE, and metric rows use natural composite keys that only reference rows which are
never deleted (reports, modules, categories), because DuckDB cannot delete a referenced row in the same
transaction as the rows referencing it.
"""

from __future__ import annotations

import datetime

import attrs
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    })


def _seq(name: str) -> sa.Sequence:
    return sa.Sequence(name, metadata=Base.metadata)


ARCHITECTURES_ID_SEQ = _seq("architectures_id_seq")
MODULES_ID_SEQ = _seq("modules_id_seq")
WORKLOADS_ID_SEQ = _seq("workloads_id_seq")
REPORTS_ID_SEQ = _seq("reports_id_seq")


def _id(seq: sa.Sequence) -> Mapped[int]:
    return mapped_column(sa.BigInteger, seq, server_default=seq.next_value(), primary_key=True)


Count = sa.BigInteger


class Architecture(Base):
    """A module tree as instantiated by one transformers version: shared by every report analyzed on it."""

    __tablename__ = "architectures"
    id: Mapped[int] = _id(ARCHITECTURES_ID_SEQ)
    tree_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    model_id: Mapped[str] = mapped_column(sa.String(200))
    variant: Mapped[str] = mapped_column(sa.String(20))
    transformers_model: Mapped[str] = mapped_column(sa.String(100))
    transformers_version: Mapped[str] = mapped_column(sa.String(40))
    dtype: Mapped[str] = mapped_column(sa.String(20))
    parameters: Mapped[int] = mapped_column(Count)
    checkpoint_parameters: Mapped[int] = mapped_column(Count)
    weight_bytes: Mapped[int] = mapped_column(Count)
    kv_cache_bytes_per_token: Mapped[int] = mapped_column(Count)
    module_count: Mapped[int] = mapped_column(sa.Integer)


class Module(Base):
    """One entry of an architecture's named_modules() tree; the parent is found by path in the same tree."""

    __tablename__ = "modules"
    __table_args__ = (sa.UniqueConstraint("architecture_id", "path"),)
    id: Mapped[int] = _id(MODULES_ID_SEQ)
    architecture_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("architectures.id"))
    path: Mapped[str] = mapped_column(sa.String(300))
    parent_path: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    class_name: Mapped[str] = mapped_column(sa.String(200))
    depth: Mapped[int] = mapped_column(sa.Integer)
    parameters: Mapped[int] = mapped_column(Count)
    parameters_self: Mapped[int] = mapped_column(Count)
    weight_bytes: Mapped[int] = mapped_column(Count)
    stages: Mapped[str] = mapped_column(sa.String(100))  # comma-separated, in stage order


class Workload(Base):
    __tablename__ = "workloads"
    id: Mapped[int] = _id(WORKLOADS_ID_SEQ)
    workload_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    profile_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    variant: Mapped[str] = mapped_column(sa.String(20))
    mode: Mapped[str] = mapped_column(sa.String(20))
    page_width_px: Mapped[int] = mapped_column(sa.Integer)
    page_height_px: Mapped[int] = mapped_column(sa.Integer)
    min_tiles: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    max_tiles: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    global_view_px: Mapped[int] = mapped_column(sa.Integer)
    tile_px: Mapped[int] = mapped_column(sa.Integer)
    tiles_wide: Mapped[int] = mapped_column(sa.Integer)
    tiles_high: Mapped[int] = mapped_column(sa.Integer)
    global_feature_tokens: Mapped[int] = mapped_column(sa.Integer)
    tile_feature_tokens: Mapped[int] = mapped_column(sa.Integer)
    image_placeholder_tokens: Mapped[int] = mapped_column(sa.Integer)
    prompt_text_tokens: Mapped[int] = mapped_column(sa.Integer)
    prefill_tokens: Mapped[int] = mapped_column(sa.Integer)
    new_tokens: Mapped[int] = mapped_column(sa.Integer)
    decode_steps: Mapped[int] = mapped_column(sa.Integer)
    batch: Mapped[int] = mapped_column(sa.Integer)
    decoding: Mapped[str] = mapped_column(sa.String(20))


class Report(Base):
    __tablename__ = "reports"
    id: Mapped[int] = _id(REPORTS_ID_SEQ)
    report_id: Mapped[str] = mapped_column(sa.String(64), unique=True)  # content hash
    schema_version: Mapped[int] = mapped_column(sa.Integer)
    architecture_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("architectures.id"))
    workload_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("workloads.id"))
    model_id: Mapped[str] = mapped_column(sa.String(200))
    variant: Mapped[str] = mapped_column(sa.String(20))
    analyzer_version: Mapped[str] = mapped_column(sa.String(40))
    torch_version: Mapped[str] = mapped_column(sa.String(40))
    routing_experts: Mapped[int] = mapped_column(sa.Integer)
    routing_experts_per_token: Mapped[int] = mapped_column(sa.Integer)
    routing_shared_experts: Mapped[int] = mapped_column(sa.Integer)
    routing_assumption: Mapped[str] = mapped_column(sa.String(40))
    routing_counting_implementation: Mapped[str] = mapped_column(sa.String(40))
    parameters_note: Mapped[str] = mapped_column(sa.Text)
    notes: Mapped[str] = mapped_column(sa.Text)
    total_flops: Mapped[int] = mapped_column(Count)
    total_bytes: Mapped[int] = mapped_column(Count)
    total_kernel_launches: Mapped[int] = mapped_column(Count)
    source: Mapped[str] = mapped_column(sa.String(1000))
    ingested_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)
    # hf-eager | vllm; NULL (rows stored before revision 0006) reads as hf-eager
    execution: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    # the report's own OperatorCategory records (JSON array); NULL for version-1 reports, which derive them
    category_records: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # bytes of the parameters matmul operators read as weights (revision 0013); NULL for reports older than schema
    # version 4 (registry.store.stored.matmul_weight_bytes derives theirs from the module tree)
    matmul_weight_bytes: Mapped[int | None] = mapped_column(Count, nullable=True)


class ReportStage(Base):
    __tablename__ = "report_stages"
    report_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("reports.id"), primary_key=True,
                                           autoincrement=False)
    stage: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    view_kind: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    view_px: Mapped[int] = mapped_column(sa.Integer)
    calls: Mapped[int] = mapped_column(Count)
    items: Mapped[int] = mapped_column(Count)
    tokens_per_item: Mapped[int] = mapped_column(Count)
    context_start: Mapped[int] = mapped_column(Count)
    context_end: Mapped[int] = mapped_column(Count)
    flops: Mapped[int] = mapped_column(Count)
    bytes_read: Mapped[int] = mapped_column(Count)
    bytes_written: Mapped[int] = mapped_column(Count)
    weight_bytes_read: Mapped[int] = mapped_column(Count)
    kernel_launches: Mapped[int] = mapped_column(Count)
    op_calls: Mapped[int] = mapped_column(Count)
    activation_peak_bytes: Mapped[int] = mapped_column(Count)
    kv_cache_bytes: Mapped[int] = mapped_column(Count)
    distinct_experts_per_call: Mapped[float] = mapped_column(sa.Double)
    step_flops_base: Mapped[int] = mapped_column(Count)
    step_flops_per_context_token: Mapped[int] = mapped_column(Count)
    step_bytes_base: Mapped[int] = mapped_column(Count)
    step_bytes_per_context_token: Mapped[int] = mapped_column(Count)


class OperatorCategoryRow(Base):
    """A report's `OperatorCategory`: `name` is its category_id; the rows follow analyzer/categories.py."""

    __tablename__ = "operator_categories"
    id: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(40), unique=True)
    description: Mapped[str] = mapped_column(sa.Text)
    display_name: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)  # null before revision 0005
    match_classes: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # JSON array of strings


class ModuleMetric(Base):
    """A module's costs in one stage of one report, over the whole workload."""

    __tablename__ = "module_metrics"
    report_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("reports.id"), primary_key=True,
                                           autoincrement=False)
    module_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("modules.id"), primary_key=True,
                                           autoincrement=False)
    stage: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    view_kind: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    forward_calls: Mapped[int] = mapped_column(Count)
    inclusive_flops: Mapped[int] = mapped_column(Count)
    inclusive_bytes: Mapped[int] = mapped_column(Count)
    inclusive_kernel_launches: Mapped[int] = mapped_column(Count)


class OperatorMetric(Base):
    """One operator category of a module metric: the module's own ops (children excluded)."""

    __tablename__ = "operator_metrics"
    report_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("reports.id"), primary_key=True,
                                           autoincrement=False)
    module_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("modules.id"), primary_key=True,
                                           autoincrement=False)
    stage: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    view_kind: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    category_id: Mapped[int] = mapped_column(sa.SmallInteger, sa.ForeignKey("operator_categories.id"),
                                             primary_key=True, autoincrement=False)
    op_calls: Mapped[int] = mapped_column(Count)
    kernel_launches: Mapped[int] = mapped_column(Count)
    flops: Mapped[int] = mapped_column(Count)
    bytes_read: Mapped[int] = mapped_column(Count)
    bytes_written: Mapped[int] = mapped_column(Count)
    weight_bytes_read: Mapped[int] = mapped_column(Count)
    # the KV-cache part of bytes_read / bytes_written (revision 0013); NULL: unknown (a report older than schema
    # version 4, which did not count them), never 0
    kv_cache_bytes_read: Mapped[int | None] = mapped_column(Count, nullable=True)
    kv_cache_bytes_written: Mapped[int | None] = mapped_column(Count, nullable=True)


# operator_cost_groups.kv_cache_bytes_read / _written of operator rows whose KV bytes are unknown (NULL): a key column
# cannot be NULL
UNKNOWN_KV_BYTES = -1


class OperatorCostGroup(Base):
    """Operator rows of a report that cost the same, stored once with how many there are: the repeated layers of a
    model make ~2,000 operator rows per report ~140 groups, and pricing works on the groups (the pricing formula is
    per operator row, so identical rows take identical times). Written with the operator rows, in the same
    transaction, by one GROUP BY over them. The key holds the bytes by role too (weight, KV cache; revision 0013),
    so rows with equal total bytes but different role bytes are separate groups; unknown KV bytes are
    UNKNOWN_KV_BYTES (-1)."""

    __tablename__ = "operator_cost_groups"
    report_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("reports.id"), primary_key=True,
                                           autoincrement=False)
    stage: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    view_kind: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    category_id: Mapped[int] = mapped_column(sa.SmallInteger, sa.ForeignKey("operator_categories.id"),
                                             primary_key=True, autoincrement=False)
    op_calls: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    kernel_launches: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    flops: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    bytes_read: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    bytes_written: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    weight_bytes_read: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    kv_cache_bytes_read: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    kv_cache_bytes_written: Mapped[int] = mapped_column(Count, primary_key=True, autoincrement=False)
    operator_rows: Mapped[int] = mapped_column(sa.Integer)  # operator_metrics rows with exactly these counts


HARDWARE_ID_SEQ = _seq("hardware_id_seq")
RUNTIME_PROFILES_ID_SEQ = _seq("runtime_profiles_id_seq")
SCENARIOS_ID_SEQ = _seq("scenarios_id_seq")


class Hardware(Base):
    """A GPU: decimal units, stated in the column names."""

    __tablename__ = "hardware"
    id: Mapped[int] = _id(HARDWARE_ID_SEQ)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(200))
    peak_bf16_flops_per_s: Mapped[float] = mapped_column(sa.Double)
    memory_bandwidth_bytes_per_s: Mapped[float] = mapped_column(sa.Double)
    memory_bytes: Mapped[int] = mapped_column(Count)
    source: Mapped[str] = mapped_column(sa.Text)
    origin: Mapped[str] = mapped_column(sa.String(20))  # shipped | user
    # Revision 0012 (nullable: DuckDB cannot add NOT NULL columns). NULL fp8 rate: the GPU has no fp8.
    peak_fp8_flops_per_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    interconnect: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)  # "NVLink 4, 900 GB/s"
    interconnect_bytes_per_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    usd_per_hour: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # per GPU-hour; NULL: no price
    price_source: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # "example: <source>, <date>" | "user"


class RuntimeProfile(Base):
    """A runtime profile: what it executes and the parameters of the cost model (registry/pricing/model.py).

    Columns added by revision 0006 are nullable (DuckDB cannot alter columns); revision 0011 gave the profiles
    stored before it their values (hf-eager, no per-aten-call or per-module host time, no CUDA-graph decode).
    `fused_bytes_factor` (and runtime_profile_categories.fused) are no longer read: fused kernels are traced by the
    analyzer (vllm).
    """

    __tablename__ = "runtime_profiles"
    __table_args__ = (sa.UniqueConstraint("name", "version"),)
    id: Mapped[int] = _id(RUNTIME_PROFILES_ID_SEQ)
    name: Mapped[str] = mapped_column(sa.String(100))
    version: Mapped[int] = mapped_column(sa.Integer)
    description: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.Text)
    kernel_launch_s: Mapped[float] = mapped_column(sa.Double)
    stage_call_overhead_s: Mapped[float] = mapped_column(sa.Double)
    decode_step_overhead_s: Mapped[float] = mapped_column(sa.Double)
    fused_bytes_factor: Mapped[float] = mapped_column(sa.Double)  # legacy, not read since 0006 (written 1.0)
    origin: Mapped[str] = mapped_column(sa.String(20))  # shipped | user | calibrated
    execution: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)  # hf-eager | vllm
    aten_call_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # host time per aten call
    module_call_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # host time per nn.Module call
    cuda_graph_decode: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    graph_kernel_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # per kernel in a graph replay
    gpu_memory_utilization: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # vllm
    max_num_batched_tokens: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)  # vllm
    # 0014: the precision it serves in by default (bf16 | fp8), the fraction of the fp8 rate an fp8 matmul reaches,
    # and the GPU its efficiencies were fitted on (None: assumed)
    weights_dtype: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    kv_cache_dtype: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    fp8_compute_efficiency: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    calibrated_on: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)


class RuntimeProfileCategory(Base):
    __tablename__ = "runtime_profile_categories"
    runtime_profile_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runtime_profiles.id"),
                                                    primary_key=True, autoincrement=False)
    category_id: Mapped[int] = mapped_column(sa.SmallInteger, sa.ForeignKey("operator_categories.id"),
                                             primary_key=True, autoincrement=False)
    compute_efficiency: Mapped[float] = mapped_column(sa.Double)
    bandwidth_efficiency: Mapped[float] = mapped_column(sa.Double)
    fused: Mapped[bool] = mapped_column(sa.Boolean)  # legacy, not read since 0006 (written false)


class Scenario(Base):
    __tablename__ = "scenarios"
    id: Mapped[int] = _id(SCENARIOS_ID_SEQ)
    name: Mapped[str] = mapped_column(sa.String(200))
    definition: Mapped[str] = mapped_column(sa.Text)  # the scenario as JSON
    target_pages_per_day: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    target_page_latency_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)
    # what the scenario's rows are (SCENARIO_KINDS), always written; nullable only because DuckDB cannot add a NOT
    # NULL column (0008 fills it for every older row)
    kind: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    # sha256 of what was priced (definition, points, device figures): the same run again reuses the row; since 0008
    content_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)


class ScenarioPoint(Base):
    """One priced combination: a report (workload), a GPU and a runtime, with the effective device figures."""

    __tablename__ = "scenario_points"
    scenario_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("scenarios.id"), primary_key=True,
                                             autoincrement=False)
    point_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    report_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("reports.id"))
    hardware_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("hardware.id"))
    runtime_profile_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runtime_profiles.id"))
    peak_flops_per_s: Mapped[float] = mapped_column(sa.Double)
    memory_bandwidth_bytes_per_s: Mapped[float] = mapped_column(sa.Double)
    memory_bytes: Mapped[int] = mapped_column(Count)
    efficiency_scale: Mapped[float] = mapped_column(sa.Double)
    # the precision the point is priced in (0014; bf16 | fp8) and the effective dense fp8 rate (None: no fp8)
    weights_dtype: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    kv_cache_dtype: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    peak_fp8_flops_per_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)


MEASUREMENT_SETS_ID_SEQ = _seq("measurement_sets_id_seq")


class MeasurementSet(Base):
    """One measurement file, taken on one GPU under one runtime."""

    __tablename__ = "measurement_sets"
    __table_args__ = (sa.UniqueConstraint("file_hash", "hardware_id", "runtime_profile_id"),)
    id: Mapped[int] = _id(MEASUREMENT_SETS_ID_SEQ)
    file_hash: Mapped[str] = mapped_column(sa.String(64))
    source: Mapped[str] = mapped_column(sa.String(1000))
    hardware_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("hardware.id"))
    runtime_profile_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runtime_profiles.id"))
    scenario_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("scenarios.id"))  # prices its rows
    env: Mapped[str] = mapped_column(sa.Text)  # the file's env, as JSON
    ingested_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)


class Measurement(Base):
    """One measured row. Timed rows point at the report (workload) and the stage they measure."""

    __tablename__ = "measurements"
    measurement_set_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("measurement_sets.id"),
                                                    primary_key=True, autoincrement=False)
    row_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(40))
    variant: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    batch: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    workload: Mapped[str] = mapped_column(sa.String(300))  # human description of what was timed
    median_ms: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    min_ms: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    max_ms: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    reps: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    report_id: Mapped[int | None] = mapped_column(sa.BigInteger, sa.ForeignKey("reports.id"), nullable=True)
    stage: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)  # NULL: every stage (end to end)
    view_kind: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    compared: Mapped[bool] = mapped_column(sa.Boolean)
    note: Mapped[str] = mapped_column(sa.Text)
    raw: Mapped[str] = mapped_column(sa.Text)  # the row as JSON


class ServingPoint(Base):
    """One simulated serving point (revision 0007): a scenario's GPU x runtime x arrival rate, with the engine's
    settings and the simulated results (seconds; rates per second; KV pool use as fractions of the pool)."""

    __tablename__ = "serving_points"
    scenario_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("scenarios.id"), primary_key=True,
                                             autoincrement=False)
    point_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    hardware_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("hardware.id"))
    runtime_profile_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runtime_profiles.id"))
    engine: Mapped[str] = mapped_column(sa.String(40))
    arrival_rate_per_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # NULL: offline
    pages: Mapped[int] = mapped_column(sa.Integer)
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    max_num_seqs: Mapped[int] = mapped_column(sa.Integer)
    max_num_batched_tokens: Mapped[int] = mapped_column(sa.Integer)
    block_size: Mapped[int] = mapped_column(sa.Integer)
    kv_pool_blocks: Mapped[int] = mapped_column(Count)
    target_ttft_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    target_page_latency_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    pages_per_s: Mapped[float] = mapped_column(sa.Double)
    output_tokens_per_s: Mapped[float] = mapped_column(sa.Double)
    ttft_p50_s: Mapped[float] = mapped_column(sa.Double)
    ttft_p90_s: Mapped[float] = mapped_column(sa.Double)
    ttft_p99_s: Mapped[float] = mapped_column(sa.Double)
    tpot_p50_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    tpot_p90_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    tpot_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    page_latency_p50_s: Mapped[float] = mapped_column(sa.Double)
    page_latency_p90_s: Mapped[float] = mapped_column(sa.Double)
    page_latency_p99_s: Mapped[float] = mapped_column(sa.Double)
    mean_page_latency_s: Mapped[float] = mapped_column(sa.Double)
    mean_running_pages: Mapped[float] = mapped_column(sa.Double)
    kv_pool_use_mean: Mapped[float] = mapped_column(sa.Double)
    kv_pool_use_peak: Mapped[float] = mapped_column(sa.Double)
    preemptions: Mapped[int] = mapped_column(Count)
    steps: Mapped[int] = mapped_column(Count)
    # the precision the simulated server runs in (0014; bf16 | fp8)
    weights_dtype: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    kv_cache_dtype: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    # 0015: the engine profile's version, the host profile, the page pipeline, where the time went and the resource
    # that bounds throughput (gpu | host | cpu-pool | kv | load); NULL shares: simulated before 0015
    engine_version: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    host_profile: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    host_version: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    cpu_workers: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    render_workers: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)  # NULL: pages not rendered
    concurrency: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    arrival_waves: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    gpu_busy_share: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    host_wait_share: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    engine_idle_share: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    cpu_utilization: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    bound_by: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)


class ServingProfile(Base):
    """An engine or host profile of the serving simulation (revision 0015): the parsed document as JSON."""

    __tablename__ = "serving_profiles"
    __table_args__ = (sa.CheckConstraint("kind IN ('engine', 'host')", name="ck_serving_profiles_kind"),)
    kind: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    description: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.Text)
    document: Mapped[str] = mapped_column(sa.Text)
    origin: Mapped[str] = mapped_column(sa.String(20))  # shipped | user | calibrated


class ServingRequest(Base):
    """One simulated page of a serving point (only when asked: serve-sim --requests-out, whatif --keep-requests)."""

    __tablename__ = "serving_requests"
    __table_args__ = (sa.ForeignKeyConstraint(["scenario_id", "point_index"],
                                              ["serving_points.scenario_id", "serving_points.point_index"]),)
    scenario_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    point_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    request_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    page: Mapped[str] = mapped_column(sa.String(40))
    prompt_tokens: Mapped[int] = mapped_column(sa.Integer)
    new_tokens: Mapped[int] = mapped_column(sa.Integer)
    arrival_s: Mapped[float] = mapped_column(sa.Double)
    first_token_s: Mapped[float] = mapped_column(sa.Double)
    finish_s: Mapped[float] = mapped_column(sa.Double)
    preemptions: Mapped[int] = mapped_column(sa.Integer)


SERVING_MEASUREMENTS_ID_SEQ = _seq("serving_measurements_id_seq")
# the latency metrics of a serving benchmark, as vllm bench serve and SGLang's bench_serving name them (milliseconds)
SERVING_LATENCY_METRICS = tuple(f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el")
                                for stat in ("mean", "median", "p99"))


def _latency_columns(cls):
    """A nullable Double column per serving latency metric (a tool may not report each)."""
    for name in SERVING_LATENCY_METRICS:
        setattr(cls, name, mapped_column(sa.Double, nullable=True))
        cls.__annotations__[name] = Mapped[float | None]
    return cls


class ServingMeasurement(Base):
    """One run of a serving benchmark (vllm bench serve, SGLang bench_serving, GuideLLM) ingested from its result
    file (revision 0016), with the setup it ran on: aggregates as the tool reported them."""

    __tablename__ = "serving_measurements"
    id: Mapped[int] = _id(SERVING_MEASUREMENTS_ID_SEQ)
    content_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)  # the run's figures and its setup
    source: Mapped[str] = mapped_column(sa.String(1000))
    tool: Mapped[str] = mapped_column(sa.String(40))  # vllm-bench-serve | sglang-bench-serving | guidellm
    ingested_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)
    model_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    hardware_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("hardware.id"))
    runtime_profile_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runtime_profiles.id"))
    engine: Mapped[str] = mapped_column(sa.String(100))
    engine_version: Mapped[int] = mapped_column(sa.Integer)
    engine_release: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)  # e.g. "sglang 0.5.7"
    variant: Mapped[str] = mapped_column(sa.String(20))
    mode: Mapped[str] = mapped_column(sa.String(20))
    page: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    images_per_request: Mapped[int] = mapped_column(sa.Integer)
    max_num_seqs: Mapped[int] = mapped_column(sa.Integer)
    max_num_batched_tokens: Mapped[int] = mapped_column(sa.Integer)
    host_profile: Mapped[str] = mapped_column(sa.String(100))
    host_version: Mapped[int] = mapped_column(sa.Integer)
    ngram_size: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    ngram_window: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    vcpus: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    requests: Mapped[int] = mapped_column(sa.Integer)  # sent
    completed: Mapped[int] = mapped_column(sa.Integer)
    request_rate_per_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)  # NULL: all at once (inf)
    burstiness: Mapped[float] = mapped_column(sa.Double)
    max_concurrency: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    total_input_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    total_output_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    request_throughput_per_s: Mapped[float] = mapped_column(sa.Double)
    output_throughput_tokens_per_s: Mapped[float] = mapped_column(sa.Double)
    per_request_rows: Mapped[bool] = mapped_column(sa.Boolean)  # the file had each request's lengths
    setup: Mapped[str] = mapped_column(sa.Text)  # the setup as JSON
    raw: Mapped[str] = mapped_column(sa.Text)  # the tool's aggregates as JSON (per-request arrays left out)


_latency_columns(ServingMeasurement)


class ServingMeasurementRequest(Base):
    """One request of an ingested serving benchmark, when its file lists them (vllm --save-detailed, SGLang
    --output-details, GuideLLM)."""

    __tablename__ = "serving_measurement_requests"
    measurement_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("serving_measurements.id"),
                                                primary_key=True, autoincrement=False)
    request_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    input_tokens: Mapped[int] = mapped_column(sa.Integer)
    output_tokens: Mapped[int] = mapped_column(sa.Integer)
    ttft_ms: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    e2el_ms: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    succeeded: Mapped[bool] = mapped_column(sa.Boolean)


class ServingPrediction(Base):
    """The simulation of an ingested serving benchmark's requests on its setup under one host profile version."""

    __tablename__ = "serving_predictions"
    measurement_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("serving_measurements.id"),
                                                primary_key=True, autoincrement=False)
    host_profile: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    host_version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    simulated_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)
    requests: Mapped[int] = mapped_column(sa.Integer)
    total_output_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    request_throughput_per_s: Mapped[float] = mapped_column(sa.Double)
    output_throughput_tokens_per_s: Mapped[float] = mapped_column(sa.Double)
    bound_by: Mapped[str] = mapped_column(sa.String(20))


_latency_columns(ServingPrediction)


PLANS_ID_SEQ = _seq("plans_id_seq")


class Plan(Base):
    """One `plan` run (revision 0017): its scenario, load and SLOs."""

    __tablename__ = "plans"
    id: Mapped[int] = _id(PLANS_ID_SEQ)
    content_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    definition: Mapped[str] = mapped_column(sa.Text)  # the plan scenario as JSON
    target_pages_per_day: Mapped[float] = mapped_column(sa.Double)
    ttft_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    page_latency_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    tpot_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    candidates: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)


class PlanCandidate(Base):
    """A configuration a plan searched: its sustainable rate per replica, replicas, money and latencies at the
    load; status ok | misses-slo | unsupported."""

    __tablename__ = "plan_candidates"
    plan_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("plans.id"), primary_key=True,
                                         autoincrement=False)
    candidate_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    hardware_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("hardware.id"))
    runtime_profile_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runtime_profiles.id"))
    engine: Mapped[str] = mapped_column(sa.String(100))
    engine_version: Mapped[int] = mapped_column(sa.Integer)
    weights_dtype: Mapped[str] = mapped_column(sa.String(10))
    kv_cache_dtype: Mapped[str] = mapped_column(sa.String(10))
    max_num_seqs: Mapped[int] = mapped_column(sa.Integer)
    max_num_batched_tokens: Mapped[int] = mapped_column(sa.Integer)
    gpu_memory_utilization: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    kv_pool_blocks: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(20))
    best_rate_per_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    simulations: Mapped[int] = mapped_column(sa.Integer)
    replicas: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    nodes: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    usd_per_hour: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    monthly_usd: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    usd_per_1000_pages: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    ttft_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    page_latency_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    tpot_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    best_page_latency_p99_s: Mapped[float | None] = mapped_column(sa.Double, nullable=True)
    bound_by: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    command: Mapped[str] = mapped_column(sa.Text)


class AnalysisRun(Base):
    """One accepted `run` request of the HTTP service (revision 0009): its state outlives the process that serves
    it. Identical requests share `request_key`; `owner` is the service process that runs it and `updated_at` when
    that process last touched it."""

    __tablename__ = "analysis_runs"
    __table_args__ = (sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')",
                                         name="ck_analysis_runs_status"),)
    run_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    request_key: Mapped[str] = mapped_column(sa.String(64), index=True)
    request: Mapped[str] = mapped_column(sa.Text)  # the request as canonical JSON
    status: Mapped[str] = mapped_column(sa.String(16))
    report_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # one line, when failed
    owner: Mapped[str] = mapped_column(sa.String(120))
    created_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)
    updated_at: Mapped[datetime.datetime] = mapped_column(sa.DateTime)


SCENARIO_KINDS = ("what-if", "summary", "measurement", "serving", "serving-probe")


class ViewDefinition(Base):
    """The SQL and comments each view was created from (sha256), so an upgrade recreates only the views that changed."""

    __tablename__ = "view_definitions"
    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    definition_sha256: Mapped[str] = mapped_column(sa.String(64))


# -- what the columns hold ----------------------------------------------------------------------------------------
# DuckDB neither enforces VARCHAR(n) nor refuses NUL characters where PostgreSQL does, and the two overflow integer
# columns with different errors; checking every value against its column before it is written gives both backends
# the same verdict. Strings are already free of NUL and unpaired surrogates (analyzer.fileio checks every input).

_INTEGER_RANGES = {sa.SmallInteger: 16, sa.BigInteger: 64, sa.Integer: 32}  # subclasses before Integer


@attrs.frozen
class ColumnValueError(ValueError):
    """A value its column cannot hold: `index` is its row within the columns checked."""

    table: str
    column: str
    index: int
    value: object
    limit: str

    def __str__(self) -> str:
        from analyzer.fileio import quote

        return f"{quote(self.value)} does not fit column {self.table}.{self.column} ({self.limit})"


def _column_limit(column: sa.Column) -> tuple[str, object, object] | None:
    """(description, low, high) of an integer column, ("...", None, length) of a bounded string column."""
    for kind, bits in _INTEGER_RANGES.items():
        if isinstance(column.type, kind):
            return f"{bits}-bit integers", -2 ** (bits - 1), 2 ** (bits - 1) - 1
    if isinstance(column.type, sa.String) and column.type.length is not None:
        return f"at most {column.type.length} characters", None, column.type.length
    return None


def check_columns(table: str, columns: dict[str, list]) -> None:
    """Refuse a value that its column in `table` cannot hold (integer range, string length) with a
    `ColumnValueError`; one pass of min/max per column, so a fast insert path can call it on every batch."""
    columns_of = Base.metadata.tables[table].c
    for name, values in columns.items():
        column = columns_of.get(name)
        limit = _column_limit(column) if column is not None else None
        if limit is None or len(values) == 0:
            continue
        description, low, high = limit
        if low is not None and getattr(values, "dtype", None) is not None and values.dtype.kind in "iu":
            # a numpy integer column (a bulk insert's): min and max without a Python loop
            if low <= int(values.min()) and int(values.max()) <= high:
                continue
            index = next(i for i, v in enumerate(values.tolist()) if not low <= v <= high)
            raise ColumnValueError(table, name, index, int(values[index]), description)
        present = set(values)  # a bulk column repeats its values (stages, view kinds): each is checked once
        present.discard(None)
        if not present:
            continue
        if low is None:
            lengths = [len(v) if isinstance(v, str) else 0 for v in present]
            if max(lengths) <= high:
                continue
            index = next(i for i, v in enumerate(values) if isinstance(v, str) and len(v) > high)
        else:
            if low <= min(present) and max(present) <= high:
                continue
            index = next(i for i, v in enumerate(values) if v is not None and not low <= v <= high)
        raise ColumnValueError(table, name, index, values[index], description)


def check_row(table: str, values: dict) -> None:
    check_columns(table, {name: [value] for name, value in values.items()})


def _comment_tables() -> None:
    """Each table's comment from the data dictionary (queries/views/dictionary.yaml), as `db upgrade` stores it, so
    that the models and the database agree."""
    from registry.store.views import table_comment

    for table in Base.metadata.tables.values():
        table.comment = table_comment(table.name)


_comment_tables()
