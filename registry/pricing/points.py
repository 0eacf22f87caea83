"""Priced points: the only code that records scenario points and reads the pricing views.

A scenario point is one stored report x one GPU x one runtime profile, with the effective device figures (the
catalog's, or a scenario's overrides). Python assembles those parameters; the formula is the cost model
(registry/pricing/model.py) the views are generated from (v_point_cost_group_time -> v_point_stage_time ->
v_point_summary; v_point_operator_time gives each module's operator rows the time of their cost group). What-if
scenarios, summaries, measurement comparisons and calibration all price through here; the reports they price are
stored first (registry/store/analyzed.py).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import json
from collections.abc import Iterator
from typing import NamedTuple

import attrs
import sqlalchemy as sa

from registry.defaults import DEFAULT_SUMMARY_HARDWARE  # noqa: F401 - part of this module's interface
from registry.store.db import Registry, RegistryError

COMPARE_COLUMNS = ["row_index", "kind", "variant", "batch", "workload", "stage", "view_kind", "predicted_ms",
                   "measured_ms", "ratio", "abs_pct_error"]
SUMMARY_COLUMNS = ["point_index", "hardware", "runtime", "execution", "variant", "mode", "tiles", "batch",
                   "new_tokens", "page_latency_s", "pages_per_s", "tokens_per_s", "pages_per_gpu_day",
                   "gpu_seconds_per_page", "gpus_needed", "meets_latency_target", "memory_needed_bytes",
                   "memory_budget_bytes", "kv_pool_bytes", "fits_in_memory", "max_batch_in_memory", "vision_s",
                   "projector_s", "prefill_s", "decode_s", "report_id", "weights_dtype", "kv_cache_dtype",
                   "usd_per_hour", "usd_per_1000_pages", "usd_per_million_output_tokens", "efficiency_source"]


class PointKey(NamedTuple):
    """What a scenario point prices: one stored report on one GPU under one runtime profile, in a precision
    (weights and KV cache: bf16 or fp8; None: the runtime profile's own)."""

    report_key: int
    hardware_id: int
    runtime_id: int
    weights_dtype: str | None = None
    kv_cache_dtype: str | None = None


@attrs.frozen(kw_only=True)
class ScenarioRecord:
    """A scenario as recorded: its kind (what-if, summary, measurement, serving, serving-probe), name, definition,
    targets (pages_per_day, page_latency_s), device overrides (peak_tflops, memory_tb_per_s, memory_gb,
    efficiency_scale) and whatever else its run records (`content`: part of what makes a run the same run)."""

    name: str
    definition: dict
    kind: str = "what-if"
    target: dict = attrs.field(factory=dict)
    overrides: dict = attrs.field(factory=dict)
    content: object = None


@attrs.frozen
class RecordedScenario:
    """The id of a recorded scenario (None when only looked up and not found), and whether this call recorded it."""

    scenario_id: int | None
    recorded_now: bool


def product_points(report_keys: list[int], hardware_ids: list[int], runtime_ids: list[int]) -> list[PointKey]:
    """(report, GPU, runtime) of every combination, reports outermost."""
    return [PointKey(*p) for p in itertools.product(report_keys, hardware_ids, runtime_ids)]


def check_executions(conn, points: list[PointKey]) -> None:
    """A point prices a report under a runtime of the report's own execution; any other pairing is refused."""
    report_keys = sorted({p.report_key for p in points})
    runtime_ids = sorted({p.runtime_id for p in points})
    reports = {key: (report_id, execution) for key, report_id, execution in conn.execute(sa.text(
        "SELECT id, report_id, execution FROM reports WHERE id IN :keys").bindparams(
        sa.bindparam("keys", expanding=True)), {"keys": report_keys}).all()}
    runtimes = {key: (name, version, execution) for key, name, version, execution in conn.execute(sa.text(
        "SELECT id, name, version, execution FROM runtime_profiles WHERE id IN :keys"
    ).bindparams(sa.bindparam("keys", expanding=True)), {"keys": runtime_ids}).all()}
    from registry.pricing.catalog import known_execution

    for report, runtime in ((p.report_key, p.runtime_id) for p in points):
        report_id, traced = reports[report]
        name, version, prices = runtimes[runtime]
        # a name this version does not know is refused, never paired by its spelling
        traced = known_execution(traced, f"report {report_id}").name
        prices = known_execution(prices, f"runtime {name}@{version}").name
        if traced != prices:
            raise RegistryError(f"report {report_id} was traced under execution {traced}, but runtime "
                                f"{name}@{version} prices execution {prices}: price it under a {traced} runtime, "
                                f"or analyze the workload with --execution {prices}")


def runtime_devices(conn) -> tuple[dict[int, tuple], dict[int, tuple]]:
    """By id: each GPU's (name, bf16 peak, fp8 peak or None, bandwidth, memory) and each runtime profile's
    (weights dtype, KV cache dtype, execution, name, version)."""
    devices = {hid: tuple(row) for hid, *row in conn.execute(sa.text(
        "SELECT id, name, peak_bf16_flops_per_s, peak_fp8_flops_per_s, memory_bandwidth_bytes_per_s, memory_bytes "
        "FROM hardware")).all()}
    profiles = {rid: tuple(row) for rid, *row in conn.execute(sa.text(
        "SELECT id, weights_dtype, kv_cache_dtype, execution, name, version FROM runtime_profiles")).all()}
    return devices, profiles


def check_fp8_device(hardware: str, runtime: tuple[str, str, int], peak_fp8_flops_per_s: float | None,
                     weights_dtype: str) -> None:
    """An fp8 point needs a runtime of a paged-KV execution and, for fp8 weights, a GPU with an fp8 tensor rate;
    refused in one line otherwise. `runtime`: (execution, name, version)."""
    from analyzer.execution import execution_spec
    from registry.pricing.catalog import check_precision_execution, runtime_label

    execution, name, version = runtime
    check_precision_execution(execution_spec(execution), f"runtime {runtime_label(name, version)}")
    if weights_dtype == "fp8" and peak_fp8_flops_per_s is None:
        raise RegistryError(f"GPU {hardware} has no fp8 tensor rate in the catalog: price it with weights_dtype "
                            "bf16 (or give overrides.peak_fp8_tflops)")


def check_fp8_point(conn, report_key: int, hardware: str, runtime: tuple[str, str, int],
                    peak_fp8_flops_per_s: float | None, weights_dtype: str, kv_cache_dtype: str) -> None:
    """check_fp8_device, and a report that says which of its bytes are KV cache (an fp8 KV cache) and which weights
    its matmuls read (fp8 weights): schema 4 on."""
    from registry.store.stored import kv_roles_refusal

    check_fp8_device(hardware, runtime, peak_fp8_flops_per_s, weights_dtype)
    problem = kv_roles_refusal(conn, report_key) if kv_cache_dtype == "fp8" else None
    if problem:
        raise RegistryError(problem)
    if weights_dtype == "fp8":
        report_id, version, matmul_weight_bytes = conn.execute(sa.text(
            "SELECT report_id, schema_version, matmul_weight_bytes FROM reports WHERE id = :k"),
            {"k": report_key}).one()
        if matmul_weight_bytes is None:  # the memory fit halves exactly these bytes
            raise RegistryError(f"report {report_id} was analyzed before its matmul weight bytes were recorded "
                                f"(schema {version}): re-analyze it to price fp8 weights")


def record_scenario(conn, scenario: ScenarioRecord, points: list[PointKey], *, new_run: bool = False,
                    scenario_id: int | None = None, lookup_only: bool = False) -> RecordedScenario:
    """The scenario row and one point per (report, GPU, runtime) of `points`, with the effective device figures.
    Every point pairs a report with a runtime of the same execution (checked: nothing is recorded otherwise).

    A run is idempotent by content: a scenario of the same kind, name, definition, target and points (device
    figures included, and its `content`) is reused, unless `new_run`. `scenario_id`: the id to give it (temporary
    copies of the tables, which have no sequence). `lookup_only`: only find the recorded one (id None when there
    is none)."""
    from registry.store.ingest import bulk_insert

    overrides = scenario.overrides or {}
    if points:
        check_executions(conn, points)
    devices, profiles = runtime_devices(conn)
    rows = []
    for point in points:
        name, peak, peak_fp8, bandwidth, memory = devices[point.hardware_id]
        weights_dtype = point.weights_dtype or profiles[point.runtime_id][0]
        kv_cache_dtype = point.kv_cache_dtype or profiles[point.runtime_id][1]
        if overrides.get("peak_fp8_tflops"):
            peak_fp8 = overrides["peak_fp8_tflops"] * 1e12
        if "fp8" in (weights_dtype, kv_cache_dtype):
            check_fp8_point(conn, point.report_key, name, profiles[point.runtime_id][2:], peak_fp8, weights_dtype,
                            kv_cache_dtype)
        rows.append({
            "point_index": len(rows) + 1, "report_id": int(point.report_key),
            "hardware_id": int(point.hardware_id), "runtime_profile_id": int(point.runtime_id),
            "peak_flops_per_s": float(overrides["peak_tflops"] * 1e12 if overrides.get("peak_tflops") else peak),
            "memory_bandwidth_bytes_per_s": float(overrides["memory_tb_per_s"] * 1e12
                                                  if overrides.get("memory_tb_per_s") else bandwidth),
            "memory_bytes": int(overrides["memory_gb"] * 1e9) if overrides.get("memory_gb") else int(memory),
            "efficiency_scale": float(overrides.get("efficiency_scale") or 1.0),
            "weights_dtype": weights_dtype, "kv_cache_dtype": kv_cache_dtype,
            "peak_fp8_flops_per_s": None if peak_fp8 is None else float(peak_fp8)})
    content_hash = hashlib.sha256(json.dumps(
        [scenario.kind, scenario.name, scenario.definition, scenario.target, rows, scenario.content], sort_keys=True,
        default=str).encode()).hexdigest()
    if not new_run:
        existing = conn.execute(sa.text(
            "SELECT MIN(id) FROM scenarios WHERE kind = :k AND content_hash = :h"),
            {"k": scenario.kind, "h": content_hash}).scalar()
        if existing is not None:
            return RecordedScenario(int(existing), False)
    if lookup_only:
        return RecordedScenario(None, False)
    values = {"name": scenario.name, "definition": json.dumps(scenario.definition, sort_keys=True, default=str),
              "pages": scenario.target.get("pages_per_day"), "latency": scenario.target.get("page_latency_s"),
              "created": datetime.datetime.now(datetime.UTC).replace(tzinfo=None), "kind": scenario.kind,
              "hash": content_hash}
    if scenario_id is None:
        scenario_id = conn.execute(sa.text(
            "INSERT INTO scenarios (name, definition, target_pages_per_day, target_page_latency_s, created_at, kind, "
            "content_hash) VALUES (:name, :definition, :pages, :latency, :created, :kind, :hash) RETURNING id"),
            values).scalar_one()
    else:
        conn.execute(sa.text(
            "INSERT INTO scenarios (id, name, definition, target_pages_per_day, target_page_latency_s, created_at, "
            "kind, content_hash) VALUES (:id, :name, :definition, :pages, :latency, :created, :kind, :hash)"),
            dict(values, id=scenario_id))
    for row in rows:
        row["scenario_id"] = scenario_id
    if rows:
        bulk_insert(conn, "scenario_points", {key: [p[key] for p in rows] for key in rows[0]})
    return RecordedScenario(int(scenario_id), True)


SCRATCH_TABLES = ("scenarios", "scenario_points")  # what pricing writes


@contextlib.contextmanager
def scratch_pricing(registry: Registry) -> Iterator[sa.Connection]:
    """A connection for pricing that writes nothing: scenarios and scenario_points are empty temporary copies (and
    the views that read them temporary copies too), and the transaction is rolled back at the end. It needs no
    more than SELECT (and, on PostgreSQL, the TEMP privilege every role has by default), so it works on a
    read-only DuckDB file and under a read-only role. Give record_scenario an explicit scenario_id in it."""
    from registry.store.views import create_temp_copies

    with registry.begin() as conn:
        create_temp_copies(conn, SCRATCH_TABLES)
        try:
            yield conn
        finally:
            conn.rollback()


SCRATCH_SCENARIO_ID = -1  # the one scenario priced in scratch_pricing (no sequence there)


@contextlib.contextmanager
def _reading(source) -> Iterator[sa.Connection]:
    """A connection to read with: `source` itself, or a transaction of the registry `source`."""
    if isinstance(source, Registry):
        with source.begin() as conn:
            yield conn
    else:
        yield source


def read_points(registry, scenario_id: int) -> list[dict]:
    """The scenario's priced points (v_point_summary_all: of any kind), those that fit first, then by GPU-seconds
    per page. The runtime is given as NAME@VERSION. `registry`: a Registry or an open connection."""
    columns = [c if c != "runtime" else "runtime || '@' || CAST(runtime_version AS VARCHAR(20))"
               for c in SUMMARY_COLUMNS]
    with _reading(registry) as conn:
        result = conn.execute(sa.text(
            f"SELECT {', '.join(columns)} FROM v_point_summary_all WHERE scenario_id = :s "
            "ORDER BY CASE WHEN fits_in_memory THEN 0 ELSE 1 END, gpu_seconds_per_page, point_index"),
            {"s": scenario_id})
        return [dict(zip(SUMMARY_COLUMNS, row)) for row in result.all()]


def read_stage_times(registry, scenario_id: int) -> list[dict]:
    """Seconds per point and stage (v_point_stage_time, view kinds summed)."""
    with _reading(registry) as conn:
        result = conn.execute(sa.text(
            "SELECT point_index, stage, SUM(stage_time_s) FROM v_point_stage_time WHERE scenario_id = :s "
            "GROUP BY point_index, stage ORDER BY point_index, stage"), {"s": scenario_id})
        return [dict(point_index=p, stage=s, seconds=t) for p, s, t in result.all()]


STAGE_BREAKDOWN_COLUMNS = ["stage", "view_kind", "stage_time_s", "kernel_s", "dispatch_s", "op_time_s", "host_s"]


def read_stage_breakdown(registry: Registry, scenario_id: int) -> list[tuple]:
    """(stage, view kind, stage time, kernel, dispatch, operator and host seconds) of every point, longest first."""
    with registry.begin() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            f"SELECT {', '.join(STAGE_BREAKDOWN_COLUMNS)} FROM v_point_stage_time "
            "WHERE scenario_id = :s ORDER BY stage_time_s DESC"), {"s": scenario_id}).all()]


