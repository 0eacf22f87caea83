"""The pricing views' SQL, generated from the cost model's declaration (registry.pricing.model).

`python -m registry.pricing.views` writes queries/views/52, 55, 60, 70 and 95; `--check` says whether the committed
files are current (a test runs it). The joins of each view are written here once; every term of the formula comes
from the declaration, rendered with the columns each view binds to the model's inputs.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap

from analyzer.categories import CategoryId
from analyzer.execution import executions_with_memory_model
from registry.pricing import model

ROLE_BYTES = ("weight_bytes_read", "kv_cache_bytes_read", "kv_cache_bytes_written")  # parts of the bytes, by role
UNKNOWN_KV_BYTES = -1  # operator_cost_groups' KV bytes of a report that did not count them (revision 0013)
GENERATED = ("-- Generated from registry/pricing/model.py by `python -m registry.pricing.views`: edit the model, "
             "not this file.")

# What each view binds the model's inputs to.
_DEVICE_AND_PROFILE = {
    "peak_flops_per_s": "p.peak_flops_per_s", "memory_bandwidth_bytes_per_s": "p.memory_bandwidth_bytes_per_s",
    "efficiency_scale": "p.efficiency_scale", "compute_efficiency": "rc.compute_efficiency",
    "bandwidth_efficiency": "rc.bandwidth_efficiency", "cuda_graph_decode": "rp.cuda_graph_decode",
    **{name: f"rp.{name}" for name in model.PROFILE_INPUTS},
}
COST_GROUP_BIND = {
    **_DEVICE_AND_PROFILE, "stage": "g.stage", "flops": "g.flops", "bytes_moved": "g.bytes_read + g.bytes_written",
    "op_calls": "g.op_calls", "kernel_launches": "g.kernel_launches", "weight_bytes_read": "g.weight_bytes_read",
    "kv_cache_bytes": "g.kv_cache_bytes_read + g.kv_cache_bytes_written",
    "peak_fp8_flops_per_s": "p.peak_fp8_flops_per_s",
    "fp8_matmul": f"oc.name = '{CategoryId.MATMUL.value}' AND p.weights_dtype = 'fp8'",
    "fp8_kv_cache": "p.kv_cache_dtype = 'fp8'",
}
STAGE_BIND = {
    **_DEVICE_AND_PROFILE, "stage": "k.stage", "calls": "s.calls", "module_calls": "COALESCE(mc.module_calls, 0)",
}


def _terms_comment(terms, width: int = 116) -> str:
    lines = []
    for term in terms:
        lines += textwrap.wrap(f"{term.name} = {term.description}", width, initial_indent="--   ",
                               subsequent_indent="--       ")
    return "\n".join(lines)


def _columns(names: list[str], indent: str = "    ", width: int = 116) -> str:
    return "\n".join(textwrap.wrap(", ".join(names), width, initial_indent=indent, subsequent_indent=indent))


def _bound_case(prefix: str) -> str:
    """The bound of an operator row: the largest term, ties to the earlier one."""
    terms = model.bound_terms()
    cases = []
    for index in range(len(terms) - 1, 0, -1):
        earlier = model.greatest_sql([f"{prefix}{t.name}" for t in terms[:index]])
        cases.append(f"WHEN {prefix}{terms[index].name} > {earlier} THEN '{terms[index].bound}'")
    return "CASE " + "\n            ".join(cases) + f"\n            ELSE '{terms[0].bound}' END"


def cost_group_time_sql() -> str:
    device = [t.name for t in model.device_terms()]
    other = [t.name for t in model.row_terms() if not t.device]
    bounds = [t.name for t in model.bound_terms()]
    columns = ["scenario_id", "point_index", "report_pk", "runtime_profile_id", "stage", "view_kind", "category_id",
               "op_calls", "kernel_launches", "flops", "bytes_read", "bytes_written", *ROLE_BYTES, "operator_rows",
               *device, "kernel_s", *other, "op_time_s", "bound"]
    outer = [f"t.{n}" for n in device] + [model.greatest_sql([f"t.{n}" for n in device])] + \
        [f"t.{n}" for n in other] + [model.greatest_sql([f"t.{n}" for n in bounds])]
    inner = "\n".join(f"           {t.expr.sql(COST_GROUP_BIND)} AS {t.name}," for t in model.row_terms())
    return f"""{GENERATED}
