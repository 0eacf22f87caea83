-- Each ingested serving benchmark beside the simulation of its own requests on its own setup (one row per metric
-- and host profile version it was simulated under): measured, predicted, their ratio and the relative error.
CREATE VIEW v_serving_compare (
    measurement_id, tool, source, hardware, runtime, runtime_version, engine, engine_release, variant, mode,
    requests, request_rate_per_s, max_concurrency, host_profile, host_version, metric, metric_order, measured,
    predicted, ratio, error, bound_by
) AS
WITH metrics AS (
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 1 AS metric_order,
           'request_throughput_per_s' AS metric, CAST(sm.request_throughput_per_s AS DOUBLE PRECISION) AS measured,
           CAST(p.request_throughput_per_s AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 2 AS metric_order,
           'output_throughput_tokens_per_s' AS metric,
           CAST(sm.output_throughput_tokens_per_s AS DOUBLE PRECISION) AS measured,
           CAST(p.output_throughput_tokens_per_s AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 3 AS metric_order,
           'mean_ttft_ms' AS metric, CAST(sm.mean_ttft_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.mean_ttft_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 4 AS metric_order,
           'median_ttft_ms' AS metric, CAST(sm.median_ttft_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.median_ttft_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 5 AS metric_order,
           'p99_ttft_ms' AS metric, CAST(sm.p99_ttft_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.p99_ttft_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 6 AS metric_order,
           'mean_tpot_ms' AS metric, CAST(sm.mean_tpot_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.mean_tpot_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 7 AS metric_order,
           'median_tpot_ms' AS metric, CAST(sm.median_tpot_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.median_tpot_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 8 AS metric_order,
           'p99_tpot_ms' AS metric, CAST(sm.p99_tpot_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.p99_tpot_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 9 AS metric_order,
           'mean_itl_ms' AS metric, CAST(sm.mean_itl_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.mean_itl_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 10 AS metric_order,
           'median_itl_ms' AS metric, CAST(sm.median_itl_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.median_itl_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 11 AS metric_order,
           'p99_itl_ms' AS metric, CAST(sm.p99_itl_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.p99_itl_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 12 AS metric_order,
           'mean_e2el_ms' AS metric, CAST(sm.mean_e2el_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.mean_e2el_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 13 AS metric_order,
           'median_e2el_ms' AS metric, CAST(sm.median_e2el_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.median_e2el_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
    UNION ALL
    SELECT sm.id AS measurement_id, p.host_profile, p.host_version, 14 AS metric_order,
           'p99_e2el_ms' AS metric, CAST(sm.p99_e2el_ms AS DOUBLE PRECISION) AS measured,
           CAST(p.p99_e2el_ms AS DOUBLE PRECISION) AS predicted
    FROM serving_measurements sm JOIN serving_predictions p ON p.measurement_id = sm.id
)
SELECT sm.id AS measurement_id, sm.tool AS tool, sm.source AS source, h.name AS hardware, rp.name AS runtime,
       rp.version AS runtime_version, sm.engine AS engine, sm.engine_release AS engine_release,
       sm.variant AS variant, sm.mode AS mode, sm.requests AS requests, sm.request_rate_per_s AS request_rate_per_s,
       sm.max_concurrency AS max_concurrency, x.host_profile AS host_profile, x.host_version AS host_version,
       x.metric AS metric, x.metric_order AS metric_order, x.measured AS measured, x.predicted AS predicted,
       CASE WHEN x.measured > 0 THEN x.predicted / x.measured END AS ratio,
       CASE WHEN x.measured > 0 THEN (x.predicted - x.measured) / x.measured END AS error,
       p.bound_by AS bound_by
FROM metrics x
JOIN serving_measurements sm ON sm.id = x.measurement_id
JOIN serving_predictions p ON p.measurement_id = x.measurement_id AND p.host_profile = x.host_profile
    AND p.host_version = x.host_version
JOIN hardware h ON h.id = sm.hardware_id
JOIN runtime_profiles rp ON rp.id = sm.runtime_profile_id
WHERE x.measured IS NOT NULL;
