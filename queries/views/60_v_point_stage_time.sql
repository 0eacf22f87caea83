-- Generated from registry/pricing/model.py by `python -m registry.pricing.views`: edit the model, not this file.
-- Predicted time of each stage at each scenario point (a report priced on a GPU under a runtime profile of the
-- same execution): the operator times of v_point_cost_group_time summed over the stage (each group's time times its
-- operator rows: the sum of v_point_operator_time over the stage), plus host time outside the operators:
--   module_host_s = nn.Module calls x module_call_s (none in a graph-replayed decode)
--   call_host_s = calls x stage_call_overhead_s (decode: steps x decode_step_overhead_s)
--   stage_time_s = op_time_s + module_host_s + call_host_s
-- compute_set_s, memory_set_s, dispatch_set_s: op_time_s split by the bound that sets each operator row's time.
-- Times in seconds.
CREATE VIEW v_point_stage_time (
    scenario_id, point_index, report_id, stage, view_kind, calls, items, op_calls, kernel_launches, module_calls,
    compute_bound_s, memory_bound_s, kernel_s, dispatch_s, op_time_s, compute_set_s, memory_set_s, dispatch_set_s,
    module_host_s, call_host_s, host_s, stage_time_s
) AS
SELECT h.scenario_id, h.point_index, h.report_id, h.stage, h.view_kind, h.calls, h.items, h.op_calls,
       h.kernel_launches, h.module_calls,
       h.compute_bound_s, h.memory_bound_s, h.kernel_s, h.dispatch_s, h.op_time_s, h.compute_set_s, h.memory_set_s,
       h.dispatch_set_s, h.module_host_s, h.call_host_s,
       h.module_host_s + h.call_host_s, h.op_time_s + (h.module_host_s + h.call_host_s)
FROM (
    SELECT k.scenario_id AS scenario_id, k.point_index AS point_index, r.report_id AS report_id, k.stage AS stage,
           k.view_kind AS view_kind, s.calls AS calls, s.items AS items, s.op_calls AS op_calls,
           s.kernel_launches AS kernel_launches, COALESCE(mc.module_calls, 0) AS module_calls,
           k.compute_bound_s AS compute_bound_s, k.memory_bound_s AS memory_bound_s, k.kernel_s AS kernel_s,
           k.dispatch_s AS dispatch_s, k.op_time_s AS op_time_s, k.compute_set_s AS compute_set_s, k.memory_set_s AS
           memory_set_s, k.dispatch_set_s AS dispatch_set_s,
           CASE WHEN k.stage = 'decode' AND rp.cuda_graph_decode THEN 0.0 ELSE CAST(COALESCE(mc.module_calls, 0) AS DOUBLE PRECISION) * rp.module_call_s END AS module_host_s,
           CAST(s.calls AS DOUBLE PRECISION) * CASE WHEN k.stage = 'decode' THEN rp.decode_step_overhead_s ELSE rp.stage_call_overhead_s END AS call_host_s
    FROM (
        SELECT scenario_id, point_index, report_pk, runtime_profile_id, stage, view_kind,
               SUM(operator_rows * compute_bound_s) AS compute_bound_s,
               SUM(operator_rows * memory_bound_s) AS memory_bound_s,
               SUM(operator_rows * kernel_s) AS kernel_s,
               SUM(operator_rows * dispatch_s) AS dispatch_s,
               SUM(operator_rows * op_time_s) AS op_time_s,
               SUM(CASE WHEN bound = 'compute' THEN operator_rows * op_time_s ELSE 0.0 END) AS compute_set_s,
               SUM(CASE WHEN bound = 'memory' THEN operator_rows * op_time_s ELSE 0.0 END) AS memory_set_s,
               SUM(CASE WHEN bound = 'dispatch' THEN operator_rows * op_time_s ELSE 0.0 END) AS dispatch_set_s
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