-- The pricing formula: predicted time of one operator row of each operator cost group (the operator rows of a
-- report with the same stage, view kind, category and counts; operator_rows says how many) at each scenario point,
-- with host and device overlapping. Eager PyTorch dispatches kernels asynchronously: the host runs ahead while long
-- kernels run, and a kernel shorter than its dispatch costs its dispatch.
{_terms_comment(model.row_terms())}
--   op_time_s = the largest of {', '.join(bounds)}; bound names it (ties: the earlier)
--   kernel_s = the largest of {', '.join(device)}: the device time alone
-- Times in seconds, per operator row: the group's share of its stage is operator_rows times as much.
CREATE VIEW v_point_cost_group_time (
{_columns(columns)}
) AS
SELECT t.scenario_id, t.point_index, t.report_pk, t.runtime_profile_id, t.stage, t.view_kind, t.category_id,
       t.op_calls, t.kernel_launches, t.flops, t.bytes_read, t.bytes_written,
       {', '.join(f"t.{n}" for n in ROLE_BYTES)}, t.operator_rows,
{_columns(outer, indent="       ")},
       {_bound_case("t.")}
FROM (
    SELECT p.scenario_id AS scenario_id, p.point_index AS point_index, p.report_id AS report_pk,
           p.runtime_profile_id AS runtime_profile_id, g.stage AS stage, g.view_kind AS view_kind,
           g.category_id AS category_id, g.op_calls AS op_calls, g.kernel_launches AS kernel_launches,
           g.flops AS flops, g.bytes_read AS bytes_read, g.bytes_written AS bytes_written,
           {', '.join(f"g.{n} AS {n}" for n in ROLE_BYTES)},
{inner}
           g.operator_rows AS operator_rows
    FROM scenario_points p
    JOIN operator_cost_groups g ON g.report_id = p.report_id
    JOIN runtime_profile_categories rc
        ON rc.runtime_profile_id = p.runtime_profile_id AND rc.category_id = g.category_id
    JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id
    JOIN operator_categories oc ON oc.id = g.category_id
) t;
"""


def operator_time_sql() -> str:
    device = [t.name for t in model.device_terms()]
    other = [t.name for t in model.row_terms() if not t.device]
    priced = [*device, "kernel_s", *other, "op_time_s", "bound"]
    columns = ["scenario_id", "point_index", "report_pk", "runtime_profile_id", "module_id", "stage", "view_kind",
               "category_id", *priced]
    return f"""{GENERATED}
-- Predicted time of each module's operator category (per stage and view kind) at each scenario point: each operator
-- row takes the time of its operator cost group, priced by v_point_cost_group_time (the formula is there). Times
-- in seconds.
CREATE VIEW v_point_operator_time (
{_columns(columns)}
) AS
SELECT g.scenario_id, g.point_index, g.report_pk, g.runtime_profile_id, o.module_id, g.stage, g.view_kind,
       g.category_id,
{_columns([f"g.{n}" for n in priced], indent="       ")}
FROM v_point_cost_group_time g
JOIN operator_metrics o
    ON o.report_id = g.report_pk AND o.stage = g.stage AND o.view_kind = g.view_kind
   AND o.category_id = g.category_id AND o.op_calls = g.op_calls AND o.kernel_launches = g.kernel_launches
   AND o.flops = g.flops AND o.bytes_read = g.bytes_read AND o.bytes_written = g.bytes_written
   AND o.weight_bytes_read = g.weight_bytes_read
   AND COALESCE(o.kv_cache_bytes_read, {UNKNOWN_KV_BYTES}) = g.kv_cache_bytes_read
   AND COALESCE(o.kv_cache_bytes_written, {UNKNOWN_KV_BYTES}) = g.kv_cache_bytes_written;