def read_module_times(registry, scenario_id: int) -> list[tuple]:
    """(module path, name, stage, operator seconds, FLOPs, bytes written) per module and stage of a scenario's
    points (v_point_operator_time: each operator row's max of compute, memory and dispatch time)."""
    with _reading(registry) as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT m.path, m.name, t.stage, SUM(t.op_time_s), SUM(o.flops), SUM(o.bytes_written) "
            "FROM v_point_operator_time t JOIN modules m ON m.id = t.module_id "
            "JOIN operator_metrics o ON o.report_id = t.report_pk AND o.module_id = t.module_id "
            "AND o.stage = t.stage AND o.view_kind = t.view_kind AND o.category_id = t.category_id "
            "WHERE t.scenario_id = :s GROUP BY m.path, m.name, t.stage"), {"s": scenario_id}).all()]


def compare_measurements(registry: Registry, set_id: int) -> dict:
    """Every timed row of a measurement set with its predicted time (v_predicted_vs_measured), and the error summary
    by kind and overall (v_prediction_error_summary)."""
    with registry.begin() as conn:
        rows = [dict(zip(COMPARE_COLUMNS, r)) for r in conn.execute(sa.text(
            f"SELECT {', '.join(COMPARE_COLUMNS)} FROM v_predicted_vs_measured WHERE measurement_set_id = :s "
            "ORDER BY row_index"), {"s": set_id}).all()]
        summary = {kind: {"rows": n, "median_ape_pct": med, "mape_pct": mean, "max_ape_pct": worst}
                   for kind, n, med, mean, worst in conn.execute(sa.text(
                       "SELECT kind, rows_compared, median_abs_pct_error, mean_abs_pct_error, max_abs_pct_error "
                       "FROM v_prediction_error_summary WHERE measurement_set_id = :s"), {"s": set_id}).all()}
    overall = summary.pop("all", {"rows": 0, "median_ape_pct": None, "mape_pct": None, "max_ape_pct": None})
    return {"rows": rows, "summary": {**overall, "by_kind": summary}}


