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
    SELECT r.report_id AS report_id, o.stage AS stage, m.path AS module_path, m.class_name AS class_name,
           SUM(o.flops) AS flops, SUM(o.bytes_read + o.bytes_written) AS bytes_moved,
           SUM(o.kernel_launches) AS kernel_launches
    FROM operator_metrics o
    JOIN reports r ON r.id = o.report_id
    JOIN modules m ON m.id = o.module_id
    GROUP BY r.report_id, o.stage, m.path, m.class_name
) t;
