"""Run by tests/test_bi_clients.py under an older DuckDB (installed to a folder of its own, on PYTHONPATH):
open a snapshot read-only as a BI tool does and print, as JSON, DuckDB's version, every table's row count and
every view's columns and rows.

    python -S read_every_view.py SNAPSHOT.duckdb
"""

import datetime
import decimal
import json
import sys

import duckdb


def plain(value):
    """A cell as JSON: floats to 9 significant digits (sums may be added in another order), the rest as text."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, (decimal.Decimal, datetime.date, datetime.datetime)):
        return str(value)
    return value


def main(path):
    conn = duckdb.connect(path, read_only=True)
    tables = [r[0] for r in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal ORDER BY table_name").fetchall()]
    views = [r[0] for r in conn.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
    out = {"duckdb": duckdb.__version__, "tables": {}, "views": {}}
    for name in tables:
        out["tables"][name] = conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
    for name in views:
        result = conn.execute(f"SELECT * FROM {name}")
        columns = [d[0] for d in result.description]
        rows = sorted(json.dumps([plain(v) for v in row], default=str) for row in result.fetchall())
        out["views"][name] = {"columns": columns, "rows": rows}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
