-- Generated from registry/pricing/model.py by `python -m registry.pricing.views`: edit the model, not this file.
-- One row per scenario point of every kind (what-if, summary, measurement, serving-probe): stage and page latency,
-- serving throughput at batch = concurrency, GPUs for the scenario's target, and memory by the memory model of the
-- runtime's execution, in the point's precision (fp8 weights: the matmul weights take half the memory; an fp8 KV
-- cache: half the bytes per token), with its cost at the GPU's price and where its efficiencies come from.
-- Decimal units; times in seconds; bytes as integers; dollars.
--   live-set: weights + the live set of the largest stage at the point's batch: the largest of each stage's
--             activation peak plus the KV cache it holds (vision and projector: none; prefill: the prompt's KV;
--             decode: the KV at the last step). Budget: the GPU's memory. Largest batch: the live set scaled
--             linearly, FLOOR((memory - weights) x batch / live set).
--   paged-kv (vllm): weights + one step's activation peak (the prefill activation per token x
--             max_num_batched_tokens, or one vision call, whichever is larger) + the KV of `batch` sequences of
--             prefill + new tokens. Budget: FLOOR(gpu_memory_utilization x memory); the KV pool is the budget -
--             weights - the step peak, and the largest concurrency FLOOR(pool / (kv_cache_bytes_per_token x
--             (prefill_tokens + new_tokens))).
-- gpus_needed = CEIL(target pages per day / (86,400 x pages per second)).
CREATE VIEW v_point_summary_all (
    scenario_id, kind, point_index, report_id, hardware, runtime, runtime_version, execution, variant, mode, tiles,
    batch, prefill_tokens, new_tokens, vision_s, projector_s, prefill_s, decode_s, page_latency_s, pages_per_s,
    tokens_per_s, pages_per_gpu_day, gpu_seconds_per_page, target_pages_per_day, gpus_needed,
    target_page_latency_s, meets_latency_target, weight_bytes, kv_cache_bytes, activation_peak_bytes,
    memory_needed_bytes, memory_bytes, memory_budget_bytes, kv_pool_bytes, fits_in_memory, max_batch_in_memory,
    weights_dtype, kv_cache_dtype, kv_cache_bytes_per_token, usd_per_hour, usd_per_1000_pages,
    usd_per_million_output_tokens, efficiency_source
) AS
SELECT x.scenario_id, x.kind, x.point_index, x.report_id, x.hardware, x.runtime, x.runtime_version, x.execution, x.variant,
       x.mode, x.tiles, x.batch, x.prefill_tokens, x.new_tokens, x.vision_s, x.projector_s, x.prefill_s, x.decode_s,
       x.total_s,
       x.batch / NULLIF(x.total_s, 0),
       x.batch * x.new_tokens / NULLIF(x.total_s, 0),
       86400.0 * x.batch / NULLIF(x.total_s, 0),
       x.total_s / x.batch,
       x.target_pages_per_day,
       CEIL(x.target_pages_per_day / NULLIF(86400.0 * x.batch / NULLIF(x.total_s, 0), 0)),
       x.target_page_latency_s,
       CASE WHEN x.target_page_latency_s IS NULL THEN NULL ELSE x.total_s <= x.target_page_latency_s END,
       x.weight_bytes,
       CASE WHEN x.execution IN ('vllm') THEN x.batch * x.kv_per_sequence_bytes ELSE x.kv_cache_bytes END,
       CASE WHEN x.execution IN ('vllm') THEN x.step_peak_bytes ELSE x.activation_peak_bytes END,
       CASE WHEN x.execution IN ('vllm') THEN x.weight_bytes + x.step_peak_bytes + x.batch * x.kv_per_sequence_bytes
            ELSE x.weight_bytes + x.live_set_bytes END,
       x.memory_bytes,
       x.memory_budget_bytes,
       CASE WHEN x.execution IN ('vllm') THEN x.memory_budget_bytes - x.weight_bytes - x.step_peak_bytes END,
       CASE WHEN x.execution IN ('vllm')
            THEN x.weight_bytes + x.step_peak_bytes + x.batch * x.kv_per_sequence_bytes <= x.memory_budget_bytes
            ELSE x.weight_bytes + x.live_set_bytes <= x.memory_budget_bytes END,
       CASE WHEN x.execution IN ('vllm')
            THEN CASE WHEN x.kv_per_sequence_bytes = 0 THEN NULL
                      ELSE GREATEST(FLOOR(CAST(x.memory_budget_bytes - x.weight_bytes - x.step_peak_bytes AS DOUBLE PRECISION)
                                          / CAST(x.kv_per_sequence_bytes AS DOUBLE PRECISION)), 0) END
            ELSE CASE WHEN x.live_set_bytes = 0 THEN NULL
                      ELSE GREATEST(FLOOR(CAST(x.memory_bytes - x.weight_bytes AS DOUBLE PRECISION) * x.batch
                                          / CAST(x.live_set_bytes AS DOUBLE PRECISION)), 0) END
       END,
       x.weights_dtype, x.kv_cache_dtype, x.kv_cache_bytes_per_token, x.usd_per_hour,
       ((x.total_s / x.batch) * x.usd_per_hour) / (3.6),
       (x.usd_per_hour * 1000000.0) / (3600.0 * NULLIF(x.batch * x.new_tokens / NULLIF(x.total_s, 0), 0)),
       x.efficiency_source
