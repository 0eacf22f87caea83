-- The largest blocks of each architecture's module tree, by parameters.
SELECT model_id, module_path, class_name, parameters, weight_bytes
FROM v_module_tree
WHERE depth <= 3 AND parameters > 0
ORDER BY model_id, parameters DESC
