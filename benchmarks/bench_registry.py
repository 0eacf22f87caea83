"""Registry speed: ingest throughput (metric rows/s) against DuckDB's own Arrow insert of the same rows, views and
pricing over a registry of 10,000 reports, and the start-up of a what-if whose reports are all stored.

Run: python benchmarks/bench_registry.py [--reports 100] [--scale 10000] [--postgres postgresql://127.0.0.1/test]
     [--parts writes,startup,scale]
Metric rows are report_stages + module_metrics + operator_metrics rows. Each write figure is the best of
--repeat runs (the machine is shared); the DuckDB baseline inserts the same rows, as ready Arrow tables, into the
same tables in the same number of transactions, in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

METRIC_TABLES = ("report_stages", "module_metrics", "operator_metrics")
# what an ingest writes per report besides its reports row: the metric rows and the operator cost groups derived
# from them (one GROUP BY in the same transaction)
WRITTEN_TABLES = (*METRIC_TABLES, "operator_cost_groups")


def make_reports(count: int):
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    return [analyze(load_profile("dsocr-standard-v1", new_tokens=n)) for n in range(1, count + 1)]


def fresh_registry(url: str | None, tmp: Path, label: str):
    """A new, empty registry: a DuckDB file in tmp, or a new schema on the PostgreSQL server."""
    import sqlalchemy as sa

    from registry.store.db import Registry

    if url is None:
        registry = Registry(str(tmp / f"{label}-{uuid.uuid4().hex[:6]}.duckdb"))
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        base = sa.make_url(url).set(drivername="postgresql+psycopg")
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        admin.dispose()
        registry = Registry(base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False))
        registry.bench_schema = (base, schema)
    registry.upgrade()
    return registry


def drop_registry(registry) -> None:
    import sqlalchemy as sa

    registry.dispose()
    if getattr(registry, "bench_schema", None):
        base, schema = registry.bench_schema
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def timed_writes(url, tmp, reports, batched: bool, repeat: int) -> tuple[float, object]:
    """Best time of `repeat` runs writing reports[1:] (after reports[0] stored the module tree)."""
    from registry.store.ingest import BATCH_REPORTS, write_batch, write_report

    best, kept = None, None
    for _ in range(repeat):
        registry = fresh_registry(url, tmp, "batch" if batched else "single")
        write_report(registry, reports[0], "warm-up")
        started = time.perf_counter()
        if batched:
            for first in range(1, len(reports), BATCH_REPORTS):
                chunk = reports[first:first + BATCH_REPORTS]
                outcomes = write_batch(registry, [(report, "bench") for report in chunk])
                assert all(o.status == "new" for o in outcomes), outcomes[:1]
        else:
            for report in reports[1:]:
                write_report(registry, report, "bench", keep_open=True)
        elapsed = time.perf_counter() - started
        registry.release()
        if best is None or elapsed < best:
            if kept is not None:
                drop_registry(kept)
            best, kept = elapsed, registry
        else:
            drop_registry(registry)
    return best, kept


def duckdb_own_insert(registry, report_count: int, batched: bool, repeat: int) -> float:
    """DuckDB's own rate: the rows of reports 2.. (metric rows and cost groups) read back as Arrow, deleted, and
    inserted again as Arrow tables into the same tables, in one transaction (batched) or one per report, directly
    on the driver."""
    import duckdb

    from registry.store.db import duckdb_path
    from registry.store.ingest import BATCH_REPORTS

    conn = duckdb.connect(str(duckdb_path(registry.url)))
    first = conn.execute("SELECT MIN(id) FROM reports").fetchone()[0]
    ids = [r[0] for r in conn.execute("SELECT id FROM reports WHERE id > ? ORDER BY id", [first]).fetchall()]
    groups = ([ids[i:i + BATCH_REPORTS] for i in range(0, len(ids), BATCH_REPORTS)] if batched
              else [[report_id] for report_id in ids])
    tables = [[conn.sql(f"SELECT * FROM {t} WHERE report_id IN ({', '.join(map(str, group))})").to_arrow_table()
               for t in WRITTEN_TABLES] for group in groups]
    best = None
    for _ in range(repeat):
        for t in reversed(WRITTEN_TABLES):
            conn.execute(f"DELETE FROM {t} WHERE report_id > ?", [first])
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for group_tables in tables:
            conn.execute("BEGIN")
            for name, arrow_rows in zip(WRITTEN_TABLES, group_tables):
                conn.register("_rows", arrow_rows)
                conn.execute(f"INSERT INTO {name} SELECT * FROM _rows")
                conn.unregister("_rows")
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    conn.close()
    return best


def postgres_own_copy(registry, batched: bool, repeat: int) -> float:
    """PostgreSQL's own rate: the metric rows of reports 2.. read back, deleted, and copied in again with binary
    COPY into the same tables (keys and foreign keys checked as in an ingest), in one transaction (batched) or one
    per report, directly on psycopg."""
    import psycopg

    from registry.store.ingest import BATCH_REPORTS, copy_types

    url = registry.url.set(drivername="postgresql")
    options = url.query.get("options", "")
    conn = psycopg.connect(url.set(query={}).render_as_string(False), options=options)
    first = conn.execute("SELECT MIN(id) FROM reports").fetchone()[0]
    ids = [r[0] for r in conn.execute("SELECT id FROM reports WHERE id > %s ORDER BY id", [first]).fetchall()]
    groups = ([ids[i:i + BATCH_REPORTS] for i in range(0, len(ids), BATCH_REPORTS)] if batched
              else [[report_id] for report_id in ids])
    tables = []
    for group in groups:
        group_rows = []
        for table in WRITTEN_TABLES:
            cursor = conn.execute(f"SELECT * FROM {table} WHERE report_id = ANY(%s)", [group])
            group_rows.append(([d.name for d in cursor.description], cursor.fetchall()))
        tables.append(group_rows)
    conn.commit()
    best = None
    for _ in range(repeat):
        for table in reversed(WRITTEN_TABLES):
            conn.execute(f"DELETE FROM {table} WHERE report_id > %s", [first])
        conn.commit()
        started = time.perf_counter()
        for group_rows in tables:
            with conn.cursor() as cursor:
                for table, (names, table_rows) in zip(WRITTEN_TABLES, group_rows):
                    with cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(copy_types(table, names))
                        for row in table_rows:
                            copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    conn.close()
    return best


def duckdb_constraint_rates(registry, repeat: int) -> tuple[int, float, float]:
    """The operator rows of the registry, inserted as one Arrow table into a fresh DuckDB table of the same columns
    with no constraints and with the primary key alone (best of `repeat`): (rows, rows/s, rows/s)."""
    import duckdb

    from registry.store.db import duckdb_path

    with duckdb.connect(str(duckdb_path(registry.url)), read_only=True) as source:
        operator_rows = source.sql("SELECT * FROM operator_metrics").to_arrow_table()
    rates = []
    for key in ("", ", PRIMARY KEY (report_id, module_id, stage, view_kind, category_id)"):
        with duckdb.connect(":memory:") as conn:
            conn.register("_rows", operator_rows)
            columns = ", ".join(f"{name} {kind}" for name, kind in zip(
                operator_rows.column_names, conn.sql("SELECT * FROM _rows").types))
            conn.execute(f"CREATE TABLE bare ({columns}{key})")
            best = None
            for _ in range(repeat):
                conn.execute("DELETE FROM bare")
                started = time.perf_counter()
                conn.execute("BEGIN")
                conn.execute("INSERT INTO bare SELECT * FROM _rows")
                conn.execute("COMMIT")
                elapsed = time.perf_counter() - started
                best = elapsed if best is None else min(best, elapsed)
            rates.append(operator_rows.num_rows / best)
    return operator_rows.num_rows, rates[0], rates[1]


def read_breakdown(path: Path, repeat: int = 7) -> str:
    """Where reading one report file goes (best of `repeat` each): parse, input limits (the quick walk, and the
    full walk that names key paths), structuring and validation, the content-hash check."""
    from analyzer import fileio
    from analyzer import report as report_module

    text = path.read_text("utf-8")

    def best(step) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return min(times) * 1000

    data = fileio.parse_document(text, "json")
    parse_ms = best(lambda: fileio._parse_json(text))
    quick_ms = best(lambda: fileio.check_values(data))
    full_walk = fileio._within_limits
    fileio._within_limits = lambda _: False
    try:
        full_ms = best(lambda: fileio.check_values(data))
    finally:
        fileio._within_limits = full_walk
    structure_ms = best(lambda: report_module.CONVERTER.structure(data, report_module.AnalyticModelReport))
    report = report_module.CONVERTER.structure(data, report_module.AnalyticModelReport)
    id_ms = best(lambda: report_module.compute_report_id(report))
    total_ms = best(lambda: report_module.load_report(path))
    return (f"reading one report ({len(text) / 1e6:.2f} MB of JSON), best of {repeat}: {total_ms:.0f} ms = JSON "
            f"{parse_ms:.0f} ms + input limits {quick_ms:.0f} ms (the walk naming key paths, run only on a refusal: "
            f"{full_ms:.0f} ms) + structure and validate {structure_ms:.0f} ms + content hash {id_ms:.0f} ms")


def bench_writes(label, url, tmp, reports, files, repeat) -> None:
    from registry.store.ingest import discover, ingest_sources, metric_row_count, read_source

    rows = sum(metric_row_count(r) for r in reports[1:])
    results = {}
    for batched in (True, False):
        seconds, registry = timed_writes(url, tmp, reports, batched, repeat)
        what = "batches of reports" if batched else "one report per transaction"
        line = (f"{label}: {what:<27} {rows:,} metric rows in {seconds:.2f} s = {rows / seconds:>10,.0f} rows/s "
                f"({seconds / (len(reports) - 1) * 1000:.1f} ms/report)")
        if url is None:
            own = duckdb_own_insert(registry, len(reports), batched, repeat)
            line += f"; DuckDB's own Arrow insert {rows / own:,.0f} rows/s, ratio {own / seconds:.2f}"
            if batched:
                count, bare, keyed = duckdb_constraint_rates(registry, repeat)
                constraints = (f"{label}: the {count:,} operator rows of those reports as one Arrow table into a "
                               f"DuckDB table with no constraints {bare:,.0f} rows/s, with the primary key alone "
                               f"{keyed:,.0f} rows/s")
        else:
            own = postgres_own_copy(registry, batched, repeat)
            line += f"; PostgreSQL's own binary COPY {rows / own:,.0f} rows/s, ratio {own / seconds:.2f}"
        goal = (1_000_000 if batched else 500_000) if url is None else 300_000
        print(f"{line}   (goal >= {goal:,})", flush=True)
        if url is None and batched:
            print(constraints, flush=True)
        results[batched] = registry
    for registry in results.values():
        drop_registry(registry)

    all_rows = sum(metric_row_count(r) for r in reports)
    if url is None:
        print(f"{label}: {read_breakdown(files[0])}", flush=True)
    started = time.perf_counter()
    for path in files:
        read_source(discover([str(path)])[0])
    parse_s = time.perf_counter() - started
    registry = fresh_registry(url, tmp, "e2e")
    started = time.perf_counter()
    outcomes = ingest_sources(registry, discover([str(f) for f in files]))
    e2e_s = time.perf_counter() - started
    assert all(o.status == "new" for o in outcomes), outcomes[:1]
    print(f"{label}: {len(files)} JSON files end to end (read, validate, write) {e2e_s:.2f} s = "
          f"{all_rows / e2e_s:,.0f} rows/s, of which reading and validating {parse_s:.2f} s "
          f"({parse_s / len(files) * 1000:.0f} ms/file)   (goal >= 300,000)", flush=True)
    drop_registry(registry)


def grow(registry, target_reports: int) -> int:
    """Copies of the stored reports (new ids and report ids, same rows) until the registry holds target_reports,
    in SQL: a registry the size of a team's long history without analyzing thousands of workloads."""
    import sqlalchemy as sa

    from registry.store.models import Report

    report_columns = [c.name for c in Report.__table__.columns if c.name not in ("id", "report_id")]
    with registry.begin() as conn:
        stored = conn.execute(sa.text("SELECT COUNT(*), MAX(id) FROM reports")).one()
    count, top = int(stored[0]), int(stored[1])
    originals, copy = count, 0
    while count < target_reports:
        copy += 1
        take = min(originals, target_reports - count)
        offset = top * copy
        with registry.begin() as conn:
            conn.execute(sa.text(
                f"INSERT INTO reports (id, report_id, {', '.join(report_columns)}) "
                f"SELECT id + {offset}, report_id || '-copy{copy}', {', '.join(report_columns)} FROM reports "
                f"WHERE id <= {top} ORDER BY id LIMIT {take}"))
            for table in WRITTEN_TABLES:
                conn.execute(sa.text(
                    f"INSERT INTO {table} SELECT * REPLACE (report_id + {offset} AS report_id) FROM {table} "
                    f"WHERE report_id IN (SELECT id FROM reports WHERE id <= {top} ORDER BY id LIMIT {take})"))
        count += take
    with registry.begin() as conn:
        conn.execute(sa.text("SELECT setval('reports_id_seq', (SELECT MAX(id) FROM reports))"))
    return count


