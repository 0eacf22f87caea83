"""The SQL of every view (views/) and example queries and scenarios (examples/); shipped in the package as registry.queries."""
