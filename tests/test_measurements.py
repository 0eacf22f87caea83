"""Measured vs predicted: measurement ingest, compare, calibrate, measure without a GPU."""

import json
import re

import numpy as np
import pytest
import yaml

from tests.helpers import HEAD, REPO, rows, run_command

H200_FILE = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"


def _ingest(url, runtime="hf-eager"):
    return run_command(["ingest", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime", runtime,
                        "--db", url])


def test_measurement_ingest_links_rows_to_workloads_and_is_idempotent(registry_url):
    first = _ingest(registry_url)
    assert first.exit_code == 0, first.output
    assert "stored as set 1: 33 rows, 28 timed rows to compare" in first.stdout
    again = _ingest(registry_url)
    assert "already present as set 1" in again.stdout
    assert rows(registry_url, "SELECT COUNT(*) FROM measurements") == [(33,)]
    # a 6-tile OCR-2 page: 256 + 6 x 144 + 1 placeholders, the measured 1140-token context
    linked = rows(registry_url,
                  "SELECT w.tiles_wide * w.tiles_high, w.prefill_tokens, w.new_tokens, m.stage FROM measurements m "
                  "JOIN reports r ON r.id = m.report_id JOIN workloads w ON w.id = r.workload_id "
                  "WHERE m.row_index = 23")
    assert linked == [(6, 1140, 256, None)]
    vision = rows(registry_url, "SELECT m.stage, m.view_kind, s.items, s.view_px FROM measurements m "
                                "JOIN report_stages s ON s.report_id = m.report_id AND s.stage = m.stage "
                                "AND s.view_kind = m.view_kind WHERE m.row_index = 27")
    assert vision == [("vision", "tile", 48, 768)]
    eager = rows(registry_url, "SELECT compared, note FROM measurements WHERE row_index = 15")
    assert eager[0][0] is False and "eager" in eager[0][1]


