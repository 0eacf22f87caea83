-- The module tree of each architecture (named_modules() of the transformers model), with parameter counts.
-- Join to v_reports on architecture_id for the reports analyzed on it.
CREATE VIEW v_module_tree (
    architecture_id, model_id, variant, transformers_version, module_path, parent_path, name, class_name, depth,
    parameters, parameters_self, weight_bytes, stages, child_count
) AS
SELECT a.id, a.model_id, a.variant, a.transformers_version, m.path, m.parent_path, m.name, m.class_name, m.depth,
       m.parameters, m.parameters_self, m.weight_bytes, m.stages,
       (SELECT COUNT(*) FROM modules c WHERE c.architecture_id = m.architecture_id AND c.parent_path = m.path)
FROM modules m
JOIN architectures a ON a.id = m.architecture_id;
