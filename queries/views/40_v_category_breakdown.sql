-- Operator categories per report and stage, summed over modules and view kinds, with their share of the stage.
CREATE VIEW v_category_breakdown (
    report_id, stage, category, op_calls, kernel_launches, flops, bytes_read, bytes_written, bytes_moved,
    weight_bytes_read, share_of_stage_flops, share_of_stage_bytes
) AS
SELECT t.report_id, t.stage, t.category, t.op_calls, t.kernel_launches, t.flops, t.bytes_read, t.bytes_written,
       t.bytes_read + t.bytes_written, t.weight_bytes_read,
       CAST(t.flops AS DOUBLE PRECISION)
           / NULLIF(CAST(SUM(t.flops) OVER (PARTITION BY t.report_id, t.stage) AS DOUBLE PRECISION), 0),
       CAST(t.bytes_read + t.bytes_written AS DOUBLE PRECISION)
           / NULLIF(CAST(SUM(t.bytes_read + t.bytes_written) OVER (PARTITION BY t.report_id, t.stage)
                         AS DOUBLE PRECISION), 0)
FROM (
    -- a sum of integers is a 128-bit integer (DuckDB) or NUMERIC (PostgreSQL), which BI clients read as decimals:
    -- cast back to BIGINT (a report's totals are checked to fit 64 bits when it is stored)
    SELECT r.report_id AS report_id, o.stage AS stage, c.name AS category,
           CAST(SUM(o.op_calls) AS BIGINT) AS op_calls, CAST(SUM(o.kernel_launches) AS BIGINT) AS kernel_launches,
           CAST(SUM(o.flops) AS BIGINT) AS flops, CAST(SUM(o.bytes_read) AS BIGINT) AS bytes_read,
           CAST(SUM(o.bytes_written) AS BIGINT) AS bytes_written,
           CAST(SUM(o.weight_bytes_read) AS BIGINT) AS weight_bytes_read
    FROM operator_metrics o
    JOIN reports r ON r.id = o.report_id
    JOIN operator_categories c ON c.id = o.category_id
    GROUP BY r.report_id, o.stage, c.name
) t;