"""


def stage_time_sql() -> str:
    terms = [t.name for t in model.row_terms()]
    device = [t.name for t in model.device_terms()]
    sets = [f"{t.bound}_set_s" for t in model.bound_terms()]
    hosts = [t.name for t in model.STAGE_HOST_TERMS]
    summed = terms[:len(device)] + ["kernel_s"] + terms[len(device):] + ["op_time_s"]
    columns = ["scenario_id", "point_index", "report_id", "stage", "view_kind", "calls", "items", "op_calls",
               "kernel_launches", "module_calls", *summed, *sets, *hosts, "host_s", "stage_time_s"]
    host_sum = " + ".join(f"h.{n}" for n in hosts)
    sums = "\n".join(f"               SUM(operator_rows * {n}) AS {n}," for n in summed)
    set_sums = ",\n".join(f"               SUM(CASE WHEN bound = '{t.bound}' THEN operator_rows * op_time_s "
                          f"ELSE 0.0 END) AS {t.bound}_set_s" for t in model.bound_terms())
    host_terms = "\n".join(f"           {t.expr.sql(STAGE_BIND)} AS {t.name}," for t in model.STAGE_HOST_TERMS)
    return f"""{GENERATED}
-- Predicted time of each stage at each scenario point (a report priced on a GPU under a runtime profile of the
-- same execution): the operator times of v_point_cost_group_time summed over the stage (each group's time times its
-- operator rows: the sum of v_point_operator_time over the stage), plus host time outside the operators:
{_terms_comment(model.STAGE_HOST_TERMS)}
--   stage_time_s = op_time_s + {' + '.join(hosts)}
-- {', '.join(sets)}: op_time_s split by the bound that sets each operator row's time.
-- Times in seconds.
CREATE VIEW v_point_stage_time (
{_columns(columns)}
) AS
SELECT h.scenario_id, h.point_index, h.report_id, h.stage, h.view_kind, h.calls, h.items, h.op_calls,
       h.kernel_launches, h.module_calls,
{_columns([f"h.{n}" for n in summed + sets + hosts], indent="       ")},
       {host_sum}, h.op_time_s + ({host_sum})
