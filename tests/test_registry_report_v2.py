"""Schema version 2 in the registry: a version-1 registry upgrades without loss, the categories table holds the
spec's records, and v_operator_metrics gives the same spec fields as the reports (DuckDB and PostgreSQL)."""

import json

from analyzer.categories import TARGET_OPERATORS
from analyzer.report import dumps_json, load_report
from registry import ingest
from registry.db import Registry, alembic_config
from registry.ingest import stored_categories
from registry.stored import load_stored_report
from tests.helpers import REPO, rows, run_command, table_counts, write_edited

V1_FIXTURE = REPO / "tests" / "data" / "report-v1-base.json"


def _registry_at_0004_holding_the_version_1_report(db_url, monkeypatch):
    """A registry at revision 0004 (before version-2 reports) with the version-1 fixture stored in it.

    The rows a version-1 report makes are those the 0004-era ingest wrote (same tables, same columns); only the
    check of the report's categories against the table is new, and at 0004 the table cannot answer it yet.
    The 0004-era views are not rebuilt here: an upgrade drops and recreates every view anyway.
    """
    from alembic import command

    registry = Registry(db_url)
    with registry.begin() as conn:
        cfg = alembic_config(conn)
        cfg.attributes["recreate_views"] = False
        command.upgrade(cfg, "0004")
    report = load_report(V1_FIXTURE)
    with monkeypatch.context() as patched:
        patched.setattr(ingest, "stored_categories", lambda registry, conn: ())
        patched.setattr(ingest, "check_categories", lambda report, stored: None)
        outcome = ingest.write_report(registry, report, str(V1_FIXTURE))
    registry.dispose()
    assert outcome.status == "new"
    return report


def test_a_version_1_registry_upgrades_without_loss(db_url, monkeypatch):
    v1_report = _registry_at_0004_holding_the_version_1_report(db_url, monkeypatch)
    assert rows(db_url, "SELECT version_num FROM alembic_version") == [("0004",)]
    before = table_counts(db_url)
    categories_before = rows(db_url, "SELECT id, name FROM operator_categories ORDER BY id")
    # a 0004 registry is refused until it is upgraded
    refused = run_command(["report", v1_report.report_id, "--db", db_url])
    assert refused.exit_code != 0 and "older than this code's 0005" in refused.stderr

    result = run_command(["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "0004 -> 0005" in result.output
    assert table_counts(db_url) == before
    assert rows(db_url, "SELECT id, name FROM operator_categories ORDER BY id") == categories_before
    assert rows(db_url, "SELECT schema_version FROM reports") == [(1,)]

    # rebuilt from its rows at version 1: same id, same content, the file's bytes
    registry = Registry(db_url)
    try:
        stored = load_stored_report(registry, v1_report.report_id)
    finally:
        registry.dispose()
    assert stored.schema_version == 1 and stored == v1_report
    shown = run_command(["report", v1_report.report_id, "--db", db_url])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == V1_FIXTURE.read_text()
    # the same file again is already present; the view serves the version-1 rows with the spec's fields
    again = run_command(["ingest", str(V1_FIXTURE), "--db", db_url])
    assert "0 new, 1 skipped (already present)" in again.stdout
    assert _view_rows(db_url, v1_report.report_id) == _report_rows(v1_report)


def test_categories_table_holds_the_spec_records(registry_url):
    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            assert stored_categories(registry, conn) == TARGET_OPERATORS.categories()
    finally:
        registry.dispose()
    (match_classes,) = rows(registry_url, "SELECT match_classes FROM operator_categories WHERE name = 'norm'")[0]
    assert json.loads(match_classes)[:3] == ["module:*RMSNorm", "module:*LayerNorm", "aten.native_layer_norm"]


_VIEW_COLUMNS = ("module_path", "stage", "view_kind", "category_id", "op_calls", "kernel_launches", "flops",
                 "bytes_read", "bytes_written", "weight_bytes_read", "calls", "flops_tflops", "io_tb",
                 "share_of_module_flops")


def _view_rows(db_url, report_id):
    found = rows(db_url, f"SELECT {', '.join(_VIEW_COLUMNS)} FROM v_operator_metrics WHERE report_id = :r",
                 r=report_id)
    return {row[:4]: tuple(int(x) if i < 6 else float(x) for i, x in enumerate(row[4:])) for row in found}


def _report_rows(report):
    out = {}
    for snapshot in report.module_metrics:
        for op in snapshot.operators:
            key = (snapshot.module_path, snapshot.stage.value, snapshot.view_kind.value, op.category_id.value)
            out[key] = tuple(getattr(op, name) for name in _VIEW_COLUMNS[4:])
    return out


def test_v_operator_metrics_equals_the_reports_fields_row_by_row(registry_url, report_files):
    for name in ("standard", "ocr2"):
        result = run_command(["ingest", str(report_files[name]), "--db", registry_url])
        assert result.exit_code == 0, result.output
        report = load_report(report_files[name])
        view, expected = _view_rows(registry_url, report.report_id), _report_rows(report)
        assert len(view) == len(expected) > 1000
        assert view == expected  # exact: the view does the same double arithmetic as derived_operator_fields


def test_a_report_whose_categories_differ_from_the_registry_is_refused(registry_url, report_files, tmp_path):
    path = write_edited(report_files["standard_256"], tmp_path / "renamed.json",
                        lambda d: d["categories"][0].update(display_name="GEMM"))
    result = run_command(["ingest", str(path), "--db", registry_url])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"{path}: category 'matmul' differs from the registry's definition "
                     f"(analyzer and registry disagree; upgrade the older one)"]
    assert table_counts(registry_url)["reports"] == 0


def test_a_stored_version_2_report_is_given_back_as_written(registry_url, report_files):
    run_command(["ingest", str(report_files["ocr2"]), "--db", registry_url])
    report = load_report(report_files["ocr2"])
    assert report.schema_version == 2
    shown = run_command(["report", report.report_id, "--db", registry_url])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == dumps_json(report) == report_files["ocr2"].read_text()
