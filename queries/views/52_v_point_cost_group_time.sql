-- Generated from registry/pricing/model.py by `python -m registry.pricing.views`: edit the model, not this file.
-- The pricing formula: predicted time of one operator row of each operator cost group (the operator rows of a
-- report with the same stage, view kind, category and counts; operator_rows says how many) at each scenario point,
-- with host and device overlapping. Eager PyTorch dispatches kernels asynchronously: the host runs ahead while long
-- kernels run, and a kernel shorter than its dispatch costs its dispatch.
--   compute_bound_s = seconds if bound by the tensor rate: FLOPs / (peak x compute efficiency x efficiency_scale);
--       an fp8 matmul: the dense fp8 peak x fp8_compute_efficiency
--   memory_bound_s = seconds if bound by memory: (bytes read + written) / (bandwidth x bandwidth efficiency x
--       efficiency_scale); fp8 weights halve a matmul row's weight bytes, an fp8 KV cache the KV bytes
--   dispatch_s = seconds of host dispatch: op_calls x aten_call_s + kernel_launches x kernel_launch_s (a graph-
--       replayed decode: kernel_launches x graph_kernel_s)
--   op_time_s = the largest of compute_bound_s, memory_bound_s, dispatch_s; bound names it (ties: the earlier)
--   kernel_s = the largest of compute_bound_s, memory_bound_s: the device time alone
-- Times in seconds, per operator row: the group's share of its stage is operator_rows times as much.
CREATE VIEW v_point_cost_group_time (
    scenario_id, point_index, report_pk, runtime_profile_id, stage, view_kind, category_id, op_calls,
    kernel_launches, flops, bytes_read, bytes_written, weight_bytes_read, kv_cache_bytes_read,
    kv_cache_bytes_written, operator_rows, compute_bound_s, memory_bound_s, kernel_s, dispatch_s, op_time_s, bound
) AS
SELECT t.scenario_id, t.point_index, t.report_pk, t.runtime_profile_id, t.stage, t.view_kind, t.category_id,
       t.op_calls, t.kernel_launches, t.flops, t.bytes_read, t.bytes_written,
       t.weight_bytes_read, t.kv_cache_bytes_read, t.kv_cache_bytes_written, t.operator_rows,
       t.compute_bound_s, t.memory_bound_s, GREATEST(t.compute_bound_s, t.memory_bound_s), t.dispatch_s,
       GREATEST(t.compute_bound_s, t.memory_bound_s, t.dispatch_s),
       CASE WHEN t.dispatch_s > GREATEST(t.compute_bound_s, t.memory_bound_s) THEN 'dispatch'
            WHEN t.memory_bound_s > t.compute_bound_s THEN 'memory'
            ELSE 'compute' END
FROM (
    SELECT p.scenario_id AS scenario_id, p.point_index AS point_index, p.report_id AS report_pk,
           p.runtime_profile_id AS runtime_profile_id, g.stage AS stage, g.view_kind AS view_kind,
           g.category_id AS category_id, g.op_calls AS op_calls, g.kernel_launches AS kernel_launches,
           g.flops AS flops, g.bytes_read AS bytes_read, g.bytes_written AS bytes_written,
           g.weight_bytes_read AS weight_bytes_read, g.kv_cache_bytes_read AS kv_cache_bytes_read, g.kv_cache_bytes_written AS kv_cache_bytes_written,
           CAST(g.flops AS DOUBLE PRECISION) / (CASE WHEN oc.name = 'matmul' AND p.weights_dtype = 'fp8' THEN p.peak_fp8_flops_per_s * rp.fp8_compute_efficiency ELSE p.peak_flops_per_s * rc.compute_efficiency END * p.efficiency_scale) AS compute_bound_s,
           (CAST(g.bytes_read + g.bytes_written AS DOUBLE PRECISION) - CASE WHEN oc.name = 'matmul' AND p.weights_dtype = 'fp8' THEN CAST(g.weight_bytes_read AS DOUBLE PRECISION) * 0.5 ELSE 0.0 END - CASE WHEN p.kv_cache_dtype = 'fp8' THEN CAST(g.kv_cache_bytes_read + g.kv_cache_bytes_written AS DOUBLE PRECISION) * 0.5 ELSE 0.0 END) / (p.memory_bandwidth_bytes_per_s * rc.bandwidth_efficiency * p.efficiency_scale) AS memory_bound_s,
           CASE WHEN g.stage = 'decode' AND rp.cuda_graph_decode THEN CAST(g.kernel_launches AS DOUBLE PRECISION) * rp.graph_kernel_s ELSE CAST(g.op_calls AS DOUBLE PRECISION) * rp.aten_call_s + CAST(g.kernel_launches AS DOUBLE PRECISION) * rp.kernel_launch_s END AS dispatch_s,
           g.operator_rows AS operator_rows
    FROM scenario_points p
    JOIN operator_cost_groups g ON g.report_id = p.report_id
    JOIN runtime_profile_categories rc
        ON rc.runtime_profile_id = p.runtime_profile_id AND rc.category_id = g.category_id
    JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id
    JOIN operator_categories oc ON oc.id = g.category_id
) t;
