-- Each configuration a plan searched, ranked by monthly cost for the plan's load (then page latency p99), with
-- whether it is on the Pareto front of cost against page latency p99 at that load (no other configuration that
-- meets the SLOs is as cheap and as fast, and better at one).
CREATE VIEW v_plan_candidates (
    plan_id, plan, candidate_index, hardware, runtime, runtime_version, engine, engine_version, weights_dtype,
    kv_cache_dtype, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, kv_pool_blocks, status,
    best_rate_per_s, replicas, nodes, usd_per_hour, monthly_usd, usd_per_1000_pages, ttft_p99_s, page_latency_p99_s,
    tpot_p99_s, bound_by, cost_rank, on_pareto_front, command
) AS
SELECT c.plan_id AS plan_id, p.name AS plan, c.candidate_index AS candidate_index, h.name AS hardware,
       rp.name AS runtime, rp.version AS runtime_version, c.engine AS engine, c.engine_version AS engine_version,
       c.weights_dtype AS weights_dtype, c.kv_cache_dtype AS kv_cache_dtype, c.max_num_seqs AS max_num_seqs,
       c.max_num_batched_tokens AS max_num_batched_tokens, c.gpu_memory_utilization AS gpu_memory_utilization,
       c.kv_pool_blocks AS kv_pool_blocks, c.status AS status, c.best_rate_per_s AS best_rate_per_s,
       c.replicas AS replicas, c.nodes AS nodes, c.usd_per_hour AS usd_per_hour, c.monthly_usd AS monthly_usd,
       c.usd_per_1000_pages AS usd_per_1000_pages, c.ttft_p99_s AS ttft_p99_s,
       c.page_latency_p99_s AS page_latency_p99_s, c.tpot_p99_s AS tpot_p99_s, c.bound_by AS bound_by,
       CASE WHEN c.status = 'ok' THEN
           RANK() OVER (PARTITION BY c.plan_id, c.status = 'ok'
                        ORDER BY c.monthly_usd, c.page_latency_p99_s, c.candidate_index) END AS cost_rank,
       c.status = 'ok' AND NOT EXISTS (
           SELECT 1 FROM plan_candidates o
           WHERE o.plan_id = c.plan_id AND o.status = 'ok' AND o.monthly_usd <= c.monthly_usd
             AND o.page_latency_p99_s <= c.page_latency_p99_s
             AND (o.monthly_usd < c.monthly_usd OR o.page_latency_p99_s < c.page_latency_p99_s)
       ) AS on_pareto_front,
       c.command AS command
FROM plan_candidates c
JOIN plans p ON p.id = c.plan_id
JOIN hardware h ON h.id = c.hardware_id
JOIN runtime_profiles rp ON rp.id = c.runtime_profile_id;