FROM (
    SELECT k.scenario_id AS scenario_id, k.point_index AS point_index, r.report_id AS report_id, k.stage AS stage,
           k.view_kind AS view_kind, s.calls AS calls, s.items AS items, s.op_calls AS op_calls,
           s.kernel_launches AS kernel_launches, COALESCE(mc.module_calls, 0) AS module_calls,
{_columns([f"k.{n} AS {n}" for n in summed + sets], indent="           ")},
{host_terms.rstrip(",")}
    FROM (
        SELECT scenario_id, point_index, report_pk, runtime_profile_id, stage, view_kind,
{sums}
{set_sums}
        FROM v_point_cost_group_time
        GROUP BY scenario_id, point_index, report_pk, runtime_profile_id, stage, view_kind
    ) k
    JOIN report_stages s ON s.report_id = k.report_pk AND s.stage = k.stage AND s.view_kind = k.view_kind
    JOIN reports r ON r.id = k.report_pk
    JOIN runtime_profiles rp ON rp.id = k.runtime_profile_id
    LEFT JOIN (
        -- a sum of integers is a 128-bit integer (DuckDB) or NUMERIC (PostgreSQL), which BI clients read as
        -- decimals: cast back (a report's counts fit 64 bits)
        SELECT report_id, stage, view_kind, CAST(SUM(forward_calls) AS BIGINT) AS module_calls
        FROM module_metrics
        GROUP BY report_id, stage, view_kind
    ) mc ON mc.report_id = k.report_pk AND mc.stage = k.stage AND mc.view_kind = k.view_kind
) h;
"""


def _in_list(column: str, names: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(n) for n in names)})"


def point_summary_sql() -> str:
    paged = executions_with_memory_model("paged-kv")
    is_paged = _in_list("x.execution", paged)
    budget = model.PAGED_KV_BUDGET_BYTES.expr.sql({"gpu_memory_utilization": "rp.gpu_memory_utilization",
                                                   "memory_bytes": "p.memory_bytes"})
    pool = model.PAGED_KV_POOL_BYTES.expr.sql({"memory_budget_bytes": "x.memory_budget_bytes",
                                              "weight_bytes": "x.weight_bytes", "step_peak_bytes": "x.step_peak_bytes"})
    gpus = model.gpus_needed_sql("x.target_pages_per_day", "x.batch / NULLIF(x.total_s, 0)")
    money = {"gpu_seconds_per_page": "(x.total_s / x.batch)", "usd_per_hour": "x.usd_per_hour",
             "output_tokens_per_s": "NULLIF(x.batch * x.new_tokens / NULLIF(x.total_s, 0), 0)"}
    per_1000_pages = model.MONEY["usd_per_1000_pages"].expr.sql(money)
    per_million_tokens = model.MONEY["usd_per_million_output_tokens"].expr.sql(money)
    weights = model.weight_memory_sql("a.weight_bytes", "r.matmul_weight_bytes", "p.weights_dtype")
    kv_per_token = model.dtype_bytes_sql("a.kv_cache_bytes_per_token", "p.kv_cache_dtype")
    source = model.efficiency_source_sql("rp.calibrated_on", "h.name")
    return f"""{GENERATED}
-- One row per scenario point of every kind (what-if, summary, measurement, serving-probe): stage and page latency,
-- serving throughput at batch = concurrency, GPUs for the scenario's target, and memory by the memory model of the
-- runtime's execution, in the point's precision (fp8 weights: the matmul weights take half the memory; an fp8 KV
-- cache: half the bytes per token), with its cost at the GPU's price and where its efficiencies come from.
-- Decimal units; times in seconds; bytes as integers; dollars.
--   live-set: weights + the live set of the largest stage at the point's batch: the largest of each stage's
--             activation peak plus the KV cache it holds (vision and projector: none; prefill: the prompt's KV;
--             decode: the KV at the last step). Budget: the GPU's memory. Largest batch: the live set scaled
--             linearly, FLOOR((memory - weights) x batch / live set).
--   paged-kv ({', '.join(paged)}): weights + one step's activation peak (the prefill activation per token x
--             max_num_batched_tokens, or one vision call, whichever is larger) + the KV of `batch` sequences of
--             prefill + new tokens. Budget: FLOOR(gpu_memory_utilization x memory); the KV pool is the budget -
--             weights - the step peak, and the largest concurrency FLOOR(pool / (kv_cache_bytes_per_token x
--             (prefill_tokens + new_tokens))).
-- gpus_needed = CEIL(target pages per day / (86,400 x pages per second)).
CREATE VIEW v_point_summary_all (
    scenario_id, kind, point_index, report_id, hardware, runtime, runtime_version, execution, variant, mode, tiles,
    batch, prefill_tokens, new_tokens, vision_s, projector_s, prefill_s, decode_s, page_latency_s, pages_per_s,
    tokens_per_s, pages_per_gpu_day, gpu_seconds_per_page, target_pages_per_day, gpus_needed,
    target_page_latency_s, meets_latency_target, weight_bytes, kv_cache_bytes, activation_peak_bytes,
    memory_needed_bytes, memory_bytes, memory_budget_bytes, kv_pool_bytes, fits_in_memory, max_batch_in_memory,
    weights_dtype, kv_cache_dtype, kv_cache_bytes_per_token, usd_per_hour, usd_per_1000_pages,
    usd_per_million_output_tokens, efficiency_source
) AS
SELECT x.scenario_id, x.kind, x.point_index, x.report_id, x.hardware, x.runtime, x.runtime_version, x.execution, x.variant,
       x.mode, x.tiles, x.batch, x.prefill_tokens, x.new_tokens, x.vision_s, x.projector_s, x.prefill_s, x.decode_s,
       x.total_s,
       x.batch / NULLIF(x.total_s, 0),
       x.batch * x.new_tokens / NULLIF(x.total_s, 0),
       {model.SECONDS_PER_DAY!r} * x.batch / NULLIF(x.total_s, 0),
       x.total_s / x.batch,
       x.target_pages_per_day,
       {gpus},
       x.target_page_latency_s,
       CASE WHEN x.target_page_latency_s IS NULL THEN NULL ELSE x.total_s <= x.target_page_latency_s END,
       x.weight_bytes,
       CASE WHEN {is_paged} THEN x.batch * x.kv_per_sequence_bytes ELSE x.kv_cache_bytes END,
       CASE WHEN {is_paged} THEN x.step_peak_bytes ELSE x.activation_peak_bytes END,
       CASE WHEN {is_paged} THEN x.weight_bytes + x.step_peak_bytes + x.batch * x.kv_per_sequence_bytes
            ELSE x.weight_bytes + x.live_set_bytes END,
       x.memory_bytes,
       x.memory_budget_bytes,
       CASE WHEN {is_paged} THEN {pool} END,
       CASE WHEN {is_paged}
            THEN x.weight_bytes + x.step_peak_bytes + x.batch * x.kv_per_sequence_bytes <= x.memory_budget_bytes
            ELSE x.weight_bytes + x.live_set_bytes <= x.memory_budget_bytes END,
       CASE WHEN {is_paged}
            THEN CASE WHEN x.kv_per_sequence_bytes = 0 THEN NULL
                      ELSE GREATEST(FLOOR(CAST({pool} AS DOUBLE PRECISION)
                                          / CAST(x.kv_per_sequence_bytes AS DOUBLE PRECISION)), 0) END
            ELSE CASE WHEN x.live_set_bytes = 0 THEN NULL
                      ELSE GREATEST(FLOOR(CAST(x.memory_bytes - x.weight_bytes AS DOUBLE PRECISION) * x.batch
                                          / CAST(x.live_set_bytes AS DOUBLE PRECISION)), 0) END
       END,
       x.weights_dtype, x.kv_cache_dtype, x.kv_cache_bytes_per_token, x.usd_per_hour,
       {per_1000_pages},
       {per_million_tokens},
       x.efficiency_source
