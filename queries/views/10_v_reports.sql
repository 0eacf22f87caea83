-- One row per ingested report: the model, the workload and the report's totals.
CREATE VIEW v_reports (
    report_id, model_id, variant, architecture_id, mode, profile_id, page_width_px, page_height_px, tiles_wide,
    tiles_high, image_placeholder_tokens, prompt_text_tokens, prefill_tokens, new_tokens, batch, parameters,
    weight_bytes, total_flops, total_bytes, total_kernel_launches, transformers_version, analyzer_version, source,
    ingested_at
) AS
SELECT r.report_id, r.model_id, r.variant, r.architecture_id, w.mode, w.profile_id, w.page_width_px,
       w.page_height_px, w.tiles_wide, w.tiles_high, w.image_placeholder_tokens, w.prompt_text_tokens,
       w.prefill_tokens, w.new_tokens, w.batch, a.parameters, a.weight_bytes, r.total_flops, r.total_bytes,
       r.total_kernel_launches, a.transformers_version, r.analyzer_version, r.source, r.ingested_at
FROM reports r
JOIN workloads w ON w.id = r.workload_id
JOIN architectures a ON a.id = r.architecture_id;
