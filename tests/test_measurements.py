"""Measured vs predicted: measurement ingest, compare, calibrate, measure without a GPU."""

import json
import re

import numpy as np
import pytest

from tests.helpers import REPO, rows, run_command

H200_FILE = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"


def _ingest(url, runtime="hf-eager@1"):
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
                          "hf-eager@1", "--db", registry_url, "--format", "json"])
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
                         "hf-eager@1", "--db", registry_url])
    assert re.search(r"^all +28 +54\.4 +254\.3 +1271\.3$", table.stdout, re.MULTILINE)  # median, mean, max APE %


def test_calibration_improves_and_reports_held_out_error(registry_url, tmp_path):
    _ingest(registry_url)
    out = tmp_path / "calibrated.yaml"
    result = run_command(["calibrate", "--hardware", "h200", "--runtime", "hf-eager@1", "--out", str(out),
                          "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["profile"] == "hf-eager@2"
    before, after, held = data["before"]["all"], data["after"]["all"], data["held_out"]["all"]
    assert before["rows"] == after["rows"] == held["rows"] == 28
    assert after["mape_pct"] < before["mape_pct"] / 5
    assert after["mape_pct"] <= held["mape_pct"]
    # the fit's own predictions equal the SQL views' for the stored profile (up to the file's rounding)
    assert data["after_from_views"][0]["mape_pct"] == pytest.approx(after["mape_pct"], rel=1e-3)
    loaded = run_command(["runtime", "add", str(out), "--db", registry_url])
    assert loaded.exit_code == 0 and "hf-eager@2" in loaded.stdout
    assert rows(registry_url, "SELECT origin FROM runtime_profiles WHERE name = 'hf-eager' AND version = 2") == [
        ("user",)]


@pytest.mark.parametrize("runtime", ["hf-eager", "hf-eager-h200", "vllm"])
def test_the_fit_evaluates_the_views_formula_row_by_row(registry_url, runtime):
    """calibrate.predict is the fit's fast evaluator of the pricing views' formula: held equal to the views on every
    timed row, for unfused profiles and for vllm, whose fused categories move fewer bytes and launch nothing."""
    from registry import calibrate
    from registry.db import Registry
    from registry.measurements import resolve

    stored = run_command(["ingest", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime", runtime,
                          "--db", registry_url])
    assert stored.exit_code == 0, stored.output
    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            hardware_id, runtime_id, _ = resolve(conn, "h200", runtime)
        profile = calibrate.Profile.load(registry, runtime_id)
        predicted_s = calibrate.predict(calibrate.load_rows(registry, hardware_id, runtime_id), profile)
    finally:
        registry.dispose()
    from_views_ms = [r[0] for r in rows(registry_url, "SELECT predicted_ms FROM v_predicted_vs_measured "
                                        "WHERE runtime = :n ORDER BY row_index", n=runtime)]
    assert len(from_views_ms) == len(predicted_s) == 28
    assert any(c["fused"] for c in profile.categories.values()) == (runtime == "vllm")
    assert list(1000.0 * predicted_s) == pytest.approx(from_views_ms, rel=1e-9)


def test_shipped_h200_profile_is_the_calibrated_one(registry_url):
    result = run_command(["compare", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime",
                          "hf-eager-h200", "--db", registry_url, "--format", "json"])
    summary = json.loads(result.stdout)["summary"]
    assert summary["rows"] == 28 and summary["mape_pct"] < 12


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
