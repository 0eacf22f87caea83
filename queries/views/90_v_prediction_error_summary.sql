-- Prediction error per measurement set and kind of measurement, and over all kinds ('all').
CREATE VIEW v_prediction_error_summary (
    measurement_set_id, hardware, runtime, runtime_version, kind, rows_compared, median_abs_pct_error,
    mean_abs_pct_error, max_abs_pct_error
) AS
SELECT measurement_set_id, hardware, runtime, runtime_version, kind, COUNT(*),
       PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY abs_pct_error), AVG(abs_pct_error), MAX(abs_pct_error)
FROM v_predicted_vs_measured
GROUP BY measurement_set_id, hardware, runtime, runtime_version, kind
UNION ALL
SELECT measurement_set_id, hardware, runtime, runtime_version, 'all', COUNT(*),
       PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY abs_pct_error), AVG(abs_pct_error), MAX(abs_pct_error)
FROM v_predicted_vs_measured
GROUP BY measurement_set_id, hardware, runtime, runtime_version;
