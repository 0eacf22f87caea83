-- Modules ranked within each report and stage by their own FLOPs and by their own bytes moved (children
-- excluded, view kinds summed). Filter on flops_rank or bytes_rank for the top N.
CREATE VIEW v_module_hotspots (
    report_id, stage, module_path, class_name, flops, bytes_moved, kernel_launches, flops_rank, bytes_rank,
    share_of_stage_flops, share_of_stage_bytes
) AS
SELECT t.report_id, t.stage, t.module_path, t.class_name, t.flops, t.bytes_moved, t.kernel_launches,
       ROW_NUMBER() OVER (PARTITION BY t.report_id, t.stage ORDER BY t.flops DESC, t.module_path),
       ROW_NUMBER() OVER (PARTITION BY t.report_id, t.stage ORDER BY t.bytes_moved DESC, t.module_path),
       CAST(t.flops AS DOUBLE PRECISION)
           / NULLIF(CAST(SUM(t.flops) OVER (PARTITION BY t.report_id, t.stage) AS DOUBLE PRECISION), 0),
       CAST(t.bytes_moved AS DOUBLE PRECISION)
           / NULLIF(CAST(SUM(t.bytes_moved) OVER (PARTITION BY t.report_id, t.stage) AS DOUBLE PRECISION), 0)
FROM (
    SELECT r.report_id AS report_id, g.stage AS stage, m.path AS module_path, m.class_name AS class_name,
           g.flops AS flops, g.bytes_moved AS bytes_moved, g.kernel_launches AS kernel_launches
    FROM (
        -- summed on the integer keys first, named after: grouping by names costs twice as much; each sum cast
        -- back to BIGINT (a sum of integers is a 128-bit integer or NUMERIC, which BI clients read as decimals; a
        -- report's totals are checked to fit 64 bits when it is stored)
        SELECT report_id, stage, module_id, CAST(SUM(flops) AS BIGINT) AS flops,
               CAST(SUM(bytes_read + bytes_written) AS BIGINT) AS bytes_moved,
               CAST(SUM(kernel_launches) AS BIGINT) AS kernel_launches
        FROM operator_metrics
        GROUP BY report_id, stage, module_id
    ) g
    JOIN reports r ON r.id = g.report_id
    JOIN modules m ON m.id = g.module_id
) t;
