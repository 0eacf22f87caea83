-- What a decode step spends its bytes on, per operator category.
SELECT report_id, category, bytes_moved, share_of_stage_bytes, kernel_launches
FROM v_category_breakdown
WHERE stage = 'decode'
ORDER BY report_id, bytes_moved DESC
