"""The registry: analytic reports as normalized rows in DuckDB or PostgreSQL, queried with SQL views."""