def bench_scale(tmp, reports, scale: int) -> None:
    import sqlalchemy as sa

    from registry.store import views
    from registry.store.ingest import write_batch
    from registry.pricing.points import ScenarioRecord, read_points, record_scenario

    registry = fresh_registry(None, tmp, "scale")
    for first in range(0, len(reports), 200):
        write_batch(registry, [(r, "bench") for r in reports[first:first + 200]])
    started = time.perf_counter()
    count = grow(registry, scale)
    grow_s = time.perf_counter() - started
    with registry.begin() as conn:
        metric_rows = sum(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in METRIC_TABLES)
        conn.execute(sa.text("CHECKPOINT"))
        one, one_pk = conn.execute(sa.text("SELECT report_id, id FROM reports ORDER BY id DESC LIMIT 1")).one()
        tree = conn.execute(sa.text("SELECT MIN(id) FROM architectures")).scalar()
    size = Path(registry.url.database).stat().st_size
    print(f"duckdb: {count:,} reports, {metric_rows:,} metric rows (copied in SQL in {grow_s:.1f} s); file "
          f"{size / 1e6:,.0f} MB = {size / count / 1e3:,.1f} kB per report", flush=True)
    with registry.begin() as conn:
        for name in [v for v in views.view_names() if not v.startswith(("v_point", "v_predict", "v_serving"))]:
            # the module tree is per architecture, every other view per report
            key, value = ("architecture_id", tree) if name == "v_module_tree" else ("report_id", one)
            cases = [("one report", f"SELECT * FROM {name} WHERE {key} = :r", {"r": value}),
                     ("all reports", f"SELECT COUNT(*) FROM (SELECT * FROM {name}) t", {})]
            if name == "v_operator_metrics":  # its window is partitioned by report_pk as well: that filter too
                cases.insert(1, ("report_pk", f"SELECT * FROM {name} WHERE report_pk = :r", {"r": one_pk}))
            for where, query, params in cases:
                timings, found = [], 0
                for _ in range(3):
                    started = time.perf_counter()
                    result = conn.execute(sa.text(query), params).all()
                    timings.append(time.perf_counter() - started)
                    found = result[0][0] if where == "all reports" else len(result)
                print(f"duckdb: view {name:<22} {where:<11} {found:>11,} rows  median "
                      f"{statistics.median(timings) * 1000:8.1f} ms   (goal <= 200 ms)", flush=True)

    # 10,000 priced points: 2,000 stored reports x 5 GPUs under hf-eager, recorded and read from v_point_summary
    with registry.begin() as conn:
        keys = [r[0] for r in conn.execute(sa.text("SELECT id FROM reports ORDER BY id LIMIT 2000")).all()]
        gpus = [r[0] for r in conn.execute(sa.text("SELECT id FROM hardware ORDER BY id LIMIT 5")).all()]
        runtime = conn.execute(sa.text("SELECT id FROM runtime_profiles WHERE name = 'hf-eager' "
                                       "ORDER BY version DESC LIMIT 1")).scalar()
    points = [(key, gpu, runtime) for key in keys for gpu in gpus]
    started = time.perf_counter()
    with registry.begin() as conn:
        scenario_id = record_scenario(conn, ScenarioRecord(name="bench-points", definition={}), points).scenario_id
    record_s = time.perf_counter() - started
    started = time.perf_counter()
    priced = read_points(registry, scenario_id)
    read_s = time.perf_counter() - started
    print(f"duckdb: {len(priced):,} priced points over stored reports: recorded in {record_s:.2f} s, priced by "
          f"v_point_summary in {read_s:.2f} s, {record_s + read_s:.2f} s in all   (goal <= 2 s)", flush=True)
    drop_registry(registry)


