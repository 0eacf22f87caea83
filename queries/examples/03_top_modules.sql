-- The five modules with the most FLOPs in each stage of each report.
SELECT report_id, stage, flops_rank, module_path, flops, share_of_stage_flops
FROM v_module_hotspots
WHERE flops_rank <= 5
ORDER BY report_id, stage, flops_rank
