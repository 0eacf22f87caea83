-- Stage totals per report (vision and projector once per view kind). Bytes in bytes; FLOPs are counts.
CREATE VIEW v_stage_totals (
    report_id, variant, mode, batch, new_tokens, stage, view_kind, view_px, calls, items, tokens_per_item,
    context_start, context_end, predicted_flops, bytes_read, bytes_written, predicted_bytes, weight_bytes_read,
    kernel_launches, op_calls, activation_peak_bytes, kv_cache_bytes, arithmetic_intensity
) AS
SELECT r.report_id, r.variant, w.mode, w.batch, w.new_tokens, s.stage, s.view_kind, s.view_px, s.calls, s.items,
       s.tokens_per_item, s.context_start, s.context_end, s.flops, s.bytes_read, s.bytes_written,
       s.bytes_read + s.bytes_written, s.weight_bytes_read, s.kernel_launches, s.op_calls, s.activation_peak_bytes,
       s.kv_cache_bytes,
       CAST(s.flops AS DOUBLE PRECISION) / NULLIF(CAST(s.bytes_read + s.bytes_written AS DOUBLE PRECISION), 0)
FROM report_stages s
JOIN reports r ON r.id = s.report_id
JOIN workloads w ON w.id = r.workload_id;