def read_point_devices(registry, scenario_id: int) -> list[tuple]:
    """(GPU name, effective peak FLOP/s, effective bandwidth bytes/s) of a scenario's points, by GPU name."""
    with _reading(registry) as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT DISTINCT h.name, p.peak_flops_per_s, p.memory_bandwidth_bytes_per_s FROM scenario_points p "
            "JOIN hardware h ON h.id = p.hardware_id WHERE p.scenario_id = :s ORDER BY h.name"),
            {"s": scenario_id}).all()]


def point_report_key(registry, scenario_id: int, point_index: int) -> int | None:
    """The key of the report a scenario point prices."""
    with _reading(registry) as conn:
        return conn.execute(sa.text(
            "SELECT report_id FROM scenario_points WHERE scenario_id = :s AND point_index = :i"),
            {"s": scenario_id, "i": point_index}).scalar()


def measured_end_to_end_ms(registry: Registry, report_key: int, hardware_id: int, runtime_id: int) -> float | None:
    """Mean measured end-to-end time of a stored report's workload on one GPU and runtime, if measured."""
    with registry.begin() as conn:
        value = conn.execute(sa.text(
            "SELECT AVG(m.median_ms) FROM measurements m JOIN measurement_sets s ON s.id = m.measurement_set_id "
            "WHERE m.report_id = :r AND m.stage IS NULL AND m.compared AND s.hardware_id = :h "
            "AND s.runtime_profile_id = :rt"), {"r": report_key, "h": hardware_id, "rt": runtime_id}).scalar()
    return None if value is None else float(value)



