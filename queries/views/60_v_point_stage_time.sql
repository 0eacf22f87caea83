-- Predicted time of each stage at each scenario point (a report priced on a GPU under a runtime profile): the
-- operator times of v_point_operator_time summed over the stage, plus host overhead per stage call (per decode
-- step for decode). Times in seconds.
CREATE VIEW v_point_stage_time (
    scenario_id, point_index, report_id, stage, view_kind, calls, compute_bound_s, memory_bound_s, kernel_s,
    launch_s, host_s, stage_time_s
) AS
SELECT k.scenario_id, k.point_index, r.report_id, k.stage, k.view_kind, s.calls, k.compute_bound_s,
       k.memory_bound_s, k.kernel_s, k.launch_s,
       CASE WHEN k.stage = 'decode' THEN s.calls * rp.decode_step_overhead_s ELSE rp.stage_call_overhead_s END,
       k.kernel_s + k.launch_s
           + CASE WHEN k.stage = 'decode' THEN s.calls * rp.decode_step_overhead_s ELSE rp.stage_call_overhead_s END
FROM (
    SELECT scenario_id, point_index, report_pk, runtime_profile_id, stage, view_kind,
           SUM(compute_bound_s) AS compute_bound_s, SUM(memory_bound_s) AS memory_bound_s,
           SUM(kernel_s) AS kernel_s, SUM(launch_s) AS launch_s
    FROM v_point_operator_time
    GROUP BY scenario_id, point_index, report_pk, runtime_profile_id, stage, view_kind
) k
JOIN report_stages s ON s.report_id = k.report_pk AND s.stage = k.stage AND s.view_kind = k.view_kind
JOIN reports r ON r.id = k.report_pk
JOIN runtime_profiles rp ON rp.id = k.runtime_profile_id;
