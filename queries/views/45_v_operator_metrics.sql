-- The spec's OperatorMetrics per report, module, stage, view kind and category, beside the exact counts:
-- calls (= op_calls), flops_tflops (FLOPs / 1e12, a count, not a rate), io_tb ((bytes read + written) / 1e12:
-- decimal terabytes, not the terabits of the spec's origin tool), share_of_module_flops (of the module's own FLOPs
-- in the stage and view kind; 0 where it has none). Same arithmetic as analyzer.report.derived_operator_fields.
-- Each output is aliased to its view column: DuckDB 1.1 names an unaliased expression (1e12) differently from the
-- DuckDB that stored the view and then refuses to bind it, and snapshots are written for DuckDB 1.1 readers.
-- The window is partitioned by r.report_id as well as by the report's key (one to one): a filter on either column
-- then reaches the operator rows below the window, instead of the window running over every report first.
CREATE VIEW v_operator_metrics (
    report_id, report_pk, module_id, module_path, stage, view_kind, category_id, display_name, op_calls,
    kernel_launches, flops, bytes_read, bytes_written, weight_bytes_read, calls, flops_tflops, io_tb,
    share_of_module_flops
) AS
SELECT r.report_id AS report_id, o.report_id AS report_pk, o.module_id, m.path AS module_path, o.stage,
       o.view_kind, c.name AS category_id, c.display_name, o.op_calls, o.kernel_launches, o.flops, o.bytes_read,
       o.bytes_written, o.weight_bytes_read, o.op_calls AS calls,
       CAST(o.flops AS DOUBLE PRECISION) / CAST(1e12 AS DOUBLE PRECISION) AS flops_tflops,
       CAST(o.bytes_read + o.bytes_written AS DOUBLE PRECISION) / CAST(1e12 AS DOUBLE PRECISION) AS io_tb,
       COALESCE(CAST(o.flops AS DOUBLE PRECISION)
                    / NULLIF(CAST(SUM(o.flops) OVER (PARTITION BY r.report_id, o.report_id, o.module_id,
                                                                  o.stage, o.view_kind)
                                  AS DOUBLE PRECISION), 0),
                0.0) AS share_of_module_flops
FROM operator_metrics o
JOIN reports r ON r.id = o.report_id
JOIN modules m ON m.id = o.module_id
JOIN operator_categories c ON c.id = o.category_id;
