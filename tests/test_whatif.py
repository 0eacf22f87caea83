"""What-if pricing: scenario files, the views against a Python re-computation, bad scenarios, catalogs, plots."""

import json
import math
import random
import subprocess
import sys

import jsonschema
import pytest
import yaml

from analyzer.report import load_report
from registry.catalog import parse_hardware, parse_runtimes, shipped
from registry.db import Registry
from registry.whatif import Scenario, run_scenario
from tests.helpers import REPO, rows, run_command

EXAMPLES = REPO / "queries" / "examples"


def test_capacity_example_runs_and_records_its_points(registry_url):
    result = run_command(["whatif", "--scenario", str(EXAMPLES / "capacity.yaml"), "--db", registry_url,
                          "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    points = data["points"]
    assert len(points) == 3 * 2 * 2 * 2  # hardware x runtime x mode x batch
    costs = [p["gpu_seconds_per_page"] for p in points]
    assert costs == sorted(costs) and all(c > 0 for c in costs)  # all fit: sorted by cost alone
    for p in points:
        assert p["page_latency_s"] == pytest.approx(p["vision_s"] + p["projector_s"] + p["prefill_s"] + p["decode_s"])
        assert p["pages_per_s"] == pytest.approx(p["batch"] / p["page_latency_s"])
        assert p["gpus_needed"] == math.ceil(1_000_000 / p["pages_per_gpu_day"])
        assert p["fits_in_memory"] is True
    assert rows(registry_url, "SELECT COUNT(*) FROM scenario_points WHERE scenario_id = :s",
                s=data["scenario_id"]) == [(24,)]
    reports_before = rows(registry_url, "SELECT COUNT(*) FROM reports")
    again = run_command(["whatif", "--scenario", str(EXAMPLES / "capacity.yaml"), "--db", registry_url])
    assert again.exit_code == 0
    assert "cheapest that fits: h200 / vllm / base at batch 16" in again.stdout and "GPU-s/page" in again.stdout
    assert rows(registry_url, "SELECT COUNT(*) FROM reports") == reports_before  # nothing analyzed again
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(2,)]


@pytest.fixture
def ingested(registry_url, report_files):
    run_command(["ingest", *(str(p) for p in report_files.values()), "--db", registry_url])
    return registry_url


def _python_point(report, hardware, runtime, peak, bandwidth, scale):
    """The pricing formula, recomputed from the report object (the test's independent re-implementation)."""
    stage_time = {}
    for snap in report.module_metrics:
        for op in snap.operators:
            category = runtime["categories"][op.category_id.value]
            moved = (op.bytes_read + op.bytes_written) * (runtime["fused_bytes_factor"] if category["fused"] else 1.0)
            kernel = max(op.flops / (peak * category["compute_efficiency"] * scale),
                         moved / (bandwidth * category["bandwidth_efficiency"] * scale))
            launches = 0 if category["fused"] else op.kernel_launches
            key = (snap.stage.value, snap.view_kind.value)
            stage_time[key] = stage_time.get(key, 0.0) + kernel + launches * runtime["kernel_launch_s"]
    total = 0.0
    for stage in report.stages:
        host = (stage.calls * runtime["decode_step_overhead_s"] if stage.stage.value == "decode"
                else runtime["stage_call_overhead_s"])
        total += stage_time.get((stage.stage.value, stage.view_kind.value), 0.0) + host
    memory = report.weight_bytes + max(s.kv_cache_bytes for s in report.stages) + max(
        s.activation_peak_bytes for s in report.stages)
    return {"page_latency_s": total, "pages_per_s": report.workload.batch / total, "memory_needed_bytes": memory,
            "fits_in_memory": memory <= hardware["memory_bytes"]}


def test_views_equal_a_python_recomputation_at_random_points(ingested, report_files):
    catalog = {h["name"]: h for h in parse_hardware(yaml.safe_load(shipped("hardware.yaml")), "hardware")}
    runtimes = {r["name"]: r for r in parse_runtimes(yaml.safe_load(shipped("runtimes.yaml")), "runtimes")}
    rng = random.Random(7)
    registry = Registry(ingested)
    try:
        for name in ("standard", "ocr2", "base"):
            report = load_report(report_files[name])
            hardware = rng.choice(sorted(catalog))
            runtime = rng.choice(sorted(runtimes))
            overrides = {"peak_tflops": rng.uniform(100, 1500), "memory_tb_per_s": rng.uniform(0.5, 6),
                         "efficiency_scale": rng.uniform(0.5, 1.2)}
            w = report.workload
            base = {"profile": w.profile_id, "new_tokens": w.new_tokens}
            scenario = Scenario(name="random", source="test", lines={}, data={
                "base": base, "sweep": {"hardware": [hardware], "runtime": [runtime], "batch": [w.batch]},
                "overrides": overrides})
            _, points = run_scenario(registry, scenario)
            (point,) = points
            assert point["report_id"] == report.report_id  # the stored report was reused, not re-analyzed
            expected = _python_point(report, catalog[hardware], runtimes[runtime], overrides["peak_tflops"] * 1e12,
                                     overrides["memory_tb_per_s"] * 1e12, overrides["efficiency_scale"])
            for key, value in expected.items():
                assert point[key] == pytest.approx(value, rel=1e-9), (name, key)
    finally:
        registry.dispose()


@pytest.mark.parametrize("text,fragment", [
    ("sweep:\n  hardware: [h100-sxm]\n  hardwre: [h200]\n", ":3: sweep.hardwre: unknown key (did you mean 'hardware'?)"),
    ("sweep:\n  hardware: [h100-sxm, h20O]\n", "unknown hardware 'h20O' (did you mean 'h200'?)"),
    ("base: {profile: dsocr-base-v1}\nsweep:\n  hardware: [h200]\n  batch: [4, -2]\n", ":4: sweep.batch: batch must be >= 1"),
    ("sweep:\n  hardware: []\n", ":2: sweep.hardware: is empty"),
    ("sweep:\n  hardware: [h200]\n  runtime: [vlm]\n", "unknown runtime 'vlm' (did you mean 'vllm'?)"),
    ("sweep: {hardware: [h200]\noops\n", "malformed YAML"),
    ("name: x\nsweep: {hardware: [h200]}: 2\n", ":2: malformed YAML (mapping values are not allowed"),
    ("speed: 3\nsweep: {hardware: [h200]}\n", ":1: speed: unknown key"),
    ("base: {profile: dsocr-base-v1}\nsweep: {hardware: [h200]}\noverrides: {peak_tflops: -5}\n",
     "overrides.peak_tflops: must be a positive number"),
    ("base: {profile: nope}\nsweep: {hardware: [h200]}\n", "unknown workload profile 'nope'"),
])
def test_bad_scenarios_give_one_line_and_record_nothing(ingested, tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_command(["whatif", "--scenario", str(path), "--db", ingested])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and str(path) in lines[0], lines
    assert rows(ingested, "SELECT COUNT(*) FROM scenarios") == [(0,)]
    assert rows(ingested, "SELECT COUNT(*) FROM scenario_points") == [(0,)]


def test_example_scenarios_follow_the_shipped_json_schema():
    schema = json.loads((REPO / "registry" / "data" / "scenario.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sweep": {"hardware": ["h200"], "hardwre": []}}, schema)


def test_hardware_and_runtime_commands(registry_url, tmp_path):
    listing = run_command(["hardware", "list", "--db", registry_url])
    assert listing.exit_code == 0
    for name in ("h100-sxm", "h200", "a100-40g", "a100-80g", "l40s", "rtx-4090"):
        assert name in listing.stdout
    show = run_command(["hardware", "show", "h200", "--db", registry_url])
    assert "989.0 TFLOP/s" in show.stdout and "141 GB" in show.stdout and "4.800 TB/s" in show.stdout
    typo = run_command(["hardware", "show", "h20", "--db", registry_url])
    assert typo.exit_code == 2 and "did you mean 'h200'?" in typo.stderr
    custom = tmp_path / "gpus.yaml"
    custom.write_text("- name: b200\n  dense_bf16_tflops: 2250\n  memory_tb_per_s: 8\n  memory_gb: 180\n"
                      "  source: vendor figures\n")
    added = run_command(["hardware", "add", str(custom), "--db", registry_url])
    assert added.exit_code == 0 and "b200" in added.stdout
    assert rows(registry_url, "SELECT memory_bytes, origin FROM hardware WHERE name = 'b200'") == [
        (180_000_000_000, "user")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: x\n  dense_bf16_tflops: -1\n  memory_tb_per_s: 1\n  memory_gb: 1\n")
    refused = run_command(["hardware", "add", str(bad), "--db", registry_url])
    assert refused.exit_code == 2 and "dense_bf16_tflops must be between 0.001 and 1e+06" in refused.stderr
    bytes_for_gb = tmp_path / "slip.yaml"
    bytes_for_gb.write_text("- name: slip\n  dense_bf16_tflops: 100\n  memory_tb_per_s: 1\n  memory_gb: 1e11\n")
    refused = run_command(["hardware", "add", str(bytes_for_gb), "--db", registry_url])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "memory_gb must be between 0.001 and 1e+06, got 100000000000.0" in refused.stderr
    runtimes = run_command(["runtime", "list", "--db", registry_url])
    assert "hf-eager" in runtimes.stdout and "vllm" in runtimes.stdout
    vllm = run_command(["runtime", "show", "vllm", "--db", registry_url])
    assert "elementwise" in vllm.stdout and " yes" in vllm.stdout  # fused categories


def test_a_statement_the_database_refuses_is_one_line_and_writes_nothing(registry_url, tmp_path, monkeypatch):
    """Registry.begin turns any refused statement into one line; here a memory size no BIGINT column holds."""
    from registry import catalog

    parse = catalog.parse_hardware
    monkeypatch.setattr(catalog, "parse_hardware",
                        lambda data, label: [dict(row, memory_bytes=10**20) for row in parse(data, label)])
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text("- name: first\n  dense_bf16_tflops: 100\n  memory_tb_per_s: 1\n  memory_gb: 80\n"
                    "- name: second\n  dense_bf16_tflops: 100\n  memory_tb_per_s: 1\n  memory_gb: 80\n")
    result = run_command(["hardware", "add", str(gpus), "--db", registry_url])
    assert result.exit_code == 2
    assert result.stderr.startswith("dsocr-registry: error: database error: ") and result.stderr.count("\n") == 1
    assert rows(registry_url, "SELECT COUNT(*) FROM hardware WHERE name IN ('first', 'second')") == [(0,)]


def test_plot_and_csv(ingested, tmp_path):
    plot = tmp_path / "plan.png"
    result = run_command(["whatif", "--scenario", str(EXAMPLES / "batch-memory.yaml"), "--db", ingested,
                          "--format", "csv", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("point_index,hardware,runtime") and len(lines) == 1 + 2 * 4 * 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    bad = run_command(["whatif", "--scenario", str(EXAMPLES / "batch-memory.yaml"), "--db", ingested,
                       "--plot", str(tmp_path / "plan.svg")])
    assert bad.exit_code == 2 and "PNG" in bad.stderr


def test_memory_fit_and_largest_batch(ingested):
    result = run_command(["whatif", "--scenario", str(EXAMPLES / "batch-memory.yaml"), "--db", ingested,
                          "--format", "json"])
    points = json.loads(result.stdout)["points"]
    for p in points:
        assert p["fits_in_memory"] == (p["memory_needed_bytes"] <= (24e9 if p["hardware"] == "rtx-4090" else 48e9))
        if p["max_batch_in_memory"] is not None:
            assert (p["batch"] <= p["max_batch_in_memory"]) == p["fits_in_memory"]
    assert any(not p["fits_in_memory"] for p in points)  # batch 64 does not fit in 24 GB
    fits = [p["fits_in_memory"] for p in points]
    assert fits == sorted(fits, reverse=True)  # what fits comes first


def test_seed_what_if_script(report_files):
    script = REPO / "scripts" / "analytical" / "dsocr_analytic_what_if.py"
    done = subprocess.run([sys.executable, str(script), "--report", str(report_files["standard"]), "--peak-tflops",
                           "989", "--batch-scale", "8", "--hardware", "h200"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "batch 8 on h200 / hf-eager, peak 989 TFLOP/s" in done.stdout
    assert "page latency" in done.stdout and "top 15 modules by FLOPs" in done.stdout
    bad = subprocess.run([sys.executable, str(script), "--report", "/nonexistent.json"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2
