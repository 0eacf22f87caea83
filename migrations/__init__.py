"""Alembic scripts of the registry schema; shipped in the package as registry.migrations."""
