-- Where the work is: FLOPs, bytes and kernel launches per stage of every report.
SELECT report_id, stage, view_kind, predicted_flops, predicted_bytes, kernel_launches, arithmetic_intensity
FROM v_stage_totals
ORDER BY report_id, predicted_flops DESC
