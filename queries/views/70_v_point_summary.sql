-- One row per scenario point: stage and page latency, serving throughput at batch = concurrency, GPUs for the
-- scenario's target, memory fit and the largest batch that fits. Decimal units; times in seconds.
CREATE VIEW v_point_summary (
    scenario_id, point_index, report_id, hardware, runtime, runtime_version, variant, mode, tiles, batch,
    prefill_tokens, new_tokens, vision_s, projector_s, prefill_s, decode_s, page_latency_s, pages_per_s,
    tokens_per_s, pages_per_gpu_day, gpu_seconds_per_page, target_pages_per_day, gpus_needed,
    target_page_latency_s, meets_latency_target, weight_bytes, kv_cache_bytes, activation_peak_bytes,
    memory_needed_bytes, memory_bytes, fits_in_memory, max_batch_in_memory
) AS
SELECT t.scenario_id, t.point_index, r.report_id, h.name, rp.name, rp.version, w.variant, w.mode,
       w.tiles_wide * w.tiles_high, w.batch, w.prefill_tokens, w.new_tokens,
       t.vision_s, t.projector_s, t.prefill_s, t.decode_s, t.total_s,
       w.batch / NULLIF(t.total_s, 0),
       w.batch * w.new_tokens / NULLIF(t.total_s, 0),
       86400.0 * w.batch / NULLIF(t.total_s, 0),
       t.total_s / w.batch,
       sc.target_pages_per_day,
       CEIL(sc.target_pages_per_day / NULLIF(86400.0 * w.batch / NULLIF(t.total_s, 0), 0)),
       sc.target_page_latency_s,
       CASE WHEN sc.target_page_latency_s IS NULL THEN NULL ELSE t.total_s <= sc.target_page_latency_s END,
       a.weight_bytes, m.kv_cache_bytes, m.activation_peak_bytes,
       a.weight_bytes + m.kv_cache_bytes + m.activation_peak_bytes,
       p.memory_bytes,
       a.weight_bytes + m.kv_cache_bytes + m.activation_peak_bytes <= p.memory_bytes,
       CASE WHEN m.kv_cache_bytes + m.activation_peak_bytes = 0 THEN NULL
            ELSE FLOOR(CAST(p.memory_bytes - a.weight_bytes AS DOUBLE PRECISION) * w.batch
                       / CAST(m.kv_cache_bytes + m.activation_peak_bytes AS DOUBLE PRECISION)) END
FROM (
    SELECT scenario_id, point_index,
           SUM(CASE WHEN stage = 'vision' THEN stage_time_s ELSE 0 END) AS vision_s,
           SUM(CASE WHEN stage = 'projector' THEN stage_time_s ELSE 0 END) AS projector_s,
           SUM(CASE WHEN stage = 'prefill' THEN stage_time_s ELSE 0 END) AS prefill_s,
           SUM(CASE WHEN stage = 'decode' THEN stage_time_s ELSE 0 END) AS decode_s,
           SUM(stage_time_s) AS total_s
    FROM v_point_stage_time
    GROUP BY scenario_id, point_index
) t
JOIN scenario_points p ON p.scenario_id = t.scenario_id AND p.point_index = t.point_index
JOIN scenarios sc ON sc.id = p.scenario_id
JOIN reports r ON r.id = p.report_id
JOIN workloads w ON w.id = r.workload_id
JOIN architectures a ON a.id = r.architecture_id
JOIN hardware h ON h.id = p.hardware_id
JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id
JOIN (
    SELECT report_id, MAX(kv_cache_bytes) AS kv_cache_bytes, MAX(activation_peak_bytes) AS activation_peak_bytes
    FROM report_stages
    GROUP BY report_id
) m ON m.report_id = p.report_id;
