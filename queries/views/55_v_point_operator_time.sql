-- The pricing formula, once: predicted time of each module's operator category (per stage and view kind) at each
-- scenario point, with host and device overlapping. Eager PyTorch dispatches kernels asynchronously: the host runs
-- ahead while long kernels run, and a kernel shorter than its dispatch costs its dispatch.
--   compute_bound_s = FLOPs / (peak x compute efficiency x efficiency_scale)
--   memory_bound_s  = (bytes read + written) / (bandwidth x bandwidth efficiency x efficiency_scale)
--   dispatch_s      = op_calls x aten_call_s + kernel_launches x kernel_launch_s; in the decode stage of a runtime
--                     with cuda_graph_decode: kernel_launches x graph_kernel_s (a replay issues no host work)
--   op_time_s       = GREATEST(compute_bound_s, memory_bound_s, dispatch_s); bound names the largest
-- kernel_s = GREATEST(compute_bound_s, memory_bound_s) is the device time alone. Times in seconds. Profiles stored
-- before revision 0006 have no aten_call_s (0) and no CUDA-graph decode.
CREATE VIEW v_point_operator_time (
    scenario_id, point_index, report_pk, runtime_profile_id, module_id, stage, view_kind, category_id,
    compute_bound_s, memory_bound_s, kernel_s, dispatch_s, op_time_s, bound
) AS
SELECT t.scenario_id, t.point_index, t.report_pk, t.runtime_profile_id, t.module_id, t.stage, t.view_kind,
       t.category_id, t.compute_bound_s, t.memory_bound_s, GREATEST(t.compute_bound_s, t.memory_bound_s),
       t.dispatch_s, GREATEST(t.compute_bound_s, t.memory_bound_s, t.dispatch_s),
       CASE WHEN t.dispatch_s > GREATEST(t.compute_bound_s, t.memory_bound_s) THEN 'dispatch'
            WHEN t.compute_bound_s >= t.memory_bound_s THEN 'compute'
            ELSE 'memory' END
FROM (
    SELECT p.scenario_id AS scenario_id, p.point_index AS point_index, p.report_id AS report_pk,
           p.runtime_profile_id AS runtime_profile_id, o.module_id AS module_id, o.stage AS stage,
           o.view_kind AS view_kind, o.category_id AS category_id,
           CAST(o.flops AS DOUBLE PRECISION)
               / (p.peak_flops_per_s * rc.compute_efficiency * p.efficiency_scale) AS compute_bound_s,
           CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION)
               / (p.memory_bandwidth_bytes_per_s * rc.bandwidth_efficiency * p.efficiency_scale) AS memory_bound_s,
           CASE WHEN o.stage = 'decode' AND COALESCE(rp.cuda_graph_decode, FALSE)
                THEN CAST(o.kernel_launches AS DOUBLE PRECISION) * COALESCE(rp.graph_kernel_s, 0.0)
                ELSE CAST(o.op_calls AS DOUBLE PRECISION) * COALESCE(rp.aten_call_s, 0.0)
                     + CAST(o.kernel_launches AS DOUBLE PRECISION) * rp.kernel_launch_s
           END AS dispatch_s
    FROM scenario_points p
    JOIN operator_metrics o ON o.report_id = p.report_id
    JOIN runtime_profile_categories rc
        ON rc.runtime_profile_id = p.runtime_profile_id AND rc.category_id = o.category_id
    JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id
) t;