def read_roofline_modules(source, scenario_id: int, point_index: int) -> tuple[float, float, list[tuple]]:
    """What a roofline of one scenario point places: its GPU's peak FLOP/s and memory bandwidth in bytes/s (as
    priced, overrides included), and (stage, FLOPs, bytes moved, predicted seconds) of each module x stage of its
    report that does both, its seconds the sum of its operator rows' times at the point (v_point_operator_time),
    its bytes those the pricing moves (fp8 weights halve a matmul's weight bytes, an fp8 KV cache the KV bytes).
    `source`: a Registry or a connection."""
    with _reading(source) as conn:
        peak, bandwidth = conn.execute(sa.text(
            "SELECT peak_flops_per_s, memory_bandwidth_bytes_per_s FROM scenario_points "
            "WHERE scenario_id = :s AND point_index = :i"), {"s": scenario_id, "i": point_index}).one()
        modules = conn.execute(sa.text(
            "SELECT o.stage, SUM(o.flops), SUM(CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION) "
            "- CASE WHEN c.name = 'matmul' AND p.weights_dtype = 'fp8' "
            "THEN CAST(o.weight_bytes_read AS DOUBLE PRECISION) * 0.5 ELSE 0.0 END "
            "- CASE WHEN p.kv_cache_dtype = 'fp8' THEN CAST(COALESCE(o.kv_cache_bytes_read, 0) "
            "+ COALESCE(o.kv_cache_bytes_written, 0) AS DOUBLE PRECISION) * 0.5 ELSE 0.0 END) AS priced_bytes, "
            "SUM(t.op_time_s) "
            "FROM v_point_operator_time t JOIN operator_metrics o ON o.report_id = t.report_pk "
            "AND o.module_id = t.module_id AND o.stage = t.stage AND o.view_kind = t.view_kind "
            "AND o.category_id = t.category_id "
            "JOIN operator_categories c ON c.id = o.category_id "
            "JOIN scenario_points p ON p.scenario_id = t.scenario_id AND p.point_index = t.point_index "
            "WHERE t.scenario_id = :s AND t.point_index = :i GROUP BY o.module_id, o.stage "
            "HAVING SUM(o.flops) > 0 AND SUM(o.bytes_read + o.bytes_written) > 0 AND SUM(t.op_time_s) > 0"),
            {"s": scenario_id, "i": point_index}).all()
    return float(peak), float(bandwidth), [(stage, float(f), float(b), float(t)) for stage, f, b, t in modules
                                           if float(b) > 0]


