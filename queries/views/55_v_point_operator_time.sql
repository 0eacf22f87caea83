-- The pricing formula, once: predicted time of each module's operator category at each scenario point.
-- max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x bandwidth efficiency)) + launches x launch cost;
-- a fused category loses its launches and all but fused_bytes_factor of its bytes. Times in seconds.
CREATE VIEW v_point_operator_time (
    scenario_id, point_index, report_pk, runtime_profile_id, module_id, stage, view_kind, category_id,
    compute_bound_s, memory_bound_s, kernel_s, launch_s
) AS
SELECT p.scenario_id, p.point_index, p.report_id, p.runtime_profile_id, o.module_id, o.stage, o.view_kind,
       o.category_id,
       CAST(o.flops AS DOUBLE PRECISION) / (p.peak_flops_per_s * rc.compute_efficiency * p.efficiency_scale),
       CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION)
           * (CASE WHEN rc.fused THEN rp.fused_bytes_factor ELSE 1.0 END)
           / (p.memory_bandwidth_bytes_per_s * rc.bandwidth_efficiency * p.efficiency_scale),
       GREATEST(
           CAST(o.flops AS DOUBLE PRECISION) / (p.peak_flops_per_s * rc.compute_efficiency * p.efficiency_scale),
           CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION)
               * (CASE WHEN rc.fused THEN rp.fused_bytes_factor ELSE 1.0 END)
               / (p.memory_bandwidth_bytes_per_s * rc.bandwidth_efficiency * p.efficiency_scale)),
       (CASE WHEN rc.fused THEN 0 ELSE o.kernel_launches END) * rp.kernel_launch_s
FROM scenario_points p
JOIN operator_metrics o ON o.report_id = p.report_id
JOIN runtime_profile_categories rc ON rc.runtime_profile_id = p.runtime_profile_id AND rc.category_id = o.category_id
JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id;
