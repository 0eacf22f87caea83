"""Schema version 2 in the registry: a version-1 registry upgrades without loss, the categories table holds the
spec's records, and v_operator_metrics gives the same spec fields as the reports (DuckDB and PostgreSQL)."""

import json

from analyzer.categories import TARGET_OPERATORS
from analyzer.report import dumps_json, load_report
from registry.store import ingest
from registry.store.db import Registry
from registry.store.ingest import stored_categories
from registry.store.stored import load_stored_report
from tests.helpers import HEAD, REPO, REPORT_TABLES, rows, run_command, table_counts, upgrade_to, write_edited

BEFORE_0010 = [t for t in REPORT_TABLES if t != "operator_cost_groups"]  # the report tables of older revisions

V1_FIXTURE = REPO / "tests" / "data" / "report-v1-base.json"


def _ingest_without_0006_columns(patched):
    """Ingest as before revision 0006: the reports row without execution and category_records, and no operator
    cost groups (revision 0010 groups the stored operator rows); nor the columns of revision 0013."""
    values = ingest.report_values
    patched.setattr(ingest, "report_values", lambda *args: {
        k: v for k, v in values(*args).items() if k not in ("execution", "category_records", "matmul_weight_bytes")})
    patched.setattr(ingest, "store_cost_groups", lambda conn, report_pks: None)
    metric_columns = ingest.metric_columns

    def without_0013_columns(*args):  # operator_metrics.kv_cache_bytes_* came with revision 0013
        modules, operators = metric_columns(*args)
        return modules, {k: v for k, v in operators.items() if k not in ("kv_cache_bytes_read",
                                                                            "kv_cache_bytes_written")}

    patched.setattr(ingest, "metric_columns", without_0013_columns)


def _registry_at(db_url, revision):
    registry = Registry(db_url)
    with registry.begin() as conn:
        upgrade_to(conn, revision)
    return registry


def _registry_at_0004_holding_the_version_1_report(db_url, monkeypatch):
    """A registry at revision 0004 (before version-2 reports) with the version-1 fixture stored in it.

    The rows a version-1 report makes are those the 0004-era ingest wrote (same tables, same columns); only the
    check of the report's categories against the table is new, and at 0004 the table cannot answer it yet.
    The 0004-era views are not rebuilt here: an upgrade drops and recreates every view anyway.
    """
    registry = _registry_at(db_url, "0004")
    report = load_report(V1_FIXTURE)
    with monkeypatch.context() as patched:
        patched.setattr(ingest, "stored_categories", lambda registry, conn: ())
        patched.setattr(ingest, "check_categories", lambda report, stored: None)
        _ingest_without_0006_columns(patched)
        outcome = ingest.write_report(registry, report, str(V1_FIXTURE))
    registry.dispose()
    assert outcome.status == "new"
    return report