def read_runtime_roof(source, scenario_id: int, point_index: int) -> tuple[float, str, float, str]:
    """The runtime's achieved roof at a scenario point: the highest FLOP/s any of its operator categories reaches
    there and what reaches it ("conv 0.60 of peak"; with fp8 weights the fp8 matmul when it is faster: "fp8 matmul
    0.58 of the fp8 peak"), the highest bytes/s and what reaches it, each times the point's efficiency scale. The
    highest of the categories, not the matmul's alone: a module of a faster category would otherwise sit above
    the roof."""
    with _reading(source) as conn:
        rows = conn.execute(sa.text(
            "SELECT c.name, rc.compute_efficiency, rc.bandwidth_efficiency FROM scenario_points p "
            "JOIN runtime_profile_categories rc ON rc.runtime_profile_id = p.runtime_profile_id "
            "JOIN operator_categories c ON c.id = rc.category_id WHERE p.scenario_id = :s AND p.point_index = :i "
            "ORDER BY c.name"), {"s": scenario_id, "i": point_index}).all()
        peak, bandwidth, scale, weights, peak_fp8, fp8_efficiency = conn.execute(sa.text(
            "SELECT p.peak_flops_per_s, p.memory_bandwidth_bytes_per_s, p.efficiency_scale, p.weights_dtype, "
            "p.peak_fp8_flops_per_s, rp.fp8_compute_efficiency FROM scenario_points p "
            "JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id "
            "WHERE p.scenario_id = :s AND p.point_index = :i"), {"s": scenario_id, "i": point_index}).one()
    compute_category, compute, _ = max(rows, key=lambda r: float(r[1]))
    memory_category, _, memory = max(rows, key=lambda r: float(r[2]))
    flops_per_s = float(peak) * float(compute) * float(scale)
    compute_reached = f"{compute_category} {float(compute) * float(scale):.2f} of peak"
    if weights == "fp8" and peak_fp8 is not None and fp8_efficiency is not None:
        fp8_flops_per_s = float(peak_fp8) * float(fp8_efficiency) * float(scale)
        if fp8_flops_per_s > flops_per_s:
            flops_per_s = fp8_flops_per_s
            compute_reached = f"fp8 matmul {float(fp8_efficiency) * float(scale):.2f} of the fp8 peak"
    return (flops_per_s, compute_reached, float(bandwidth) * float(memory) * float(scale),
            f"{memory_category} {float(memory) * float(scale):.2f} of bandwidth")