FROM (
    SELECT t.scenario_id AS scenario_id, sc.kind AS kind, t.point_index AS point_index,
           r.report_id AS report_id, h.name AS hardware,
           rp.name AS runtime, rp.version AS runtime_version, rp.execution AS execution,
           w.variant AS variant, w.mode AS mode, w.tiles_wide * w.tiles_high AS tiles, w.batch AS batch,
           w.prefill_tokens AS prefill_tokens, w.new_tokens AS new_tokens, t.vision_s AS vision_s,
           t.projector_s AS projector_s, t.prefill_s AS prefill_s, t.decode_s AS decode_s, t.total_s AS total_s,
           sc.target_pages_per_day AS target_pages_per_day, sc.target_page_latency_s AS target_page_latency_s,
           {weights} AS weight_bytes,
           m.kv_cache_bytes AS kv_cache_bytes,
           m.activation_peak_bytes AS activation_peak_bytes, m.live_set_bytes AS live_set_bytes,
           {kv_per_token} AS kv_cache_bytes_per_token,
           {kv_per_token} * (w.prefill_tokens + w.new_tokens) AS kv_per_sequence_bytes,
           p.weights_dtype AS weights_dtype, p.kv_cache_dtype AS kv_cache_dtype, h.usd_per_hour AS usd_per_hour,
           {source} AS efficiency_source,
           CAST(CEIL(GREATEST(m.prefill_activation_per_token * COALESCE(rp.max_num_batched_tokens, 0),
                              CAST(m.vision_call_peak_bytes AS DOUBLE PRECISION))) AS BIGINT) AS step_peak_bytes,
           p.memory_bytes AS memory_bytes,
           CASE WHEN {_in_list("rp.execution", paged)}
                THEN {budget}
                ELSE p.memory_bytes END AS memory_budget_bytes
    FROM (
        SELECT scenario_id, point_index,
               SUM(CASE WHEN stage = 'vision' THEN stage_time_s ELSE 0 END) AS vision_s,
               SUM(CASE WHEN stage = 'projector' THEN stage_time_s ELSE 0 END) AS projector_s,
               SUM(CASE WHEN stage = 'prefill' THEN stage_time_s ELSE 0 END) AS prefill_s,
               SUM(CASE WHEN stage = 'decode' THEN stage_time_s ELSE 0 END) AS decode_s,
               SUM(stage_time_s) AS total_s
        FROM v_point_stage_time
        GROUP BY scenario_id, point_index
    ) t
    JOIN scenario_points p ON p.scenario_id = t.scenario_id AND p.point_index = t.point_index
    JOIN scenarios sc ON sc.id = p.scenario_id
    JOIN reports r ON r.id = p.report_id
    JOIN workloads w ON w.id = r.workload_id
    JOIN architectures a ON a.id = r.architecture_id
    JOIN hardware h ON h.id = p.hardware_id
    JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id
    JOIN (
        SELECT report_id, MAX(kv_cache_bytes) AS kv_cache_bytes, MAX(activation_peak_bytes) AS activation_peak_bytes,
               MAX(activation_peak_bytes + kv_cache_bytes) AS live_set_bytes,
               MAX(CASE WHEN stage IN ('vision', 'projector') THEN activation_peak_bytes ELSE 0 END)
                   AS vision_call_peak_bytes,
               MAX(CASE WHEN stage = 'prefill'
                        THEN CAST(activation_peak_bytes AS DOUBLE PRECISION)
                             / NULLIF(CAST(items * tokens_per_item AS DOUBLE PRECISION), 0)
                        ELSE 0.0 END) AS prefill_activation_per_token
        FROM report_stages
        GROUP BY report_id
    ) m ON m.report_id = p.report_id
) x;
"""


def serving_summary_sql() -> str:
    gpus = model.gpus_needed_sql("sc.target_pages_per_day", "b.best_rate_per_s")
    money = {"gpu_seconds_per_page": "(1.0 / NULLIF(s.pages_per_s, 0))", "usd_per_hour": "h.usd_per_hour",
             "gpus_needed": f"({gpus})"}
    per_1000_pages = model.MONEY["usd_per_1000_pages"].expr.sql(money)
    monthly = model.MONEY["monthly_usd"].expr.sql(money)
    source = model.efficiency_source_sql("rp.calibrated_on", "h.name")
    return f"""{GENERATED}
