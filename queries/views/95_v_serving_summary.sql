-- Generated from registry/pricing/model.py by `python -m registry.pricing.views`: edit the model, not this file.
-- One row per simulated serving point (serving_points: a scenario's GPU x runtime x arrival rate, simulated by
-- registry/serving/engine.py with step times from the pricing model): throughput, TTFT / time per output token /
-- page latency percentiles, mean running pages, KV pool use, preemptions; whether the point meets the scenario's
-- targets (ttft_p99_s, page_latency_p99_s; an offline point has no arrival rate and meets none), the highest
-- arrival rate of its GPU x runtime x precision that meets them (best_rate_per_s), the GPUs that rate needs for
-- the scenario's pages_per_day: CEIL(pages_per_day / (86,400 x best_rate_per_s)), and what they cost at the GPU's
-- price (usd_per_1000_pages at the point's throughput; monthly_usd for the GPUs needed, 730 hours a month), with
-- where the efficiencies come from (efficiency_source); the engine and host profiles it ran, its page pipeline (CPU
-- workers; concurrency for a closed loop of clients), the shares of its span the GPU was busy, the GPU waited for
-- the host and the engine waited for pages, the CPU pool's utilization and the resource that bounds it (bound_by:
-- gpu, host, cpu-pool, kv or load). Times in seconds.
CREATE VIEW v_serving_summary (
    scenario_id, point_index, hardware, runtime, runtime_version, engine, arrival_rate_per_s, pages,
    max_num_seqs, max_num_batched_tokens, kv_pool_blocks, pages_per_s, output_tokens_per_s,
    ttft_p50_s, ttft_p90_s, ttft_p99_s, tpot_p50_s, tpot_p90_s, tpot_p99_s,
    page_latency_p50_s, page_latency_p90_s, page_latency_p99_s, mean_page_latency_s, mean_running_pages,
    kv_pool_use_mean, kv_pool_use_peak, preemptions, steps, target_ttft_p99_s, target_page_latency_p99_s,
    meets_targets, best_rate_per_s, target_pages_per_day, gpus_needed, usd_per_hour, usd_per_1000_pages,
    monthly_usd, efficiency_source, weights_dtype, kv_cache_dtype, engine_version, host_profile, host_version,
    concurrency, arrival_waves, cpu_workers, render_workers, gpu_busy_share, host_wait_share, engine_idle_share,
    cpu_utilization, bound_by
) AS
-- hardware and runtime named: DuckDB attaches a view column's comment by its expression's name, and two unnamed
-- `name`s would both carry the runtime's; the other expressions that are not plain columns named as well
SELECT s.scenario_id, s.point_index, h.name AS hardware, rp.name AS runtime, rp.version AS runtime_version,
       s.engine, s.arrival_rate_per_s, s.pages, s.max_num_seqs, s.max_num_batched_tokens, s.kv_pool_blocks, s.pages_per_s, s.output_tokens_per_s,
       s.ttft_p50_s, s.ttft_p90_s, s.ttft_p99_s, s.tpot_p50_s, s.tpot_p90_s, s.tpot_p99_s,
       s.page_latency_p50_s, s.page_latency_p90_s, s.page_latency_p99_s, s.mean_page_latency_s,
       s.mean_running_pages, s.kv_pool_use_mean, s.kv_pool_use_peak, s.preemptions, s.steps,
       s.target_ttft_p99_s, s.target_page_latency_p99_s,
       CASE WHEN s.arrival_rate_per_s IS NULL THEN FALSE
            ELSE (s.target_ttft_p99_s IS NULL OR s.ttft_p99_s <= s.target_ttft_p99_s)
                 AND (s.target_page_latency_p99_s IS NULL OR s.page_latency_p99_s <= s.target_page_latency_p99_s)
       END AS meets_targets,
       b.best_rate_per_s, sc.target_pages_per_day AS target_pages_per_day,
       CEIL(sc.target_pages_per_day / NULLIF(86400.0 * b.best_rate_per_s, 0)) AS gpus_needed,
       h.usd_per_hour,
       ((1.0 / NULLIF(s.pages_per_s, 0)) * h.usd_per_hour) / (3.6) AS usd_per_1000_pages,
       (CEIL(sc.target_pages_per_day / NULLIF(86400.0 * b.best_rate_per_s, 0))) * h.usd_per_hour * 730.0 AS monthly_usd,
       CASE WHEN rp.calibrated_on IS NULL THEN 'assumed (not calibrated)' WHEN rp.calibrated_on = h.name THEN 'calibrated on ' || h.name ELSE 'datasheet-scaled from ' || rp.calibrated_on END AS efficiency_source,
       s.weights_dtype, s.kv_cache_dtype, s.engine_version, s.host_profile, s.host_version,
       s.concurrency, s.arrival_waves, s.cpu_workers, s.render_workers, s.gpu_busy_share, s.host_wait_share,
       s.engine_idle_share, s.cpu_utilization, s.bound_by
FROM serving_points s
JOIN hardware h ON h.id = s.hardware_id
JOIN runtime_profiles rp ON rp.id = s.runtime_profile_id
JOIN scenarios sc ON sc.id = s.scenario_id
LEFT JOIN (
    SELECT scenario_id, hardware_id, runtime_profile_id, weights_dtype, kv_cache_dtype,
           MAX(arrival_rate_per_s) AS best_rate_per_s
    FROM serving_points
    WHERE arrival_rate_per_s IS NOT NULL
      AND (target_ttft_p99_s IS NULL OR ttft_p99_s <= target_ttft_p99_s)
      AND (target_page_latency_p99_s IS NULL OR page_latency_p99_s <= target_page_latency_p99_s)
    GROUP BY scenario_id, hardware_id, runtime_profile_id, weights_dtype, kv_cache_dtype
) b ON b.scenario_id = s.scenario_id AND b.hardware_id = s.hardware_id
   AND b.runtime_profile_id = s.runtime_profile_id AND b.weights_dtype = s.weights_dtype
   AND b.kv_cache_dtype = s.kv_cache_dtype;
