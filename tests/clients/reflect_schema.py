"""Run by tests/test_bi_clients.py under SQLAlchemy 1.4 + duckdb-engine + an older DuckDB (installed to a folder of
their own, on PYTHONPATH): reflect a snapshot as Superset-style tools do and print, as JSON, the versions, the
tables, views and their columns, the foreign keys, and each view's row count read through SQLAlchemy.

    python -S reflect_schema.py SNAPSHOT.duckdb
"""

import json
import sys
import warnings

import duckdb
import sqlalchemy as sa


def main(path):
    warnings.simplefilter("ignore")  # duckdb-engine warns that it does not reflect indexes
    engine = sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
    inspector = sa.inspect(engine)
    tables, views = sorted(inspector.get_table_names()), sorted(inspector.get_view_names())
    out = {"sqlalchemy": sa.__version__, "duckdb": duckdb.__version__, "tables": tables, "views": views,
           "columns": {}, "inspector_foreign_keys": {}, "view_rows": {}}
    for name in tables + views:
        out["columns"][name] = [column["name"] for column in inspector.get_columns(name)]
    for name in tables:
        out["inspector_foreign_keys"][name] = [
            [fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]]
            for fk in inspector.get_foreign_keys(name)]
    metadata = sa.MetaData()
    metadata.reflect(bind=engine, views=True)  # what a BI tool does when it lists a database
    out["reflected"] = sorted(metadata.tables)
    with engine.connect() as conn:
        # DuckDB's catalog function: the foreign keys as DuckDB states them, read through the same engine
        out["foreign_keys"] = sorted(
            [table, list(columns), referenced, list(referenced_columns)]
            for table, columns, referenced, referenced_columns in conn.execute(sa.text(
                "SELECT table_name, constraint_column_names, referenced_table, referenced_column_names "
                "FROM duckdb_constraints() WHERE constraint_type = 'FOREIGN KEY'")))
        for name in views:
            out["view_rows"][name] = conn.execute(sa.select(sa.func.count()).select_from(
                metadata.tables[name])).scalar()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
