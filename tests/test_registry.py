"""The registry on DuckDB and PostgreSQL: migrations, ingest, idempotency, bad input, views, export, snapshot."""

import json

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from analyzer.report import load_report
from registry.store.db import Registry, SchemaMismatchError
from tests.helpers import HEAD, REPO, rows, run_command, table_counts, write_edited


def test_db_upgrade_creates_schema_views_and_categories(db_url):
    head = Registry(db_url).head_revision()
    assert head == HEAD == "0017"
    result = run_command(["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert f"upgraded (empty) -> {head}" in result.output
    again = run_command(["db", "upgrade", "--db", db_url])
    assert f"at revision {head} (current)" in again.output
    current = run_command(["db", "current", "--db", db_url])
    assert f"revision {head}; code {head} (current)" in current.output
    assert rows(db_url, "SELECT COUNT(*) FROM hardware") == [(16,)]
    assert rows(db_url, "SELECT name, version, execution FROM runtime_profiles ORDER BY name") == [
        ("hf-eager", 3, "hf-eager"), ("vllm", 3, "vllm")]
    assert rows(db_url, "SELECT COUNT(*) FROM runtime_profile_categories") == [(22,)]
    assert rows(db_url, "SELECT COUNT(*) FROM operator_categories")[0][0] == 11
    from registry.store.views import view_names

    assert len(view_names()) == 16
    for view in view_names():  # every view of queries/views exists and answers on an empty registry
        assert rows(db_url, f"SELECT COUNT(*) FROM {view}") == [(0,)]
    history = run_command(["db", "history"])
    assert "<base> -> 0001" in history.output and "0005 -> 0006" in history.output and "0006 -> 0007" in history.output
    assert "0007 -> 0008" in history.output and "0008 -> 0009" in history.output
    assert "0009 -> 0010" in history.output and "0010 -> 0011" in history.output and "0011 -> 0012" in history.output
    assert "0012 -> 0013" in history.output and "0013 -> 0014" in history.output


def test_ingest_writes_every_row_of_a_report(registry_url, report_files):
    result = run_command(["ingest", str(report_files["standard"]), "--db", registry_url])
    assert result.exit_code == 0, result.output
    report = load_report(report_files["standard"])
    counts = table_counts(registry_url)
    operator_rows = sum(len(s.operators) for s in report.module_metrics)
    assert counts == {"architectures": 1, "modules": len(report.modules), "workloads": 1, "reports": 1,
                      "report_stages": 6, "module_metrics": len(report.module_metrics),
                      "operator_metrics": operator_rows, "operator_cost_groups": len(cost_groups(report))}
    assert (operator_rows, counts["operator_cost_groups"]) == (2_044, 146)  # the layers repeat: 14x fewer to price
    assert "1 new, 0 skipped (already present), 0 failed" in result.output
    expected_rows = 1 + len(report.modules) + 1 + 1 + 6 + len(report.module_metrics) + operator_rows
    assert f"{expected_rows:,} rows" in result.output
    stages = rows(registry_url, "SELECT stage, view_kind, predicted_flops, predicted_bytes, kernel_launches "
                          "FROM v_stage_totals WHERE report_id = :r", r=report.report_id)
    expected = {(s.stage.value, s.view_kind.value): (s.flops, s.bytes_read + s.bytes_written, s.kernel_launches)
                for s in report.stages}
    assert {(st, vk): tuple(v) for st, vk, *v in stages} == expected
    (total_flops,) = rows(registry_url, "SELECT SUM(flops) FROM operator_metrics")[0]
    assert total_flops == report.total_flops
    tree = rows(registry_url, "SELECT module_path, parent_path, parameters, child_count FROM v_module_tree "
                        "WHERE module_path IN ('', 'model.language_model.layers.3.mlp')")
    assert sorted(tree) == [("", None, 3_335_504_128, 2), ("model.language_model.layers.3.mlp",
                                                            "model.language_model.layers.3", 227_164_160, 3)]


def cost_groups(report) -> dict[tuple, int]:
    """The report's operator rows that cost the same, counted (the test's own grouping of the report object)."""
    groups: dict[tuple, int] = {}
    for snap in report.module_metrics:
        for op in snap.operators:
            key = (snap.stage.value, snap.view_kind.value, op.category_id.value, op.op_calls, op.kernel_launches,
                   op.flops, op.bytes_read, op.bytes_written, op.weight_bytes_read,
                   -1 if op.kv_cache_bytes_read is None else op.kv_cache_bytes_read,  # unknown: -1
                   -1 if op.kv_cache_bytes_written is None else op.kv_cache_bytes_written)
            groups[key] = groups.get(key, 0) + 1
    return groups


def stored_cost_groups(db_url, report_id) -> dict[tuple, int]:
    found = rows(db_url, "SELECT g.stage, g.view_kind, c.name, g.op_calls, g.kernel_launches, g.flops, g.bytes_read, "
                         "g.bytes_written, g.weight_bytes_read, g.kv_cache_bytes_read, g.kv_cache_bytes_written, g.operator_rows "
                         "FROM operator_cost_groups g "
                         "JOIN operator_categories c ON c.id = g.category_id JOIN reports r ON r.id = g.report_id "
                         "WHERE r.report_id = :r", r=report_id)
    return {tuple(row[:-1]): row[-1] for row in found}


def test_operator_cost_groups_count_the_rows_that_cost_the_same(registry_url, report_files, tmp_path):
    """Written with the operator rows (one report, a batch, --force), and filled by revision 0010 for reports stored
    before it; each group counts exactly the report's operator rows with its stage, view kind, category and counts."""
    names = ("standard", "ocr2", "base")
    reports = {name: load_report(report_files[name]) for name in names}
    assert run_command(["ingest", str(report_files["standard"]), "--db", registry_url]).exit_code == 0
    folder = tmp_path / "more"
    folder.mkdir()
    for name in ("ocr2", "base"):
        (folder / report_files[name].name).write_bytes(report_files[name].read_bytes())
    batch = run_command(["ingest", str(folder), "--db", registry_url])  # one batch of two
    assert batch.exit_code == 0, batch.output
    assert run_command(["ingest", "--force", str(report_files["base"]), "--db", registry_url]).exit_code == 0
    for name, report in reports.items():
        assert stored_cost_groups(registry_url, report.report_id) == cost_groups(report), name
        assert sum(cost_groups(report).values()) == sum(len(s.operators) for s in report.module_metrics)

    # a registry at 0009 holding these reports: the upgrade groups the stored operator rows
    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            # PostgreSQL drops the views that read the table with it; 0009's views were other views anyway
            conn.execute(sa.text("DROP TABLE operator_cost_groups" +
                                 (" CASCADE" if conn.dialect.name == "postgresql" else "")))
            conn.execute(sa.text("DELETE FROM view_definitions"))
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0009'"))
    finally:
        registry.dispose()
    result = run_command(["db", "upgrade", "--db", registry_url])
    assert result.exit_code == 0 and f"0009 -> {HEAD}" in result.output, result.output
    for name, report in reports.items():
        assert stored_cost_groups(registry_url, report.report_id) == cost_groups(report), name
    assert rows(registry_url, "SELECT COUNT(*) FROM v_point_cost_group_time") == [(0,)]


def test_reingest_is_a_noop_and_force_replaces(registry_url, report_files):
    path = str(report_files["standard"])
    run_command(["ingest", path, "--db", registry_url])
    before = table_counts(registry_url)
    (first_time,) = rows(registry_url, "SELECT ingested_at FROM reports")[0]
    again = run_command(["ingest", path, "--db", registry_url])
    assert again.exit_code == 0
    assert "already present, skipped" in again.output and "0 new, 1 skipped" in again.output
    assert table_counts(registry_url) == before
    forced = run_command(["ingest", path, "--db", registry_url, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "1 replaced" in forced.output
    assert table_counts(registry_url) == before
    (second_time,) = rows(registry_url, "SELECT ingested_at FROM reports")[0]
    assert second_time > first_time  # --force rewrote the report's row


def test_reports_share_architectures_and_workloads(registry_url, report_files):
    result = run_command(["ingest", str(report_files["standard"]), str(report_files["standard_256"]),
                          str(report_files["base"]), str(report_files["ocr2"]), "--db", registry_url])
    assert result.exit_code == 0, result.output
    counts = table_counts(registry_url)
    assert counts["reports"] == 4
    assert counts["architectures"] == 2  # v1 and OCR-2
    assert counts["workloads"] == 4
    v1 = load_report(report_files["standard"])
    ocr2 = load_report(report_files["ocr2"])
    assert counts["modules"] == len(v1.modules) + len(ocr2.modules)
    assert rows(registry_url, "SELECT COUNT(*) FROM v_reports WHERE variant = 'ocr2' AND batch = 4") == [(1,)]


def test_directories_globs_and_stdin(registry_url, report_files, tmp_path):
    folder = report_files["standard"].parent
    result = run_command(["ingest", str(folder), "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert "4 new" in result.output
    result = run_command(["ingest", str(folder / "*.json"), "--db", registry_url])
    assert "0 new, 3 skipped" in result.output
    fresh = str(tmp_path / "stdin.duckdb")
    result = run_command(["ingest", "-", "--db", fresh], input=report_files["base"].read_text())
    assert "1 new" in result.output  # a new DuckDB file is created at the current revision
    assert result.exit_code == 0, result.output
    assert rows(fresh, "SELECT COUNT(*) FROM reports") == [(1,)]


def _write_edited(tmp_path, name, report_files, edit, keep_id=False):
    return write_edited(report_files["standard_256"], tmp_path / name, edit, keep_id)


def test_bad_inputs_fail_alone_with_one_line_each(registry_url, report_files, tmp_path):
    bad = {
        "malformed.json": '{"schema_version": 1, "stages": [',
        "malformed.yaml": "schema_version: 1\nstages: [unclosed\n",
        "empty.json": "",
        "nan.json": '{"schema_version": 1, "x": NaN}',
        "list.yaml": "- 1\n- 2\n",
    }
    paths = []
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    (tmp_path / "latin1.json").write_bytes(b'{"schema_version": 1, "model_id": "caf\xe9"}')
    paths.append(tmp_path / "latin1.json")
    edits = {
        "version.json": lambda d: d.update(schema_version=5),
        "missing.json": lambda d: d.pop("stages"),
        "negative.json": lambda d: d["stages"][0].update(flops=-5),
        "infinite.json": lambda d: d["stages"][0].update(distinct_experts_per_call=float("inf")),
        "orphan.json": lambda d: d["modules"][5].update(parent_path="model.ghost"),
        "cycle.json": lambda d: d["modules"][0].update(parent_path=d["modules"][2]["path"]),
        "tflops.json": lambda d: _op_with_flops(d).update(flops_tflops=_op_with_flops(d)["flops_tflops"] + 0.5),
        "category.json": lambda d: _op_with_flops(d).update(category_id="tensor_cores"),
        "share.json": lambda d: _op_with_flops(d).update(share_of_module_flops=1.25),
    }
    for name, edit in edits.items():
        paths.append(_write_edited(tmp_path, name, report_files, edit))
    paths.append(_write_edited(tmp_path, "tampered.json", report_files,
                               lambda d: d["stages"][0].update(flops=1), keep_id=True))
    result = run_command(["ingest", *map(str, paths), str(report_files["standard"]), "--db", registry_url])
    assert result.exit_code == 1
    failures = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(failures) == len(paths)
    messages = dict(line.split(": ", 1) for line in failures)
    expect = {
        "malformed.json": "malformed JSON", "malformed.yaml": "malformed YAML", "empty.json": "empty file",
        "nan.json": "non-finite", "list.yaml": "must be a mapping", "latin1.json": "not UTF-8",
        "version.json": "schema_version 5 is not supported", "missing.json": "missing required field 'stages'",
        "negative.json": "flops must be >= 0", "infinite.json": "finite number", "orphan.json": "does not exist",
        "cycle.json": "cycle", "tampered.json": "does not match its content",
        "tflops.json": "flops_tflops", "category.json": "unknown category id 'tensor_cores'",
        "share.json": "share_of_module_flops must be within [0, 1], got 1.25",
    }
    for name, fragment in expect.items():
        assert fragment in messages[str(tmp_path / name)], (name, messages[str(tmp_path / name)])
    assert "disagrees with its counts" in messages[str(tmp_path / "tflops.json")]
    assert f"1 new, 0 skipped (already present), {len(paths)} failed" in result.stdout
    assert table_counts(registry_url)["reports"] == 1


def _op_with_flops(data):
    return next(op for s in data["module_metrics"] for op in s["operators"] if op["flops"])


@pytest.mark.parametrize("edit,fragment", [
    (lambda d: _op_with_flops(d).update(flops_tflops=_op_with_flops(d)["flops_tflops"] * 1000),
     "flops_tflops"),
    (lambda d: _op_with_flops(d).update(category_id="tensor_cores"), "unknown category id 'tensor_cores'"),
    (lambda d: _op_with_flops(d).update(share_of_module_flops=-0.5), "share_of_module_flops must be a finite"),
])
def test_a_report_with_wrong_spec_fields_is_one_line_and_stores_nothing(registry_url, report_files, tmp_path,
                                                                         edit, fragment):
    path = _write_edited(tmp_path, "bad.json", report_files, edit)
    result = run_command(["ingest", str(path), "--db", registry_url])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: ") and fragment in lines[0], result.stderr
    assert table_counts(registry_url) == dict.fromkeys(table_counts(registry_url), 0)


def test_strings_carrying_sql_are_stored_as_text(registry_url, report_files, tmp_path):
    evil = "'); DROP TABLE reports; --"

    def edit(data):
        data["workload"]["profile_id"] = evil
        data["model_id"] = evil + " \"quoted\""
    path = _write_edited(tmp_path, "evil.json", report_files, edit)
    result = run_command(["ingest", str(path), "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert rows(registry_url, "SELECT profile_id FROM v_reports") == [(evil,)]
    assert rows(registry_url, "SELECT model_id FROM reports") == [(evil + ' "quoted"',)]


def test_missing_paths_and_empty_directories(registry_url, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_command(["ingest", str(tmp_path / "nope.json"), str(tmp_path / "empty"), str(tmp_path / "*.zzz"),
                          "--db", registry_url])
    assert result.exit_code == 1
    assert "no such file or directory" in result.stderr
    assert "directory holds no .json, .yaml or .yml file" in result.stderr
    assert "pattern matches no file" in result.stderr


def test_schema_gate_refuses_stale_newer_and_empty(db_url, report_files):
    if db_url.endswith(".duckdb"):
        registry = Registry(db_url)
        registry.ensure_schema()  # a new file is created at the current revision
    else:
        result = run_command(["sql", "SELECT 1", "--db", db_url])
        assert result.exit_code == 2
        assert "has no registry schema; run: dsocr-registry db upgrade --db" in result.stderr
        run_command(["db", "upgrade", "--db", db_url])
    with Registry(db_url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    result = run_command(["ingest", str(report_files["base"]), "--db", db_url])
    assert result.exit_code == 2
    assert "newer than this dsocr-registry" in result.stderr
    with Registry(db_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaMismatchError, match="has no registry schema"):
        Registry(db_url).ensure_schema()


def test_stale_revision_names_the_upgrade_command(tmp_path, monkeypatch):
    db = str(tmp_path / "old.duckdb")
    Registry(db).ensure_schema()
    import registry.store.db as registry_db

    real_history = registry_db.revision_history()
    monkeypatch.setattr(registry_db.Registry, "head_revision", lambda self: "9998")
    monkeypatch.setattr(registry_db, "revision_history",
                        lambda: [("9998", real_history[0][0], "next"), *real_history])
    with pytest.raises(SchemaMismatchError, match=r"older than this code's 9998; run: dsocr-registry db upgrade"):
        Registry(db).ensure_schema()


def test_sql_command_formats_and_errors(registry_url, report_files):
    run_command(["ingest", str(report_files["standard"]), "--db", registry_url])
    query = "SELECT stage, view_kind, predicted_flops FROM v_stage_totals ORDER BY predicted_flops DESC"
    table = run_command(["sql", query, "--db", registry_url])
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["stage", "view_kind", "predicted_flops"]
    assert "2325753298944" in table.stdout and "(6 rows)" in table.stdout
    csv_out = run_command(["sql", query, "--db", registry_url, "--format", "csv"]).stdout.splitlines()
    assert csv_out[0] == "stage,view_kind,predicted_flops" and csv_out[1] == "vision,tile,2325753298944"
    data = json.loads(run_command(["sql", query, "--db", registry_url, "--format", "json"]).stdout)
    assert data[0] == {"stage": "vision", "view_kind": "tile", "predicted_flops": 2325753298944}
    bad = run_command(["sql", "SELECT nope FROM v_stage_totals", "--db", registry_url])
    assert bad.exit_code == 2 and bad.stderr.startswith("dsocr-registry: error: query failed:")
    assert len(bad.stderr.strip().splitlines()) == 1
    change = run_command(["sql", "DELETE FROM reports", "--db", registry_url])
    assert change.exit_code == 2
    assert rows(registry_url, "SELECT COUNT(*) FROM reports") == [(1,)]


def test_export_parquet_and_snapshot(registry_url, report_files, tmp_path):
    run_command(["ingest", str(report_files["standard"]), str(report_files["ocr2"]), "--db", registry_url])
    out = tmp_path / "parquet"
    result = run_command(["export", "--parquet", str(out), "--db", registry_url])
    assert result.exit_code == 0, result.output
    counts = table_counts(registry_url)
    for name, count in counts.items():
        assert pq.read_table(out / f"{name}.parquet").num_rows == count
    stage_view = pq.read_table(out / "v_stage_totals.parquet")
    assert stage_view.num_rows == 12 and "predicted_flops" in stage_view.column_names
    snap = tmp_path / "bi" / "registry.duckdb"
    result = run_command(["snapshot", str(snap), "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert table_counts(str(snap)) == counts
    assert rows(str(snap), "SELECT COUNT(*) FROM runtime_profile_categories") == [(22,)]
    from registry.store.views import view_names

    for view in view_names():  # every view: the same rows in the export, the snapshot and the registry
        count = rows(registry_url, f"SELECT COUNT(*) FROM {view}")[0][0]
        assert pq.read_table(out / f"{view}.parquet").num_rows == count, view
        assert rows(str(snap), f"SELECT COUNT(*) FROM {view}")[0][0] == count, view
    import duckdb

    with duckdb.connect(str(snap), read_only=True) as conn:  # what a BI tool does
        assert conn.execute("SELECT COUNT(*) FROM v_reports").fetchone() == (2,)


def test_example_queries_run(registry_url, report_files):
    run_command(["ingest", str(report_files["standard"]), str(report_files["ocr2"]), "--db", registry_url])
    for scenario in ("which-gpu.yaml", "which-gpu-fp8.yaml"):  # what 06_which_gpu.sql reads
        served = run_command(["whatif", "--scenario", str(REPO / "queries" / "examples" / scenario), "--format",
                              "csv", "--db", registry_url])
        assert served.exit_code == 0, served.output
    examples = sorted((REPO / "queries" / "examples").glob("*.sql"))
    assert len(examples) >= 4
    for path in examples:
        result = rows(registry_url, path.read_text())
        assert result, path.name
        # as a user runs them: the file, its text as QUERY (it starts with a "--" comment), and standard input
        by_file = run_command(["sql", "--file", str(path), "--db", registry_url, "--format", "json"])
        by_text = run_command(["sql", path.read_text(), "--db", registry_url, "--format", "json"])
        by_stdin = run_command(["sql", "-", "--db", registry_url, "--format", "json"], input=path.read_text())
        assert by_file.exit_code == by_text.exit_code == by_stdin.exit_code == 0, by_text.output
        assert len(json.loads(by_file.stdout)) == len(result)
        assert by_file.stdout == by_text.stdout == by_stdin.stdout
    # the README's "which GPU" table: every catalog GPU, bf16 beside fp8 where the GPU has an fp8 rate
    which = {r[0]: r for r in rows(registry_url, (REPO / "queries" / "examples" / "06_which_gpu.sql").read_text())}
    assert len(which) == 16
    assert which["h200"][-1] == "calibrated on h200" and which["b200"][-1] == "datasheet-scaled from h200"
    assert which["a100-80g"][3] is None and which["h200"][3] > which["h200"][1] > 0  # fp8 serves more pages/s


def test_sql_needs_exactly_one_query(registry_url, report_files):
    run_command(["ingest", str(report_files["standard"]), "--db", registry_url])
    for args, message in ((["sql"], "give a query: QUERY, - (standard input) or --file FILE"),
                          (["sql", "SELECT 1", "--file", "-"], "not both"),
                          (["sql", "   "], "the query is empty"),
                          (["sql", "SELECT 1", "--formt", "csv"], "unexpected extra arguments (--formt csv)")):
        result = run_command([*args, "--db", registry_url])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)


def test_a_bulk_insert_the_database_refuses_is_one_line_and_rolled_back(registry_url):
    """Bulk rows go through the drivers' own paths (Arrow on DuckDB, COPY on PostgreSQL); their errors become the
    same one-line DatabaseError as any other refused statement, and the transaction leaves nothing."""
    import datetime

    from registry.store.db import DatabaseError
    from registry.store.ingest import bulk_insert

    registry = Registry(registry_url)
    now = datetime.datetime(2026, 1, 1)
    try:
        with pytest.raises(DatabaseError) as refused:
            with registry.begin() as conn:
                bulk_insert(conn, "scenarios", {"id": [7, 7], "name": ["a", "b"], "definition": ["{}", "{}"],
                                                "created_at": [now, now]})  # the same primary key twice
    finally:
        registry.dispose()
    message = str(refused.value)
    assert message.startswith("database error: ") and "\n" not in message
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]


def test_db_vacuum_prints_the_size_per_report(registry_url, report_files):
    import re

    from registry.store.db import Registry

    assert run_command(["ingest", str(report_files["standard"]), str(report_files["base"]),
                        "--db", registry_url]).exit_code == 0
    assert run_command(["ingest", "--force", str(report_files["base"]), "--db", registry_url]).exit_code == 0
    result = run_command(["db", "vacuum", "--db", registry_url])
    assert result.exit_code == 0, result.output
    match = re.search(r": ([\d,.]+) MB -> ([\d,.]+) MB; 2 reports, ([\d,.]+) kB per report$", result.stdout.strip())
    assert match, result.stdout
    registry = Registry(registry_url)
    try:
        size_bytes = registry.storage_bytes()
    finally:
        registry.dispose()
    assert float(match.group(2).replace(",", "")) == pytest.approx(size_bytes / 1e6, abs=0.05)
    assert float(match.group(3).replace(",", "")) == pytest.approx(size_bytes / 2 / 1e3, abs=0.05)
    if registry_url.endswith(".duckdb"):
        import pathlib

        wal = pathlib.Path(registry_url + ".wal")
        assert not wal.exists() or wal.stat().st_size == 0  # the checkpoint wrote the log into the file
        missing = run_command(["db", "vacuum", "--db", registry_url + ".missing"])
        assert missing.exit_code == 2
        assert missing.stderr.strip() == f"dsocr-registry: error: {registry_url}.missing does not exist (ingest creates it)"