-- One row per simulated serving point (serving_points: a scenario's GPU x runtime x arrival rate, simulated by
-- registry/serving/engine.py with step times from the pricing model): throughput, TTFT / time per output token /
-- page latency percentiles, mean running pages, KV pool use, preemptions; whether the point meets the scenario's
-- targets (ttft_p99_s, page_latency_p99_s; an offline point has no arrival rate and meets none), the highest
-- arrival rate of its GPU x runtime x precision that meets them (best_rate_per_s), the GPUs that rate needs for
-- the scenario's pages_per_day: CEIL(pages_per_day / (86,400 x best_rate_per_s)), and what they cost at the GPU's
-- price (usd_per_1000_pages at the point's throughput; monthly_usd for the GPUs needed, 730 hours a month), with
-- where the efficiencies come from (efficiency_source); the engine and host profiles it ran, its page pipeline (CPU
-- workers; concurrency for a closed loop of clients), the shares of its span the GPU was busy, the GPU waited for
-- the host and the engine waited for pages, the CPU pool's utilization and the resource that bounds it (bound_by:
-- gpu, host, cpu-pool, kv or load). Times in seconds.
CREATE VIEW v_serving_summary (
    scenario_id, point_index, hardware, runtime, runtime_version, engine, arrival_rate_per_s, pages,
    max_num_seqs, max_num_batched_tokens, kv_pool_blocks, pages_per_s, output_tokens_per_s,
    ttft_p50_s, ttft_p90_s, ttft_p99_s, tpot_p50_s, tpot_p90_s, tpot_p99_s,
    page_latency_p50_s, page_latency_p90_s, page_latency_p99_s, mean_page_latency_s, mean_running_pages,
    kv_pool_use_mean, kv_pool_use_peak, preemptions, steps, target_ttft_p99_s, target_page_latency_p99_s,
    meets_targets, best_rate_per_s, target_pages_per_day, gpus_needed, usd_per_hour, usd_per_1000_pages,
    monthly_usd, efficiency_source, weights_dtype, kv_cache_dtype, engine_version, host_profile, host_version,
    concurrency, arrival_waves, cpu_workers, render_workers, gpu_busy_share, host_wait_share, engine_idle_share,
    cpu_utilization, bound_by
) AS
-- hardware and runtime named: DuckDB attaches a view column's comment by its expression's name, and two unnamed
-- `name`s would both carry the runtime's; the other expressions that are not plain columns named as well
SELECT s.scenario_id, s.point_index, h.name AS hardware, rp.name AS runtime, rp.version AS runtime_version,
       s.engine, s.arrival_rate_per_s, s.pages, s.max_num_seqs, s.max_num_batched_tokens, s.kv_pool_blocks, s.pages_per_s, s.output_tokens_per_s,
       s.ttft_p50_s, s.ttft_p90_s, s.ttft_p99_s, s.tpot_p50_s, s.tpot_p90_s, s.tpot_p99_s,
       s.page_latency_p50_s, s.page_latency_p90_s, s.page_latency_p99_s, s.mean_page_latency_s,
       s.mean_running_pages, s.kv_pool_use_mean, s.kv_pool_use_peak, s.preemptions, s.steps,
       s.target_ttft_p99_s, s.target_page_latency_p99_s,
       CASE WHEN s.arrival_rate_per_s IS NULL THEN FALSE
            ELSE (s.target_ttft_p99_s IS NULL OR s.ttft_p99_s <= s.target_ttft_p99_s)
                 AND (s.target_page_latency_p99_s IS NULL OR s.page_latency_p99_s <= s.target_page_latency_p99_s)
       END AS meets_targets,
       b.best_rate_per_s, sc.target_pages_per_day AS target_pages_per_day,
       {gpus} AS gpus_needed,
       h.usd_per_hour,
       {per_1000_pages} AS usd_per_1000_pages,
       {monthly} AS monthly_usd,
       {source} AS efficiency_source,
       s.weights_dtype, s.kv_cache_dtype, s.engine_version, s.host_profile, s.host_version,
       s.concurrency, s.arrival_waves, s.cpu_workers, s.render_workers, s.gpu_busy_share, s.host_wait_share,
       s.engine_idle_share, s.cpu_utilization, s.bound_by
