-- The points of what-if scenarios only (kind = 'what-if'): v_point_summary_all without the points that summaries,
-- measurement sets and serving probes price.
CREATE VIEW v_point_summary AS
SELECT * FROM v_point_summary_all WHERE kind = 'what-if';