def test_a_version_1_registry_upgrades_without_loss(db_url, monkeypatch):
    v1_report = _registry_at_0004_holding_the_version_1_report(db_url, monkeypatch)
    assert rows(db_url, "SELECT version_num FROM alembic_version") == [("0004",)]
    before = table_counts(db_url, BEFORE_0010)
    categories_before = rows(db_url, "SELECT id, name FROM operator_categories ORDER BY id")
    # a 0004 registry is refused until it is upgraded
    refused = run_command(["report", v1_report.report_id, "--db", db_url])
    assert refused.exit_code != 0 and f"older than this code's {HEAD}" in refused.stderr

    result = run_command(["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert f"0004 -> {HEAD}" in result.output
    assert table_counts(db_url, BEFORE_0010) == before
    from tests.test_registry import cost_groups, stored_cost_groups

    assert stored_cost_groups(db_url, v1_report.report_id) == cost_groups(v1_report)  # grouped by 0010
    # the categories keep their ids; attention_masked (0006) comes after them
    assert rows(db_url, "SELECT id, name FROM operator_categories ORDER BY id") == [
        *categories_before, (len(categories_before) + 1, "attention_masked")]
    assert rows(db_url, "SELECT execution, category_records FROM reports") == [("hf-eager", None)]  # 0011 fills it
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


def test_stored_version_4_reports_are_given_back_as_written_with_their_execution(registry_url, report_files,
                                                                                  tmp_path):
    from analyzer.analysis import analyze
    from analyzer.report import write_report
    from analyzer.workload import load_profile

    vllm_path = tmp_path / "vllm.json"
    write_report(analyze(load_profile("dsocr-base-v1", new_tokens=8), "vllm"), vllm_path)
    for path in (report_files["ocr2"], vllm_path):
        result = run_command(["ingest", str(path), "--db", registry_url])
        assert result.exit_code == 0, result.output
        report = load_report(path)
        assert report.schema_version == 4
        assert rows(registry_url, "SELECT execution FROM reports WHERE report_id = :r", r=report.report_id) == [
            (report.execution.value,)]
        shown = run_command(["report", report.report_id, "--db", registry_url])
        assert shown.exit_code == 0, shown.output
        assert shown.stdout == dumps_json(report) == path.read_text()
    assert load_report(vllm_path).execution.value == "vllm"


# The attention category's description before schema 3 (what registries upgraded to 0005 earlier hold).
_VERSION_2_ATTENTION = "fused scaled-dot-product attention kernels"


def _version_2_report(path):
    """A version-2 report file: the version-1 fixture's content with the categories a 0005 registry held (no
    attention_masked; attention as described before schema 3), under the id of that content."""
    import attrs

    from analyzer.categories import CategoryId
    from analyzer.report import with_report_id, write_report

    v1 = load_report(V1_FIXTURE)
    categories = tuple(attrs.evolve(c, description=_VERSION_2_ATTENTION) if c.category_id is CategoryId.ATTENTION
                       else c for c in v1.categories if c.category_id is not CategoryId.ATTENTION_MASKED)
    report = with_report_id(attrs.evolve(v1, schema_version=2, categories=categories))
    write_report(report, path)
    assert load_report(path) == report and "execution" not in path.read_text()
    return report


def test_a_version_2_registry_upgrades_to_0006_without_loss(db_url, monkeypatch, tmp_path):
    """A registry at 0005 with a version-2 report, pre-0006 runtime profiles and a priced point: after the upgrade
    the report rebuilds byte for byte (its own category records kept), the profiles price as hf-eager with masked
    attention at their attention values, and a plain name means the shipped version."""
    import sqlalchemy as sa

    from registry.pricing.catalog import resolve_runtime

    path = tmp_path / "v2.json"
    v2_report = _version_2_report(path)
    registry = _registry_at(db_url, "0005")
    with registry.begin() as conn:
        conn.execute(sa.text("UPDATE operator_categories SET description = :d WHERE name = 'attention'"),
                     {"d": _VERSION_2_ATTENTION})
        conn.execute(sa.text(
            "INSERT INTO hardware (name, display_name, peak_bf16_flops_per_s, memory_bandwidth_bytes_per_s, "
            "memory_bytes, source, origin) VALUES ('h200', 'H200', 989e12, 4.8e12, 141000000000, '', 'shipped')"))
        for name, fused in (("hf-eager", False), ("vllm", True)):  # the pre-0006 catalog's rows
            runtime_pk = conn.execute(sa.text(
                "INSERT INTO runtime_profiles (name, version, description, source, kernel_launch_s, "
                "stage_call_overhead_s, decode_step_overhead_s, fused_bytes_factor, origin) VALUES (:n, 1, '', '', "
                "6e-6, 5e-4, 0.013, 1.0, 'shipped') RETURNING id"), {"n": name}).scalar_one()
            conn.execute(sa.text(
                "INSERT INTO runtime_profile_categories (runtime_profile_id, category_id, compute_efficiency, "
                "bandwidth_efficiency, fused) SELECT :p, id, 0.5 + id / 100.0, 0.6, :f FROM operator_categories"),
                {"p": runtime_pk, "f": fused})
    registry.dispose()
    with monkeypatch.context() as patched:
        _ingest_without_0006_columns(patched)
        registry = Registry(db_url)
        assert ingest.write_report(registry, v2_report, str(path)).status == "new"
        registry.dispose()
    with Registry(db_url).begin() as conn:
        report_pk = conn.execute(sa.text("SELECT id FROM reports")).scalar_one()
        conn.execute(sa.text("INSERT INTO scenarios (name, definition, created_at) VALUES ('old', '{}', "
                             "CURRENT_TIMESTAMP)"))
        conn.execute(sa.text(
            "INSERT INTO scenario_points (scenario_id, point_index, report_id, hardware_id, runtime_profile_id, "
            "peak_flops_per_s, memory_bandwidth_bytes_per_s, memory_bytes, efficiency_scale) SELECT s.id, 1, :r, "
            "h.id, p.id, 989e12, 4.8e12, 141000000000, 1.0 FROM scenarios s, hardware h, runtime_profiles p "
            "WHERE p.name = 'hf-eager'"), {"r": report_pk})
    before = table_counts(db_url, BEFORE_0010)

    result = run_command(["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert f"0005 -> {HEAD}" in result.output
    assert table_counts(db_url, BEFORE_0010) == before
    assert rows(db_url, "SELECT id FROM operator_categories WHERE name = 'attention_masked'") == [(11,)]
    assert rows(db_url, "SELECT description FROM operator_categories WHERE name = 'attention'") == [
        (TARGET_OPERATORS.categories()[1].description,)]
    # every pre-0006 profile prices masked attention as it priced attention, and is hf-eager
    masked = rows(db_url, "SELECT p.name, rc.compute_efficiency, rc.bandwidth_efficiency, rc.fused "
                          "FROM runtime_profile_categories rc JOIN runtime_profiles p ON p.id = rc.runtime_profile_id "
                          "WHERE p.version = 1 AND rc.category_id IN (2, 11) ORDER BY p.name, rc.category_id")
    assert masked == [("hf-eager", 0.52, 0.6, False)] * 2 + [("vllm", 0.52, 0.6, True)] * 2
    assert rows(db_url, "SELECT name, version, COALESCE(execution, 'hf-eager') FROM runtime_profiles "
                        "ORDER BY name, version") == [("hf-eager", 1, "hf-eager"), ("hf-eager", 3, "hf-eager"),
                                                      ("vllm", 1, "hf-eager"), ("vllm", 3, "vllm")]
    registry = Registry(db_url)
    try:
        with registry.begin() as conn:
            assert resolve_runtime(conn, "hf-eager")[1:] == ("hf-eager", 3)
            assert resolve_runtime(conn, "hf-eager@1")[1:] == ("hf-eager", 1)
        stored = load_stored_report(registry, v2_report.report_id)
    finally:
        registry.dispose()
    assert stored == v2_report and stored.categories[1].description == _VERSION_2_ATTENTION
    shown = run_command(["report", v2_report.report_id, "--db", db_url])
    assert shown.stdout == path.read_text()
    (latency, execution), = rows(db_url, "SELECT page_latency_s, execution FROM v_point_summary")
    assert latency > 0 and execution == "hf-eager"
    again = run_command(["ingest", str(path), "--db", db_url])
    assert "0 new, 1 skipped (already present)" in again.stdout


def test_a_version_2_file_keeps_its_own_categories(registry_url, tmp_path):
    """A version-2 file whose category records differ in text from today's is stored with its own records and
    given back as written; its category ids must be the registry's."""
    path = tmp_path / "v2.json"
    report = _version_2_report(path)
    result = run_command(["ingest", str(path), "--db", registry_url])
    assert result.exit_code == 0, result.output
    shown = run_command(["report", report.report_id, "--db", registry_url])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == path.read_text()
