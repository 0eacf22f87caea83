-- Every timed measurement next to the prediction for the same workload, GPU and runtime: the stage it times
-- (vision, projector, prefill) or every stage (end to end), priced by v_point_stage_time at the measurement
-- set's scenario points. Times in milliseconds.
CREATE VIEW v_predicted_vs_measured (
    measurement_set_id, row_index, kind, variant, batch, workload, hardware, runtime, runtime_version, report_id,
    stage, view_kind, predicted_ms, measured_ms, ratio, abs_pct_error
) AS
-- every expression named as its column: DuckDB attaches a view column's comment by the expression's name, so two
-- unnamed `name`s (hardware, runtime) would both carry the runtime's
SELECT m.measurement_set_id AS measurement_set_id, m.row_index AS row_index, m.kind AS kind, m.variant AS variant,
       m.batch AS batch, m.workload AS workload, h.name AS hardware, rp.name AS runtime,
       rp.version AS runtime_version, r.report_id AS report_id, m.stage AS stage, m.view_kind AS view_kind,
       1000.0 * p.seconds AS predicted_ms, m.median_ms AS measured_ms,
       1000.0 * p.seconds / NULLIF(m.median_ms, 0) AS ratio,
       100.0 * ABS(1000.0 * p.seconds - m.median_ms) / NULLIF(m.median_ms, 0) AS abs_pct_error
FROM measurements m
JOIN measurement_sets s ON s.id = m.measurement_set_id
JOIN hardware h ON h.id = s.hardware_id
JOIN runtime_profiles rp ON rp.id = s.runtime_profile_id
JOIN reports r ON r.id = m.report_id
JOIN (
    SELECT mm.measurement_set_id AS measurement_set_id, mm.row_index AS row_index,
           SUM(t.stage_time_s) AS seconds
    FROM measurements mm
    JOIN measurement_sets ss ON ss.id = mm.measurement_set_id
    JOIN scenario_points sp ON sp.scenario_id = ss.scenario_id AND sp.report_id = mm.report_id
    JOIN v_point_stage_time t ON t.scenario_id = sp.scenario_id AND t.point_index = sp.point_index
    WHERE mm.compared AND (mm.stage IS NULL OR (t.stage = mm.stage AND t.view_kind = mm.view_kind))
    GROUP BY mm.measurement_set_id, mm.row_index
) p ON p.measurement_set_id = m.measurement_set_id AND p.row_index = m.row_index
WHERE m.compared;
