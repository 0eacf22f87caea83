-- Generated from registry/pricing/model.py by `python -m registry.pricing.views`: edit the model, not this file.
-- Predicted time of each module's operator category (per stage and view kind) at each scenario point: each operator
-- row takes the time of its operator cost group, priced by v_point_cost_group_time (the formula is there). Times
-- in seconds.
CREATE VIEW v_point_operator_time (
    scenario_id, point_index, report_pk, runtime_profile_id, module_id, stage, view_kind, category_id,
    compute_bound_s, memory_bound_s, kernel_s, dispatch_s, op_time_s, bound
) AS
SELECT g.scenario_id, g.point_index, g.report_pk, g.runtime_profile_id, o.module_id, g.stage, g.view_kind,
       g.category_id,
       g.compute_bound_s, g.memory_bound_s, g.kernel_s, g.dispatch_s, g.op_time_s, g.bound
FROM v_point_cost_group_time g
JOIN operator_metrics o
    ON o.report_id = g.report_pk AND o.stage = g.stage AND o.view_kind = g.view_kind
   AND o.category_id = g.category_id AND o.op_calls = g.op_calls AND o.kernel_launches = g.kernel_launches
   AND o.flops = g.flops AND o.bytes_read = g.bytes_read AND o.bytes_written = g.bytes_written
   AND o.weight_bytes_read = g.weight_bytes_read
   AND COALESCE(o.kv_cache_bytes_read, -1) = g.kv_cache_bytes_read
   AND COALESCE(o.kv_cache_bytes_written, -1) = g.kv_cache_bytes_written;
