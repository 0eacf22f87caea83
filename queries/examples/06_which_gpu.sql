-- Which GPU: pages/s and dollars per 1,000 pages of the standard page under vLLM, bf16 beside fp8, on every
-- catalog GPU, with the price per GPU-hour it was costed at, what bounds its bf16 throughput and where its
-- efficiencies come from. Run
-- `whatif --scenario queries/examples/which-gpu.yaml` and `which-gpu-fp8.yaml` first (the newest run of each).
SELECT s.hardware,
       ROUND(CAST(MAX(CASE WHEN s.weights_dtype = 'bf16' THEN s.pages_per_s END) AS NUMERIC), 2) AS bf16_pages_per_s,
       ROUND(CAST(MAX(CASE WHEN s.weights_dtype = 'bf16' THEN s.usd_per_1000_pages END) AS NUMERIC), 3)
           AS bf16_usd_per_1000_pages,
       ROUND(CAST(MAX(CASE WHEN s.weights_dtype = 'fp8' THEN s.pages_per_s END) AS NUMERIC), 2) AS fp8_pages_per_s,
       ROUND(CAST(MAX(CASE WHEN s.weights_dtype = 'fp8' THEN s.usd_per_1000_pages END) AS NUMERIC), 3)
           AS fp8_usd_per_1000_pages,
       MAX(s.usd_per_hour) AS usd_per_hour,
       MAX(CASE WHEN s.weights_dtype = 'bf16' THEN s.bound_by END) AS bf16_bound_by,
       MAX(s.efficiency_source) AS efficiencies
FROM v_serving_summary s
WHERE s.scenario_id IN (SELECT MAX(id) FROM scenarios WHERE name IN ('which-gpu-bf16', 'which-gpu-fp8')
                        GROUP BY name)
GROUP BY s.hardware
ORDER BY MAX(CASE WHEN s.weights_dtype = 'bf16' THEN s.pages_per_s END) DESC
