"""Registry speed: ingest throughput (metric rows/s) for 100 reports, and the latency of each view.

Run: python benchmarks/bench_registry.py [--postgres postgresql://127.0.0.1/test]
Metric rows are report_stages + module_metrics + operator_metrics rows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path


def make_reports(count: int):
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    return [analyze(load_profile("dsocr-standard-v1", new_tokens=n)) for n in range(1, count + 1)]


def metric_rows(report) -> int:
    return len(report.stages) + len(report.module_metrics) + sum(len(s.operators) for s in report.module_metrics)


def bench_backend(label: str, url: str, reports, files) -> None:
    import sqlalchemy as sa

    from registry import views
    from registry.db import Registry
    from registry.ingest import discover, ingest_sources, write_report

    registry = Registry(url)
    registry.upgrade()
    # warm: the architecture's module tree goes in with the first report
    write_report(registry, reports[0], "warm-up")
    total_rows = sum(metric_rows(r) for r in reports[1:])
    started = time.perf_counter()
    for report in reports[1:]:
        write_report(registry, report, "bench", keep_open=True)
    write_s = time.perf_counter() - started
    print(f"{label}: wrote {len(reports) - 1} parsed reports, {total_rows:,} metric rows in {write_s:.2f} s "
          f"= {total_rows / write_s:,.0f} metric rows/s ({write_s / (len(reports) - 1) * 1000:.1f} ms/report)")

    # end to end from files (parse + validate + write), into a second registry
    with registry.begin() as conn:
        for table in ("operator_metrics", "module_metrics", "report_stages"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    started = time.perf_counter()
    outcomes = ingest_sources(registry, discover([str(f) for f in files]), force=True)
    e2e_s = time.perf_counter() - started
    rows = sum(metric_rows(r) for r in reports)
    assert all(o.status in ("replaced", "new") for o in outcomes), outcomes[:3]
    print(f"{label}: ingest of {len(files)} JSON files end to end (parse, validate, write) {e2e_s:.2f} s "
          f"= {rows / e2e_s:,.0f} metric rows/s")

    # baseline: row-by-row executemany through SQLAlchemy Core, one report's operator rows
    from registry.ingest import metric_columns

    with registry.begin() as conn:
        module_ids = dict(conn.execute(sa.text("SELECT path, id FROM modules")).all())
        report_pk = conn.execute(sa.text("SELECT id FROM reports ORDER BY id LIMIT 1")).scalar()
        conn.execute(sa.text("DELETE FROM operator_metrics WHERE report_id = :r"), {"r": report_pk})
        _, operators = metric_columns(reports[0], report_pk, module_ids, registry.category_ids(conn))
        names = list(operators)
        params = [dict(zip(names, values)) for values in zip(*(operators[n] for n in names))]
        statement = sa.text(f"INSERT INTO operator_metrics ({', '.join(names)}) VALUES "
                            f"({', '.join(':' + n for n in names)})")
        started = time.perf_counter()
        conn.execute(statement, params)
        many_s = time.perf_counter() - started
    print(f"{label}: baseline executemany, {len(params):,} rows in {many_s:.2f} s = {len(params) / many_s:,.0f} rows/s")

    with registry.begin() as conn:
        # the report views; the pricing views are measured by bench_whatif.py over a scenario
        for name in [v for v in views.view_names() if not v.startswith(("v_point", "v_predict"))]:
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                count = conn.execute(sa.text(f"SELECT COUNT(*) FROM (SELECT * FROM {name}) t")).scalar()
                timings.append(time.perf_counter() - started)
            print(f"{label}: view {name:<22} {count:>9,} rows  median {statistics.median(timings) * 1000:8.1f} ms")
    registry.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--postgres", help="PostgreSQL URL to benchmark too (a scratch schema is used)")
    args = parser.parse_args()

    from analyzer.report import write_report as write_file

    reports = make_reports(args.reports)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, report in enumerate(reports):
            path = Path(tmp) / f"r{i:03d}.json"
            write_file(report, path)
            files.append(path)
        print(f"{len(reports)} reports, {sum(metric_rows(r) for r in reports):,} metric rows, "
              f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB of JSON")
        bench_backend("duckdb", str(Path(tmp) / "bench.duckdb"), reports, files)
        if args.postgres:
            import sqlalchemy as sa

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            base = sa.make_url(args.postgres).set(drivername="postgresql+psycopg")
            admin = sa.create_engine(base)
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            try:
                url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
                bench_backend("postgresql", url, reports, files)
            finally:
                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()


if __name__ == "__main__":
    main()
    from registry.entry import exit_without_teardown  # no spurious DuckDB binding reports at exit

    exit_without_teardown(0)