def test_compare_json_matches_the_views(registry_url):
    result = run_command(["compare", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime",
                          "hf-eager", "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["rows"]) == 28
    for row in data["rows"]:
        assert {"kind", "predicted_ms", "measured_ms", "ratio", "abs_pct_error"} <= set(row)
        assert row["ratio"] == pytest.approx(row["predicted_ms"] / row["measured_ms"])
        assert row["abs_pct_error"] == pytest.approx(100 * abs(row["predicted_ms"] - row["measured_ms"])
                                                     / row["measured_ms"])
    errors = [r["abs_pct_error"] for r in data["rows"]]
    assert data["summary"]["mape_pct"] == pytest.approx(float(np.mean(errors)))
    assert data["summary"]["median_ape_pct"] == pytest.approx(float(np.median(errors)))
    assert set(data["summary"]["by_kind"]) == {"vision_tower", "projector", "prefill", "end_to_end_views"}
    table = run_command(["compare", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime",
                         "hf-eager@3", "--db", registry_url])
    summary = data["summary"]  # the same set: median, mean, max APE % in the table
    assert re.search(rf"^all +28 +{summary['median_ape_pct']:.1f} +{summary['mape_pct']:.1f} "
                     rf"+{summary['max_ape_pct']:.1f}$", table.stdout, re.MULTILINE), table.stdout


def test_calibration_improves_and_reports_held_out_error(registry_url, tmp_path):
    _ingest(registry_url)
    out = tmp_path / "calibrated.yaml"
    result = run_command(["calibrate", "--hardware", "h200", "--runtime", "hf-eager", "--out", str(out),
                          "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["profile"], data["plain"]) == ("hf-eager@4", "hf-eager@3")
    before, after, held = data["before"]["all"], data["after"]["all"], data["held_out"]["all"]
    assert before["rows"] == after["rows"] == held["rows"] == 28
    assert after["mape_pct"] < before["mape_pct"] and after["mape_pct"] <= 10  # from the shipped H200 fit
    assert after["mape_pct"] <= held["mape_pct"]
    # every parameter within its physical range; those on a bound and those the rows cannot identify reported
    for name, value in data["parameters"].items():
        low, high = data["bounds"][name]
        assert low <= value <= high, name
        side = data["on_bounds"].get(name)
        if side is not None:
            assert value == pytest.approx(low if side == "lower" else high, abs=1e-4 * (high - low)), name
    assert "graph_kernel_s" not in data["parameters"]  # hf-eager replays no CUDA graph
    assert set(data["fixed"]) <= set(data["parameters"]) and set(data["fixed"]).isdisjoint(data["on_bounds"])
    # the fit's own predictions equal the SQL views' for the stored profile (up to the file's rounding)
    assert data["after_from_views"][0]["mape_pct"] == pytest.approx(after["mape_pct"], rel=1e-3)
    document = yaml.safe_load(out.read_text())[0]
    assert (document["name"], document["version"], document["execution"]) == ("hf-eager", 4, "hf-eager")
    loaded = run_command(["runtime", "add", str(out), "--db", registry_url])
    assert loaded.exit_code == 0 and "hf-eager@4" in loaded.stdout
    assert rows(registry_url, "SELECT origin FROM runtime_profiles WHERE name = 'hf-eager' AND version = 4") == [
        ("user",)]


def test_a_plain_name_keeps_its_pinned_version_after_calibrate(registry_url, tmp_path):
    """calibrate stores hf-eager@4 and says how to refer to it; a plain hf-eager still means the shipped @3, in
    every command, and every table shows the version."""
    _ingest(registry_url)
    table = run_command(["calibrate", "--hardware", "h200", "--runtime", "hf-eager", "--out",
                         str(tmp_path / "c.yaml"), "--db", registry_url])
    assert table.exit_code == 0, table.output
    assert "-> hf-eager@4 (stored)" in table.stdout
    assert "refer to it as hf-eager@4 (a plain hf-eager still means hf-eager@3)" in table.stdout
    assert re.search(r"^  \w+ +\S+ +\[.*\]  (on its (lower|upper) bound|fixed at the prior)", table.stdout,
                     re.MULTILINE)
    listing = run_command(["runtime", "list", "--db", registry_url]).stdout
    assert re.search(r"^hf-eager@3 +yes ", listing, re.MULTILINE) and re.search(r"^hf-eager@4 +no ", listing,
                                                                                re.MULTILINE)
    assert run_command(["runtime", "show", "hf-eager", "--db", registry_url]).stdout.startswith("hf-eager@3 ")
    assert run_command(["runtime", "show", "hf-eager@4", "--db", registry_url]).stdout.startswith("hf-eager@4 ")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("base: {profile: dsocr-base-v1, new_tokens: 8}\n"
                        "sweep: {hardware: [h200], runtime: [hf-eager, hf-eager@4]}\n")
    priced = json.loads(run_command(["whatif", "--scenario", str(scenario), "--db", registry_url,
                                     "--format", "json"]).stdout)
    assert sorted(p["runtime"] for p in priced["points"]) == ["hf-eager@3", "hf-eager@4"]
    missing = run_command(["runtime", "show", "hf-eager@9", "--db", registry_url])
    assert missing.exit_code == 2 and "known: hf-eager@3, hf-eager@4" in missing.stderr


def _legacy_runtime(registry_url):
    """A profile as stored before revision 0006 (none of its new columns set) in a registry at revision 0010, then
    `db upgrade`: revision 0011 gives it the values its readers assumed (hf-eager, no aten or module host time, no
    CUDA-graph decode)."""
    import sqlalchemy as sa

    from registry.store.db import Registry

    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            legacy = conn.execute(sa.text(
                "INSERT INTO runtime_profiles (name, version, description, source, kernel_launch_s, "
                "stage_call_overhead_s, decode_step_overhead_s, fused_bytes_factor, origin) VALUES ('legacy', 1, "
                "'', '', 1.75e-5, 3e-5, 7e-3, 1.0, 'shipped') RETURNING id")).scalar_one()
            conn.execute(sa.text(
                "INSERT INTO runtime_profile_categories (runtime_profile_id, category_id, compute_efficiency, "
                "bandwidth_efficiency, fused) SELECT :l, rc.category_id, rc.compute_efficiency, "
                "rc.bandwidth_efficiency, FALSE FROM runtime_profile_categories rc JOIN runtime_profiles p "
                "ON p.id = rc.runtime_profile_id WHERE p.name = 'hf-eager'"), {"l": legacy})
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0010'"))
    finally:
        registry.dispose()
    upgraded = run_command(["db", "upgrade", "--db", registry_url])
    assert upgraded.exit_code == 0 and f"0010 -> {HEAD}" in upgraded.output, upgraded.output
    assert rows(registry_url, "SELECT execution, aten_call_s, module_call_s, cuda_graph_decode FROM runtime_profiles "
                              "WHERE name = 'legacy'") == [("hf-eager", 0.0, 0.0, False)]


@pytest.mark.parametrize("runtime", ["hf-eager", "vllm", "legacy"])
def test_the_fit_evaluates_the_views_formula_row_by_row(registry_url, runtime):
    """calibrate.predict is the fit's fast evaluator of the pricing views' formula: held equal to the views on every
    timed row, for each shipped profile (vllm: reports traced under vllm, decode replayed from a CUDA graph) and for
    a profile stored before revision 0006."""
    from registry.pricing import calibrate
    from registry.store.db import Registry
    from registry.store.measurements import resolve

    if runtime == "legacy":
        _legacy_runtime(registry_url)
    stored = run_command(["ingest", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime", runtime,
                          "--db", registry_url])
    assert stored.exit_code == 0, stored.output
    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            hardware_id, runtime_id, _ = resolve(conn, "h200", runtime)
        profile = calibrate.Profile.load(registry, runtime_id)
        rows_used = calibrate.load_rows(registry, hardware_id, runtime_id)
        predicted_s = calibrate.predict(rows_used, profile)
    finally:
        registry.dispose()
    from_views_ms = [r[0] for r in rows(registry_url, "SELECT predicted_ms FROM v_predicted_vs_measured "
                                        "WHERE runtime = :n ORDER BY row_index", n=runtime)]
    assert len(from_views_ms) == len(predicted_s) == 28
    assert profile.cuda_graph_decode == (runtime == "vllm")
    assert profile.execution == ("vllm" if runtime == "vllm" else "hf-eager")
    assert rows_used.decode.any() and rows_used.stage_module_calls.sum() > 0
    assert list(1000.0 * predicted_s) == pytest.approx(from_views_ms, rel=1e-9)
    executions = rows(registry_url, "SELECT DISTINCT r.execution FROM measurements m "
                                    "JOIN reports r ON r.id = m.report_id")
    assert executions == [(profile.execution,)]  # the rows were analyzed under the runtime's execution


def test_the_fit_keeps_unidentified_parameters_and_reports_bounds():
    """On rows without decode steps or masked attention, a CUDA-graph profile's graph kernel time, decode step time
    and masked-attention efficiency are not identified: they stay at their priors and are reported as fixed."""
    import numpy as np

    from registry.pricing import calibrate

    categories = {name: {"compute_efficiency": 0.5, "bandwidth_efficiency": 0.8}
                  for name in ("matmul", "attention", "attention_masked", "conv", "other")}
    base = calibrate.Profile("vllm", 3e-6, 2e-6, 4e-6, 3e-4, 1e-3, True, 1.5e-6, 0.9, 8192, categories)
    rng = np.random.default_rng(1)
    terms = 40
    rows_used = calibrate.Rows(
        measured_s=np.zeros(8), kinds=["a", "b"] * 4, labels=[""] * 8, row_of_term=np.arange(terms) % 8,
        flops=rng.uniform(1e9, 1e13, terms), bytes_moved=rng.uniform(1e6, 1e10, terms),
        weight_bytes=np.zeros(terms), kv_cache_bytes=np.zeros(terms),
        launches=rng.integers(1, 500, terms).astype(float), op_calls=rng.integers(1, 2000, terms).astype(float),
        stage=np.full(terms, "vision", dtype=object), category=[["matmul", "attention", "conv", "other"][i % 4]
                                                                for i in range(terms)],
        row_of_stage=np.arange(8), stage_name=np.full(8, "vision", dtype=object), stage_calls=np.ones(8),
        stage_module_calls=rng.integers(10, 500, 8).astype(float), peak_flops_per_s=989e12,
        bandwidth_bytes_per_s=4.8e12)
    truth = base.copy()
    truth.categories["matmul"]["compute_efficiency"] = 0.7
    truth.aten_call_s = 2.5e-6
    rows_used.measured_s = calibrate.predict(rows_used, truth)
    result = calibrate.fit(rows_used, base, np.ones(8, dtype=bool))
    assert {"graph_kernel_s", "decode_step_overhead_s", "attention_masked_compute_efficiency"} <= set(result["fixed"])
    assert result["parameters"]["graph_kernel_s"] == 1.5e-6 and result["parameters"]["decode_step_overhead_s"] == 1e-3
    fitted = calibrate.predict(rows_used, result["profile"])
    assert np.max(np.abs(fitted - rows_used.measured_s) / rows_used.measured_s) < 1e-3
    for name, side in result["on_bounds"].items():
        low, high = result["bounds"][name]
        assert result["parameters"][name] == pytest.approx(low if side == "lower" else high, abs=1e-4 * (high - low))


def _bad_file(tmp_path, row):
    data = json.loads(H200_FILE.read_text())
    data["rows"].append(row)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("row,fragment", [
    ({"kind": "warp_drive", "median_ms": 1.0}, "unknown kind 'warp_drive'"),
    ({"kind": "prefill", "variant": "v7", "tokens": 300, "batch": 1, "median_ms": 1.0}, "unknown variant 'v7'"),
    ({"kind": "prefill", "variant": "v2", "tokens": 300, "batch": 1}, "missing median_ms"),
    ({"kind": "prefill", "variant": "v2", "tokens": 300, "batch": 1, "median_ms": -3.0}, "median_ms must be a time >= 0"),
    ({"kind": "vision_tower", "variant": "v2", "image": 999, "batch": 1, "median_ms": 1.0}, "no mode of ocr2 has views of 999 px"),
])
def test_bad_measurement_rows_write_nothing(registry_url, tmp_path, row, fragment):
    path = _bad_file(tmp_path, row)
    result = run_command(["ingest", "--measurements", str(path), "--hardware", "h200", "--runtime", "hf-eager",
                          "--db", registry_url])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "row 33" in lines[0]
    assert rows(registry_url, "SELECT COUNT(*) FROM measurement_sets") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM reports") == [(0,)]


def test_unknown_hardware_and_missing_options(registry_url):
    result = run_command(["ingest", "--measurements", str(H200_FILE), "--hardware", "h2000", "--runtime",
                          "hf-eager", "--db", registry_url])
    assert result.exit_code == 2 and "unknown hardware 'h2000' (did you mean 'h200'?)" in result.stderr
    missing = run_command(["ingest", "--measurements", str(H200_FILE), "--db", registry_url])
    assert missing.exit_code == 2 and "needs --hardware and --runtime" in missing.stderr
    assert rows(registry_url, "SELECT COUNT(*) FROM measurement_sets") == [(0,)]


def test_measure_without_a_gpu_says_so(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_command(["measure", "--variant", "v1", "--device", "cuda:0", "--out", str(out)])
    assert result.exit_code == 2
    assert "no CUDA device is available here" in result.stderr
    assert not out.exists()
    cpu = run_command(["measure", "--variant", "v1", "--device", "cpu", "--out", str(out)])
    assert cpu.exit_code == 2 and "give a CUDA device" in cpu.stderr
    unknown = run_command(["measure", "--variant", "v1", "--kinds", "vision,warp", "--out", str(out)])
    assert unknown.exit_code == 2 and "--kinds: unknown kind 'warp'" in unknown.stderr and not out.exists()


def test_the_h200_measurements_of_v1_are_linked_and_graph_steps_kept_as_references(registry_url):
    result = run_command(["ingest", "--measurements", str(REPO / "tests" / "data" / "h200-hf-eager-v1.json"),
                          "--hardware", "h200", "--runtime", "hf-eager", "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert rows(registry_url, "SELECT COUNT(*), SUM(CASE WHEN compared THEN 1 ELSE 0 END) FROM measurements") == [
        (64, 40)]
    # a CUDA-graph decode step at batch 32 and context 2048: the one decode step after a 2,047-token prefill
    (step,) = rows(registry_url, "SELECT w.prefill_tokens, w.batch, m.stage, m.compared FROM measurements m "
                                 "JOIN reports r ON r.id = m.report_id JOIN workloads w ON w.id = r.workload_id "
                                 "WHERE m.kind = 'graph_decode' AND w.batch = 32 AND w.prefill_tokens = 2047")
    assert step == (2047, 32, "decode", False)


# -- the rows as stored, and a file of many rows -------------------------------------------------------------------

STORED_ROWS = REPO / "tests" / "data" / "h200-measurement-rows.json"


def test_the_shipped_measurement_files_store_the_expected_rows(registry_url):
    """Every column of every stored row of the shipped files, against the rows stored by the row-at-a-time
    insert these files were first ingested with (the same on DuckDB and PostgreSQL); a row's report is named by its
    workload and execution."""
    expected = json.loads(STORED_ROWS.read_text())
    for stored in expected["sets"]:
        result = run_command(["ingest", "--measurements", str(REPO / "tests" / "data" / stored["file"]),
                              "--hardware", "h200", "--runtime", stored["runtime"], "--db", registry_url])
        assert result.exit_code == 0, result.output
        (set_id,) = re.search(r"stored as set (\d+):", result.stdout).groups()
        got = rows(registry_url, f"SELECT {', '.join('m.' + c for c in expected['columns'][:9])}, w.workload_hash, "
                                 "r.execution, m.stage, m.view_kind, m.compared, m.note, m.raw FROM measurements m "
                                 "LEFT JOIN reports r ON r.id = m.report_id "
                                 "LEFT JOIN workloads w ON w.id = r.workload_id "
                                 "WHERE m.measurement_set_id = :s ORDER BY m.row_index", s=int(set_id))
        assert [list(row) for row in got] == stored["rows"], stored["file"]


def _many_rows_file(tmp_path, count, edit=None):
    """The shipped OCR-2 file's rows repeated to `count` rows (each made distinct by its reps); `edit(rows)` may
    change them."""
    data = json.loads(H200_FILE.read_text())
    pattern = data["rows"]
    data["rows"] = [dict(pattern[i % len(pattern)], reps=i // len(pattern) + 1) for i in range(count)]
    if edit is not None:
        edit(data["rows"])
    path = tmp_path / f"many-{count}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_file_of_many_rows_goes_in_as_one_insert_each_workload_mapped_once(registry_url, tmp_path, monkeypatch):
    """33,000 rows of 28 timed rows' workloads: each distinct mapping built once, each distinct workload's report
    looked up once, and one bulk insert of all the rows."""
    import registry.store.ingest as ingest
    import registry.store.measurements as measurements
    import registry.store.analyzed as analyzed

    assert _ingest(registry_url).exit_code == 0  # the workloads' reports, analyzed once
    path = _many_rows_file(tmp_path, 33_000)
    counts = {"mapped": 0, "looked_up": 0, "inserts": []}
    map_timed_row, find_reports, bulk_insert = measurements._map_timed_row, analyzed.find_reports, ingest.bulk_insert

    def counted_map(*args, **kwargs):
        counts["mapped"] += 1
        return map_timed_row(*args, **kwargs)

    def counted_find(conn, workloads, *args, **kwargs):
        counts["looked_up"] += len(workloads)
        return find_reports(conn, workloads, *args, **kwargs)

    def counted_insert(conn, table, columns):
        if table == "measurements":
            counts["inserts"].append(len(columns["row_index"]))
        return bulk_insert(conn, table, columns)

    monkeypatch.setattr(measurements, "_map_timed_row", counted_map)
    monkeypatch.setattr(analyzed, "find_reports", counted_find)
    monkeypatch.setattr(ingest, "bulk_insert", counted_insert)
    result = run_command(["ingest", "--measurements", str(path), "--hardware", "h200", "--runtime", "hf-eager",
                          "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert "stored as set 2: 33000 rows, 28000 timed rows to compare" in result.stdout
    # the shipped file: 29 rows with a workload (28 compared, one of eager experts), of fewer distinct workloads
    ((linked, distinct),) = rows(registry_url, "SELECT COUNT(report_id), COUNT(DISTINCT report_id) FROM measurements "
                                               "WHERE measurement_set_id = 1")
    assert (linked, counts["mapped"], counts["looked_up"]) == (29, 29, distinct) and distinct < 29
    assert counts["inserts"] == [33_000]
    assert rows(registry_url, "SELECT COUNT(*), COUNT(report_id), SUM(reps) FROM measurements "
                              "WHERE measurement_set_id = 2") == [
        (33_000, 29_000, sum(i // 33 + 1 for i in range(33_000)))]
    # the same rows as the shipped file's, but for their reps
    same = rows(registry_url, "SELECT COUNT(*) FROM measurements a JOIN measurements b ON b.measurement_set_id = 2 "
                              "AND b.row_index % 33 = a.row_index WHERE a.measurement_set_id = 1 "
                              "AND a.kind = b.kind AND a.workload = b.workload "
                              "AND a.median_ms IS NOT DISTINCT FROM b.median_ms "
                              "AND a.report_id IS NOT DISTINCT FROM b.report_id "
                              "AND a.compared = b.compared AND a.note = b.note")
    assert same == [(33_000,)]


@pytest.mark.parametrize("edit, fragment", [
    # equal to the rows before it but for the type of one value: a float batch is still refused
    (lambda r: r[32_000].update(batch=float(r[32_000]["batch"])), "row 32000: batch must be an integer >= 1, got 1.0"),
    (lambda r: r[32_001].update(reps=2**31), "row 32001: reps: 2147483648 does not fit the registry (it holds "
                                             "32-bit integers)"),
    (lambda r: r[32_002].update(kind="warp_drive"), "row 32002: unknown kind 'warp_drive'"),
])
def test_a_bad_row_late_in_a_large_file_is_named_and_nothing_is_stored(registry_url, tmp_path, edit, fragment):
    path = _many_rows_file(tmp_path, 33_000, edit)
    result = run_command(["ingest", "--measurements", str(path), "--hardware", "h200", "--runtime", "hf-eager",
                          "--db", registry_url])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert rows(registry_url, "SELECT COUNT(*) FROM measurement_sets") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM measurements") == [(0,)]