FROM (
    SELECT t.scenario_id AS scenario_id, sc.kind AS kind, t.point_index AS point_index,
           r.report_id AS report_id, h.name AS hardware,
           rp.name AS runtime, rp.version AS runtime_version, rp.execution AS execution,
           w.variant AS variant, w.mode AS mode, w.tiles_wide * w.tiles_high AS tiles, w.batch AS batch,
           w.prefill_tokens AS prefill_tokens, w.new_tokens AS new_tokens, t.vision_s AS vision_s,
           t.projector_s AS projector_s, t.prefill_s AS prefill_s, t.decode_s AS decode_s, t.total_s AS total_s,
           sc.target_pages_per_day AS target_pages_per_day, sc.target_page_latency_s AS target_page_latency_s,
           CASE p.weights_dtype WHEN 'fp8' THEN a.weight_bytes - r.matmul_weight_bytes + CAST(r.matmul_weight_bytes * 1 / 2 AS BIGINT) ELSE a.weight_bytes END AS weight_bytes,
           m.kv_cache_bytes AS kv_cache_bytes,
           m.activation_peak_bytes AS activation_peak_bytes, m.live_set_bytes AS live_set_bytes,
           CASE p.kv_cache_dtype WHEN 'fp8' THEN CAST(a.kv_cache_bytes_per_token * 1 / 2 AS BIGINT) ELSE a.kv_cache_bytes_per_token END AS kv_cache_bytes_per_token,
           CASE p.kv_cache_dtype WHEN 'fp8' THEN CAST(a.kv_cache_bytes_per_token * 1 / 2 AS BIGINT) ELSE a.kv_cache_bytes_per_token END * (w.prefill_tokens + w.new_tokens) AS kv_per_sequence_bytes,
           p.weights_dtype AS weights_dtype, p.kv_cache_dtype AS kv_cache_dtype, h.usd_per_hour AS usd_per_hour,
           CASE WHEN rp.calibrated_on IS NULL THEN 'assumed (not calibrated)' WHEN rp.calibrated_on = h.name THEN 'calibrated on ' || h.name ELSE 'datasheet-scaled from ' || rp.calibrated_on END AS efficiency_source,
           CAST(CEIL(GREATEST(m.prefill_activation_per_token * COALESCE(rp.max_num_batched_tokens, 0),
                              CAST(m.vision_call_peak_bytes AS DOUBLE PRECISION))) AS BIGINT) AS step_peak_bytes,
           p.memory_bytes AS memory_bytes,
           CASE WHEN rp.execution IN ('vllm')
                THEN CAST(FLOOR(rp.gpu_memory_utilization * p.memory_bytes) AS BIGINT)
                ELSE p.memory_bytes END AS memory_budget_bytes
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
        SELECT report_id, MAX(kv_cache_bytes) AS kv_cache_bytes, MAX(activation_peak_bytes) AS activation_peak_bytes,
               MAX(activation_peak_bytes + kv_cache_bytes) AS live_set_bytes,
               MAX(CASE WHEN stage IN ('vision', 'projector') THEN activation_peak_bytes ELSE 0 END)
                   AS vision_call_peak_bytes,
               MAX(CASE WHEN stage = 'prefill'
                        THEN CAST(activation_peak_bytes AS DOUBLE PRECISION)
                             / NULLIF(CAST(items * tokens_per_item AS DOUBLE PRECISION), 0)
                        ELSE 0.0 END) AS prefill_activation_per_token
        FROM report_stages
        GROUP BY report_id
    ) m ON m.report_id = p.report_id
) x;
