-- Predicted time of each stage at each scenario point (a report priced on a GPU under a runtime profile).
-- Per module and operator category: max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x bandwidth
-- efficiency)) + launches x launch cost; fused categories lose their launches and all but fused_bytes_factor of
-- their bytes. Per stage call: host overhead (per decode step for decode). Times in seconds.
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
    SELECT p.scenario_id AS scenario_id, p.point_index AS point_index, p.report_id AS report_pk,
           p.runtime_profile_id AS runtime_profile_id, o.stage AS stage, o.view_kind AS view_kind,
           SUM(CAST(o.flops AS DOUBLE PRECISION)
               / (p.peak_flops_per_s * rc.compute_efficiency * p.efficiency_scale)) AS compute_bound_s,
           SUM(CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION)
               * (CASE WHEN rc.fused THEN rp.fused_bytes_factor ELSE 1.0 END)
               / (p.memory_bandwidth_bytes_per_s * rc.bandwidth_efficiency * p.efficiency_scale)) AS memory_bound_s,
           SUM(GREATEST(
               CAST(o.flops AS DOUBLE PRECISION) / (p.peak_flops_per_s * rc.compute_efficiency * p.efficiency_scale),
               CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION)
                   * (CASE WHEN rc.fused THEN rp.fused_bytes_factor ELSE 1.0 END)
                   / (p.memory_bandwidth_bytes_per_s * rc.bandwidth_efficiency * p.efficiency_scale))) AS kernel_s,
           SUM(CASE WHEN rc.fused THEN 0 ELSE o.kernel_launches END) * MAX(rp.kernel_launch_s) AS launch_s
    FROM scenario_points p
    JOIN operator_metrics o ON o.report_id = p.report_id
    JOIN runtime_profile_categories rc
        ON rc.runtime_profile_id = p.runtime_profile_id AND rc.category_id = o.category_id
    JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id
    GROUP BY p.scenario_id, p.point_index, p.report_id, p.runtime_profile_id, o.stage, o.view_kind
) k
JOIN report_stages s ON s.report_id = k.report_pk AND s.stage = k.stage AND s.view_kind = k.view_kind
JOIN reports r ON r.id = k.report_pk
JOIN runtime_profiles rp ON rp.id = k.runtime_profile_id;