def bench_startup(tmp) -> None:
    """`whatif` on the shipped capacity.yaml with every report stored, against `sql "SELECT 1"` (best of 5)."""
    import registry

    scenario = Path(registry.__file__).resolve().parent.parent / "queries" / "examples" / "capacity.yaml"
    if not scenario.exists():
        import importlib.resources

        scenario = Path(str(importlib.resources.files("registry.queries.examples").joinpath("capacity.yaml")))
    db = str(tmp / "startup.duckdb")
    command = [str(Path(sys.executable).parent / "dsocr-registry")]
    subprocess.run(command + ["whatif", "-s", str(scenario), "--db", db, "--no-progress"], check=True,
                   capture_output=True)

    def best(args) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(command + args + ["--db", db], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        return min(times)

    sql_s = best(["sql", "SELECT 1"])
    whatif_s = best(["whatif", "-s", str(scenario), "--no-progress"])
    print(f"whatif on capacity.yaml, every report stored: {whatif_s:.2f} s; sql \"SELECT 1\": {sql_s:.2f} s; "
          f"ratio {whatif_s / sql_s:.2f}   (goal <= 1.5)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=100, help="distinct reports analyzed and written")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each write figure (the best is printed)")
    parser.add_argument("--scale", type=int, default=10_000, help="reports in the registry the views are timed on "
                                                                  "(0: skip)")
    parser.add_argument("--postgres", help="PostgreSQL URL to benchmark too (a scratch schema is used)")
    parser.add_argument("--parts", default="writes,startup,scale",
                        help="which parts to run, comma-separated (default: writes,startup,scale)")
    args = parser.parse_args()
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    unknown = parts - {"writes", "startup", "scale"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))} (choose from writes, startup, scale)")

    from analyzer.report import write_report as write_file
    from registry.store.ingest import metric_row_count

    reports = make_reports(args.reports)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        files = []
        for i, report in enumerate(reports):
            path = tmp / f"r{i:03d}.json"
            write_file(report, path)
            files.append(path)
        print(f"{len(reports)} reports, {sum(metric_row_count(r) for r in reports):,} metric rows, "
              f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB of JSON; {os.cpu_count()} CPUs", flush=True)
        if "writes" in parts:
            bench_writes("duckdb", None, tmp, reports, files, args.repeat)
            if args.postgres:
                bench_writes("postgresql", args.postgres, tmp, reports, files, args.repeat)
        if "startup" in parts:
            bench_startup(tmp)
        if args.scale and "scale" in parts:
            bench_scale(tmp, reports, args.scale)


if __name__ == "__main__":
    main()
    from registry.interfaces.entry import exit_without_teardown  # no spurious DuckDB binding reports at exit

    exit_without_teardown(0)