FROM serving_points s
JOIN hardware h ON h.id = s.hardware_id
JOIN runtime_profiles rp ON rp.id = s.runtime_profile_id
JOIN scenarios sc ON sc.id = s.scenario_id
LEFT JOIN (
    SELECT scenario_id, hardware_id, runtime_profile_id, weights_dtype, kv_cache_dtype,
           MAX(arrival_rate_per_s) AS best_rate_per_s
    FROM serving_points
    WHERE arrival_rate_per_s IS NOT NULL
      AND (target_ttft_p99_s IS NULL OR ttft_p99_s <= target_ttft_p99_s)
      AND (target_page_latency_p99_s IS NULL OR page_latency_p99_s <= target_page_latency_p99_s)
    GROUP BY scenario_id, hardware_id, runtime_profile_id, weights_dtype, kv_cache_dtype
) b ON b.scenario_id = s.scenario_id AND b.hardware_id = s.hardware_id
   AND b.runtime_profile_id = s.runtime_profile_id AND b.weights_dtype = s.weights_dtype
   AND b.kv_cache_dtype = s.kv_cache_dtype;
"""


GENERATED_VIEWS = {
    "52_v_point_cost_group_time.sql": cost_group_time_sql,
    "55_v_point_operator_time.sql": operator_time_sql,
    "60_v_point_stage_time.sql": stage_time_sql,
    "70_v_point_summary_all.sql": point_summary_sql,
    "95_v_serving_summary.sql": serving_summary_sql,
}


def views_folder() -> pathlib.Path:
    from registry.store.views import queries_dir

    return queries_dir() / "views"


def render() -> dict[str, str]:
    return {name: make() for name, make in GENERATED_VIEWS.items()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("usage: python -m registry.pricing.views [--check]", file=sys.stderr)
        return 2
    folder = views_folder()
    stale = [name for name, text in render().items()
             if not (folder / name).exists() or (folder / name).read_text("utf-8") != text]
    if args == ["--check"]:
        for name in stale:
            print(f"{folder / name} is out of date: run python -m registry.pricing.views", file=sys.stderr)
        return 1 if stale else 0
    for name, text in render().items():
        (folder / name).write_text(text, "utf-8")
    print(f"wrote {', '.join(render())} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
