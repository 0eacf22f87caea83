"""What-if pricing: scenario files, the views against a Python re-computation, bad scenarios, catalogs, plots."""

import json
import math
import random
import re
import subprocess
import sys

import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from analyzer.report import load_report
from registry.pricing.catalog import parse_hardware, parse_runtimes, shipped
from registry.store.db import Registry
from registry.pricing.whatif import Scenario, price_scenario
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
    assert "cheapest that fits: h200 / vllm@3 / base at batch 16" in again.stdout and "GPU-s/page" in again.stdout
    assert "hf-eager@3" in again.stdout  # every table names the runtime's version
    assert rows(registry_url, "SELECT COUNT(*) FROM reports") == reports_before  # nothing analyzed again
    # the same file on the same registry: the same scenario, no new rows; --new-run records it again
    assert f"(id {data['scenario_id']}, recorded before)" in again.stdout
    assert rows(registry_url, "SELECT COUNT(*), MIN(kind) FROM scenarios") == [(1, "what-if")]
    assert rows(registry_url, "SELECT COUNT(*) FROM scenario_points") == [(24,)]
    fresh = run_command(["whatif", "--scenario", str(EXAMPLES / "capacity.yaml"), "--db", registry_url,
                         "--new-run", "--format", "json"])
    assert json.loads(fresh.stdout)["scenario_id"] != data["scenario_id"]
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(2,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM scenario_points") == [(48,)]


@pytest.fixture
def ingested(registry_url, report_files):
    run_command(["ingest", *(str(p) for p in report_files.values()), "--db", registry_url])
    return registry_url


def _python_point(report, hardware, runtime, peak, bandwidth, scale):
    """The pricing formula, recomputed from the report object (the test's independent re-implementation)."""
    graph = runtime["cuda_graph_decode"]
    operators, module_calls = {}, {}
    for snap in report.module_metrics:
        key = (snap.stage.value, snap.view_kind.value)
        module_calls[key] = module_calls.get(key, 0) + snap.forward_calls
        for op in snap.operators:
            category = runtime["categories"][op.category_id.value]
            compute = op.flops / (peak * category["compute_efficiency"] * scale)
            memory = (op.bytes_read + op.bytes_written) / (bandwidth * category["bandwidth_efficiency"] * scale)
            if graph and key[0] == "decode":
                dispatch = op.kernel_launches * runtime["graph_kernel_s"]
            else:
                dispatch = op.op_calls * runtime["aten_call_s"] + op.kernel_launches * runtime["kernel_launch_s"]
            operators[key] = operators.get(key, 0.0) + max(compute, memory, dispatch)
    total = 0.0
    for stage in report.stages:
        key = (stage.stage.value, stage.view_kind.value)
        decode = stage.stage.value == "decode"
        host = 0.0 if graph and decode else module_calls.get(key, 0) * runtime["module_call_s"]
        host += stage.calls * (runtime["decode_step_overhead_s"] if decode else runtime["stage_call_overhead_s"])
        total += operators.get(key, 0.0) + host
    expected = {"page_latency_s": total, "pages_per_s": report.workload.batch / total}
    expected.update(_python_memory(report, runtime, hardware["memory_bytes"]))
    return expected


def _python_memory(report, runtime, memory_bytes):
    """Memory at a point by the runtime's execution (the test's own reading of the rule)."""
    w = report.workload
    if runtime["execution"] == "hf-eager":
        live = max(s.activation_peak_bytes + s.kv_cache_bytes for s in report.stages)
        needed = report.weight_bytes + live
        return {"memory_needed_bytes": needed, "fits_in_memory": needed <= memory_bytes, "kv_pool_bytes": None,
                "max_batch_in_memory": max(math.floor((memory_bytes - report.weight_bytes) * w.batch / live), 0)}
    prefill = next(s for s in report.stages if s.stage.value == "prefill")
    per_token = prefill.activation_peak_bytes / (prefill.items * prefill.tokens_per_item)
    vision = max(s.activation_peak_bytes for s in report.stages if s.stage.value in ("vision", "projector"))
    step = math.ceil(max(per_token * runtime["max_num_batched_tokens"], vision))
    per_sequence = report.kv_cache_bytes_per_token * (w.prefill_tokens + w.new_tokens)
    budget = math.floor(runtime["gpu_memory_utilization"] * memory_bytes)
    pool = budget - report.weight_bytes - step
    needed = report.weight_bytes + step + w.batch * per_sequence
    return {"memory_needed_bytes": needed, "fits_in_memory": needed <= budget, "kv_pool_bytes": pool,
            "memory_budget_bytes": budget, "max_batch_in_memory": max(pool // per_sequence, 0)}


@pytest.mark.parametrize("runtime", ["hf-eager", "vllm"])
def test_views_equal_a_python_recomputation_at_random_points(ingested, report_files, runtime):
    catalog = {h["name"]: h for h in parse_hardware(yaml.safe_load(shipped("hardware.yaml")), "hardware")}
    runtimes = {r["name"]: r for r in parse_runtimes(yaml.safe_load(shipped("runtimes.yaml")), "runtimes")}
    rng = random.Random(7)
    registry = Registry(ingested)
    try:
        profiles = {"standard": "dsocr-standard-v1", "ocr2": "dsocr-standard-ocr2", "base": "dsocr-base-v1"}
        for name, profile in profiles.items():
            stored = load_report(report_files[name])
            hardware = rng.choice(sorted(catalog))
            overrides = {"peak_tflops": rng.uniform(100, 1500), "memory_tb_per_s": rng.uniform(0.5, 6),
                         "efficiency_scale": rng.uniform(0.5, 1.2)}
            w = stored.workload
            base = {"profile": profile, "new_tokens": w.new_tokens}
            scenario = Scenario(name="random", source="test", lines={}, data={
                "base": base, "sweep": {"hardware": [hardware], "runtime": [runtime], "batch": [w.batch]},
                "overrides": overrides})
            points = price_scenario(registry, scenario).points
            (point,) = points
            assert point["runtime"] == f"{runtime}@{runtimes[runtime]['version']}"
            assert point["execution"] == runtime
            if runtime == "hf-eager":
                assert point["report_id"] == stored.report_id  # the stored report was reused, not re-analyzed
                report = stored
            else:  # priced on the report of the runtime's own execution, analyzed for the point
                (report_id,) = rows(ingested, "SELECT report_id FROM reports WHERE execution = 'vllm' "
                                              "AND report_id = :r", r=point["report_id"])[0]
                from registry.store.stored import load_stored_report

                report = load_stored_report(registry, report_id)
                assert report.execution.value == "vllm" and report.workload == stored.workload
            expected = _python_point(report, catalog[hardware], runtimes[runtime], overrides["peak_tflops"] * 1e12,
                                     overrides["memory_tb_per_s"] * 1e12, overrides["efficiency_scale"])
            for key, value in expected.items():
                if value is None or isinstance(value, bool):
                    assert point[key] == value, (name, key)
                else:
                    assert point[key] == pytest.approx(value, rel=1e-9), (name, key)
    finally:
        registry.dispose()


def test_stage_time_parts_add_up_and_name_the_bound(ingested, report_files):
    """v_point_stage_time: stage time = operator time + host time; operator time splits by the bound that sets each
    row; graph-replayed decode has no module host time and no aten dispatch."""
    registry = Registry(ingested)
    try:
        scenario = Scenario(name="parts", source="test", lines={}, data={
            "base": {"profile": "dsocr-standard-v1"}, "sweep": {"hardware": ["h200"], "runtime": ["hf-eager", "vllm"]}})
        scenario_id = price_scenario(registry, scenario).scenario_id
    finally:
        registry.dispose()
    parts = rows(ingested, "SELECT p.runtime, t.stage, t.op_time_s, t.compute_set_s, t.memory_set_s, "
                           "t.dispatch_set_s, t.module_host_s, t.call_host_s, t.host_s, t.stage_time_s, t.kernel_s, "
                           "t.dispatch_s, t.module_calls FROM v_point_stage_time t JOIN v_point_summary p "
                           "ON p.scenario_id = t.scenario_id AND p.point_index = t.point_index "
                           "WHERE t.scenario_id = :s", s=scenario_id)
    assert {(r[0], r[1]) for r in parts} >= {("hf-eager", "decode"), ("vllm", "decode"), ("vllm", "vision")}
    for runtime, stage, op_time, c, m, d, module_host, call_host, host, total, kernel, dispatch, modules in parts:
        assert c + m + d == pytest.approx(op_time, rel=1e-12)
        assert host == pytest.approx(module_host + call_host, rel=1e-12)
        assert total == pytest.approx(op_time + host, rel=1e-12)
        assert op_time >= max(kernel, dispatch) * (1 - 1e-12) and modules > 0
        if runtime == "vllm" and stage == "decode":
            assert module_host == 0.0
    hf_decode = next(r for r in parts if r[:2] == ("hf-eager", "decode"))
    assert hf_decode[5] > hf_decode[3] + hf_decode[4]  # eager batch-1 decode is dispatch-bound
    # each stage prices its operator cost groups: the same seconds as its operator rows, one by one
    by_rows = rows(ingested, "SELECT point_index, stage, view_kind, COUNT(*), SUM(op_time_s), SUM(kernel_s), "
                             "SUM(dispatch_s), SUM(CASE WHEN bound = 'dispatch' THEN op_time_s ELSE 0 END) "
                             "FROM v_point_operator_time WHERE scenario_id = :s GROUP BY point_index, stage, view_kind "
                             "ORDER BY 1, 2, 3", s=scenario_id)
    by_groups = rows(ingested, "SELECT t.point_index, t.stage, t.view_kind, g.operator_rows, t.op_time_s, t.kernel_s, "
                               "t.dispatch_s, t.dispatch_set_s FROM v_point_stage_time t JOIN (SELECT point_index, "
                               "stage, view_kind, SUM(operator_rows) AS operator_rows FROM v_point_cost_group_time "
                               "WHERE scenario_id = :s GROUP BY point_index, stage, view_kind) g ON g.point_index = "
                               "t.point_index AND g.stage = t.stage AND g.view_kind = t.view_kind "
                               "WHERE t.scenario_id = :s ORDER BY 1, 2, 3", s=scenario_id)
    (operator_rows,) = rows(ingested, "SELECT COUNT(*) FROM operator_metrics o JOIN scenario_points p "
                                      "ON p.report_id = o.report_id WHERE p.scenario_id = :s", s=scenario_id)[0]
    assert len(by_rows) == len(parts) == len(by_groups) and sum(r[3] for r in by_rows) == operator_rows == 3_850
    for one_by_one, grouped in zip(by_rows, by_groups):
        assert one_by_one[:4] == grouped[:4]
        assert one_by_one[4:] == pytest.approx(grouped[4:], rel=1e-12)
    bounds = {r[0] for r in rows(ingested, "SELECT DISTINCT bound FROM v_point_operator_time WHERE scenario_id = :s",
                                 s=scenario_id)}
    assert bounds <= {"compute", "memory", "dispatch"} and "dispatch" in bounds


def test_memory_by_execution_against_a_hand_computation(registry_url, standard_v1_report):
    """v1 standard page on h100-sxm (80 GB): 3,335,504,128 bf16 parameters, 61,440 KV bytes per token, 912 prefill
    + 512 new tokens."""
    assert (standard_v1_report.weight_bytes, standard_v1_report.kv_cache_bytes_per_token) == (6_671_008_256, 61_440)
    stages = {(s.stage.value, s.view_kind.value): s for s in standard_v1_report.stages}
    prefill, decode = stages[("prefill", "")], stages[("decode", "")]
    assert (prefill.kv_cache_bytes, decode.kv_cache_bytes) == (61_440 * 912, 61_440 * 1_423)
    scenario = {"base": {"profile": "dsocr-standard-v1"}, "sweep": {"hardware": ["h100-sxm"],
                                                                     "runtime": ["hf-eager", "vllm"]}}
    registry = Registry(registry_url)
    try:
        points = price_scenario(registry, Scenario(name="memory", source="test", lines={}, data=scenario)).points
    finally:
        registry.dispose()
    by_runtime = {p["execution"]: p for p in points}
    # hf-eager: weights + the largest live set (vision peak; prefill peak + its KV; decode peak + the final KV)
    live = max(stages[("vision", "global")].activation_peak_bytes, stages[("vision", "tile")].activation_peak_bytes,
               prefill.activation_peak_bytes + 56_033_280, decode.activation_peak_bytes + 87_429_120)
    eager = by_runtime["hf-eager"]
    assert eager["memory_needed_bytes"] == 6_671_008_256 + live
    assert eager["memory_budget_bytes"] == 80_000_000_000 and eager["kv_pool_bytes"] is None
    assert eager["max_batch_in_memory"] == (80_000_000_000 - 6_671_008_256) // live
    vision_peak = max(stages[("vision", "global")].activation_peak_bytes, stages[("vision", "tile")].activation_peak_bytes)
    assert eager["memory_needed_bytes"] < 6_671_008_256 + vision_peak + 87_429_120  # not vision + KV summed
    # vllm: 0.9 x 80 GB = 72,000,000,000; step peak = max(prefill activation per token x 8192, one vision call)
    vllm_report = rows(registry_url, "SELECT s.stage, s.view_kind, s.activation_peak_bytes, s.items, "
                                     "s.tokens_per_item FROM report_stages s JOIN reports r ON r.id = s.report_id "
                                     "WHERE r.report_id = :r", r=by_runtime["vllm"]["report_id"])
    peaks = {(st, vk): (peak, items, tokens) for st, vk, peak, items, tokens in vllm_report}
    peak, items, tokens = peaks[("prefill", "")]
    step = math.ceil(max(peak / (items * tokens) * 8192,
                         *(p for (st, _), (p, _, _) in peaks.items() if st in ("vision", "projector"))))
    pool = 72_000_000_000 - 6_671_008_256 - step
    per_sequence = 61_440 * (912 + 512)
    assert per_sequence == 87_490_560
    vllm = by_runtime["vllm"]
    assert vllm["memory_budget_bytes"] == 72_000_000_000 and vllm["kv_pool_bytes"] == pool
    assert vllm["max_batch_in_memory"] == pool // 87_490_560
    assert vllm["memory_needed_bytes"] == 6_671_008_256 + step + 87_490_560
    assert 650 < vllm["max_batch_in_memory"] < 800  # ~64 GB of KV pool for ~87 MB per page


@pytest.mark.parametrize("text,fragment", [
    ("sweep:\n  hardware: [h100-sxm]\n  hardwre: [h200]\n", ":3: sweep.hardwre: unknown key (did you mean 'hardware'?)"),
    ("sweep:\n  hardware: [h100-sxm, h20O]\n", "unknown hardware 'h20O' (did you mean 'h20'?)"),
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
    typo = run_command(["hardware", "show", "h2000", "--db", registry_url])
    assert typo.exit_code == 2 and "did you mean 'h200'?" in typo.stderr
    # a name the user shortened: the names that start with it first, then those that contain it
    for short, meant in (("h100", "'h100-pcie' or 'h100-sxm'"), ("a100", "'a100-40g' or 'a100-80g'"),
                         ("4090", "'rtx-4090'")):
        shortened = run_command(["hardware", "show", short, "--db", registry_url])
        assert shortened.exit_code == 2 and f"(did you mean {meant}?)" in shortened.stderr, shortened.stderr
    assert "did you mean 'vllm'?" in run_command(["runtime", "show", "vlm", "--db", registry_url]).stderr
    custom = tmp_path / "gpus.yaml"
    custom.write_text("- name: b300\n  dense_bf16_tflops: 2250\n  memory_tb_per_s: 8\n  memory_gb: 180\n"
                      "  source: vendor figures\n")
    added = run_command(["hardware", "add", str(custom), "--db", registry_url])
    assert added.exit_code == 0 and "b300" in added.stdout
    assert rows(registry_url, "SELECT memory_bytes, origin FROM hardware WHERE name = 'b300'") == [
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
    assert re.search(r"^hf-eager@3 +yes +hf-eager ", runtimes.stdout, re.MULTILINE), runtimes.stdout
    assert re.search(r"^vllm@3 +yes +vllm ", runtimes.stdout, re.MULTILINE)
    vllm = run_command(["runtime", "show", "vllm", "--db", registry_url])
    assert vllm.stdout.startswith("vllm@3 (shipped): ") and "attention_masked" in vllm.stdout
    assert "CUDA-graph decode        yes, 0.7 us" in vllm.stdout and "max_num_batched_tokens   8,192" in vllm.stdout
    assert "fused" not in vllm.stdout.split("category")[1]  # no fused column


def _runtime_entry(name="hf-eager", **changes):
    entry = next(e for e in yaml.safe_load(shipped("runtimes.yaml")) if e["name"] == name)
    entry = {**entry, "name": "mine", "version": 1}
    for key, value in changes.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return entry


def _with_category(name, category, values):
    entry = _runtime_entry(name)
    entry["categories"] = {**entry["categories"], category: values}
    return entry


@pytest.mark.parametrize("entry,fragment", [
    (_runtime_entry(fused_bytes_factor=0.3), "runtime 'mine': fused_bytes_factor: no longer a runtime parameter"),
    (_with_category("vllm", "norm", {"compute_efficiency": 0.5, "bandwidth_efficiency": 0.8, "fused": True}),
     "runtime 'mine': categories.norm.fused: no longer a runtime parameter"),
    (_runtime_entry(execution="sglang"), "execution: unknown execution 'sglang'; expected one of: hf-eager, vllm"),
    (_runtime_entry(execution=None), "missing key(s) execution"),
    (_runtime_entry(kernel_launch_us=100), "kernel_launch_us must be between 0.5 and 30, got 100"),
    (_runtime_entry(aten_call_us=0.1), "aten_call_us must be between 0.5 and 30, got 0.1"),
    (_runtime_entry(module_call_us=80), "module_call_us must be between 0 and 50, got 80"),
    (_runtime_entry(decode_step_overhead_ms=-1), "decode_step_overhead_ms must be between 0 and 100, got -1"),
    (_runtime_entry("vllm", graph_kernel_us=20), "graph_kernel_us must be between 0.2 and 10, got 20"),
    (_runtime_entry("vllm", gpu_memory_utilization=1.2), "gpu_memory_utilization must be in (0, 1], got 1.2"),
    (_runtime_entry("vllm", max_num_batched_tokens=None), "max_num_batched_tokens: missing"),
    (_runtime_entry(gpu_memory_utilization=0.9), "gpu_memory_utilization: only for execution vllm"),
    (_runtime_entry(graph_kernel_us=1.0), "graph_kernel_us: only with cuda_graph_decode: true"),
    (_runtime_entry(cuda_graph_decode=True), "graph_kernel_us: missing"),
    (_with_category("hf-eager", "conv", {"compute_efficiency": 0.02, "bandwidth_efficiency": 0.8}),
     "categories.conv.compute_efficiency must be in (0.05, 1], got 0.02"),
    (_with_category("hf-eager", "conv", {"compute_efficiency": 0.05, "bandwidth_efficiency": 0.8}),
     "categories.conv.compute_efficiency must be in (0.05, 1], got 0.05"),
    (_with_category("hf-eager", "matmul", {"compute_efficiency": 0.7, "bandwidth_efficiency": 1.2}),
     "categories.matmul.bandwidth_efficiency must be in (0.05, 1], got 1.2"),
    (_with_category("hf-eager", "tensor_cores", {"compute_efficiency": 0.7, "bandwidth_efficiency": 0.7}),
     "categories: unknown tensor_cores"),
    (_runtime_entry(categories={"matmul": {"compute_efficiency": 0.7, "bandwidth_efficiency": 0.7}}),
     "categories: missing attention, attention_masked"),
])
def test_bad_runtime_files_give_one_line_and_write_nothing(registry_url, tmp_path, entry, fragment):
    good = _runtime_entry("vllm")
    good["name"] = "fine"
    path = tmp_path / "runtimes.yaml"
    path.write_text(yaml.safe_dump([good, entry], sort_keys=False))
    before = rows(registry_url, "SELECT COUNT(*) FROM runtime_profiles")
    result = run_command(["runtime", "add", str(path), "--db", registry_url])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], lines
    assert rows(registry_url, "SELECT COUNT(*) FROM runtime_profiles") == before  # not even the good entry


def test_the_shipped_runtimes_are_in_range_and_name_their_execution():
    profiles = {p["name"]: p for p in parse_runtimes(yaml.safe_load(shipped("runtimes.yaml")), "runtimes.yaml")}
    assert set(profiles) == {"hf-eager", "vllm"}
    assert (profiles["hf-eager"]["execution"], profiles["hf-eager"]["version"]) == ("hf-eager", 3)
    # the default hf-eager is the H200 fit, with no fitted parameter on a bound
    assert profiles["hf-eager"]["cuda_graph_decode"] is False and "calibrate --hardware h200" in profiles[
        "hf-eager"]["source"] and "No fitted parameter on a bound" in profiles["hf-eager"]["source"]
    vllm = profiles["vllm"]
    assert (vllm["execution"], vllm["cuda_graph_decode"], vllm["gpu_memory_utilization"],
            vllm["max_num_batched_tokens"]) == ("vllm", True, 0.9, 8192)
    assert "fused" not in shipped("runtimes.yaml").split("# hf-eager-h200")[0].replace("fused kernels", "")


def test_a_runtime_of_another_execution_cannot_price_a_report(registry_url, report_files):
    """A point pairs a report with a runtime of its own execution: anything else is refused, nothing recorded."""
    from registry.pricing.points import PointKey, ScenarioRecord, record_scenario

    run_command(["ingest", str(report_files["base"]), "--db", registry_url])
    refused = run_command(["summary", load_report(report_files["base"]).report_id, "--runtime", "vllm",
                           "--db", registry_url])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "was traced under execution hf-eager, but runtime vllm@3 prices execution vllm" in refused.stderr
    registry = Registry(registry_url)
    try:
        with pytest.raises(Exception, match="traced under execution hf-eager"):
            with registry.begin() as conn:
                report_pk, hardware_id, vllm_id = conn.execute(sa.text(
                    "SELECT r.id, h.id, p.id FROM reports r, hardware h, runtime_profiles p "
                    "WHERE h.name = 'h200' AND p.name = 'vllm'")).one()
                record_scenario(conn, ScenarioRecord(name="mixed", definition={}), [PointKey(report_pk, hardware_id, vllm_id)])
    finally:
        registry.dispose()
    assert rows(registry_url, "SELECT COUNT(*) FROM scenario_points") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]


def test_a_statement_the_database_refuses_is_one_line_and_writes_nothing(registry_url, tmp_path, monkeypatch):
    """Registry.begin turns any refused statement into one line; here a memory size no BIGINT column holds."""
    from registry.pricing import catalog

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
    assert lines[0].startswith("point_index,hardware,runtime") and len(lines) == 1 + 2 * 5 * 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    bad = run_command(["whatif", "--scenario", str(EXAMPLES / "batch-memory.yaml"), "--db", ingested,
                       "--plot", str(tmp_path / "plan.svg")])
    assert bad.exit_code == 2 and "PNG" in bad.stderr


def test_memory_fit_and_largest_batch(ingested):
    result = run_command(["whatif", "--scenario", str(EXAMPLES / "batch-memory.yaml"), "--db", ingested,
                          "--format", "json"])
    points = json.loads(result.stdout)["points"]
    for p in points:
        budget = 0.9 * (24e9 if p["hardware"] == "rtx-4090" else 48e9)  # vllm: gpu_memory_utilization 0.9
        assert p["memory_budget_bytes"] == pytest.approx(budget)
        assert p["fits_in_memory"] == (p["memory_needed_bytes"] <= p["memory_budget_bytes"])
        if p["max_batch_in_memory"] is not None:
            assert (p["batch"] <= p["max_batch_in_memory"]) == p["fits_in_memory"]
    # under vllm the KV pool of a 24 GB card holds 67 pages of 2,048 new tokens: 64 fit, 128 do not
    assert any(not p["fits_in_memory"] and p["batch"] == 128 for p in points)
    fits = [p["fits_in_memory"] for p in points]
    assert fits == sorted(fits, reverse=True)  # what fits comes first


def test_seed_what_if_script(report_files):
    script = REPO / "scripts" / "analytical" / "dsocr_analytic_what_if.py"
    done = subprocess.run([sys.executable, str(script), "--report", str(report_files["standard"]), "--peak-tflops",
                           "989", "--batch-scale", "8", "--hardware", "h200"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "batch 8 on h200 / hf-eager@3, peak 989 TFLOP/s" in done.stdout
    assert "page latency" in done.stdout and "top 15 modules by FLOPs" in done.stdout
    bad = subprocess.run([sys.executable, str(script), "--report", "/nonexistent.json"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2


PLOT_SCENARIO = """\
name: plot-roofs
base:
  profile: dsocr-standard-ocr2
sweep:
  hardware: [a100-40g, rtx-4090, h200]
  runtime: [vllm]
  batch: [128]
  new_tokens: [2048]
"""


def _priced_figure(registry_url, path, scenario_text):
    """A scenario priced by `whatif` and the figure `--plot` draws of it: (scenario id, its points, the figure, what
    the figure shows)."""
    from registry.interfaces.plots import build_scenario_figure
    from registry.pricing.points import read_points, read_stage_times

    path.write_text(scenario_text)
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    scenario_id = json.loads(result.stdout)["scenario_id"]
    registry = Registry(registry_url)
    try:
        points = read_points(registry, scenario_id)
        fig, shown = build_scenario_figure(registry, scenario_id, points, read_stage_times(registry, scenario_id))
    finally:
        registry.dispose()
    return scenario_id, points, fig, shown


def test_the_roofline_places_modules_on_the_gpu_it_names_and_marks_what_does_not_fit(registry_url, tmp_path):
    """The cheapest point that fits is on an H200; a100-40g comes first by name, and the RTX 4090 point does not
    fit: the modules sit on the H200's roof, the title names it, and the 4090's bar is hatched and labelled."""
    import numpy as np

    from registry.interfaces.plots import UNFIT_HATCH

    scenario_id, points, fig, shown = _priced_figure(registry_url, tmp_path / "roofs.yaml", PLOT_SCENARIO)
    cheapest = next(p for p in points if p["fits_in_memory"])
    unfit = [p for p in points if not p["fits_in_memory"]]
    assert cheapest["hardware"] == "h200" and [p["hardware"] for p in unfit] == ["rtx-4090"]
    assert (shown.roof_hardware, shown.roof_point_index) == ("h200", cheapest["point_index"])
    (peak, bandwidth), = rows(registry_url, "SELECT peak_flops_per_s, memory_bandwidth_bytes_per_s FROM "
                              "scenario_points WHERE scenario_id = :s AND point_index = :i", s=scenario_id,
                              i=cheapest["point_index"])
    assert (shown.roof_peak_flops_per_s, shown.roof_bandwidth_bytes_per_s) == (float(peak), float(bandwidth))
    roof, bars = fig.axes
    assert roof.get_title().endswith("on h200") and f"#{cheapest['point_index']}" in roof.get_title()
    placed = [line for line in roof.get_lines() if line.get_label() == "h200 datasheet roof (this point's GPU)"]
    assert len(placed) == 1 and placed[0].get_linewidth() > max(
        line.get_linewidth() for line in roof.get_lines() if line is not placed[0])
    [achieved] = [line for line in roof.get_lines() if "achieved roof" in line.get_label()]
    assert achieved.get_label().startswith("vllm@3 achieved roof (conv ")
    assert (achieved.get_ydata() < placed[0].get_ydata()).all()  # the runtime reaches less than the datasheet
    offsets = np.vstack([c.get_offsets() for c in roof.collections])
    assert len(offsets) == shown.module_points > 100
    xs, ys = offsets[:, 0], offsets[:, 1]
    datasheet = np.minimum(float(peak), xs * float(bandwidth)) / 1e12
    # each module where its predicted time puts it: under the datasheet roof, and not on it (the y axis says
    # what the runtime achieves, not what the GPU could)
    assert (ys <= datasheet * (1 + 1e-9)).all() and np.median(ys / datasheet) < 0.9
    a100_peak = rows(registry_url, "SELECT MAX(p.peak_flops_per_s) FROM scenario_points p JOIN hardware h "
                     "ON h.id = p.hardware_id WHERE p.scenario_id = :s AND h.name = 'a100-40g'", s=scenario_id)[0][0]
    assert ys.max() > 0.5 * float(a100_peak) / 1e12  # the H200's point, not the slowest GPU's
    assert shown.unfit_point_indexes == (unfit[0]["point_index"],)
    position = [p["point_index"] for p in points].index(unfit[0]["point_index"])
    hatched = {round(patch.get_y() + patch.get_height() / 2) for patch in bars.patches
               if patch.get_hatch() == UNFIT_HATCH and patch.get_width() > 0}
    assert hatched == {position}
    # each bar as long as its point's GPU-seconds per page (the order the points are sorted in), its label one
    # line at its own position
    lengths = {}
    for patch in bars.patches:
        row = round(patch.get_y() + patch.get_height() / 2)
        lengths[row] = max(lengths.get(row, 0.0), patch.get_x() + patch.get_width())
    for row, point in enumerate(points):
        assert lengths[row] == pytest.approx(point["gpu_seconds_per_page"], rel=1e-6)
    fitting = [lengths[row] for row, point in enumerate(points) if point["fits_in_memory"]]
    assert fitting == sorted(fitting)  # the bars' own lengths are what the rows are sorted by
    labels = bars.get_yticklabels()
    assert [round(tick) for tick in bars.get_yticks()] == list(range(len(points)))
    for row, (label, point) in enumerate(zip(labels, points)):
        assert "\n" not in label.get_text() and label.get_rotation() == 0
        assert label.get_text().startswith(f"#{point['point_index']} {point['hardware']} ")
    assert "(does not fit)" in labels[position].get_text()
    assert sum("(does not fit)" in label.get_text() for label in labels) == 1
    assert bars.xaxis.label.get_text() == "GPU-seconds per page"
    assert "does not fit in GPU memory" in [t.get_text() for t in bars.get_legend().get_texts()]
    for axes in (roof, bars):  # legible when the PNG is scaled down
        assert axes.xaxis.label.get_fontsize() >= 12 and axes.yaxis.label.get_fontsize() >= 12
        assert min(t.get_fontsize() for t in axes.get_yticklabels()) >= 10
    import matplotlib.pyplot as plt

    plt.close(fig)


ACHIEVED_ROOF_SCENARIO = """
name: plot-achieved-roof-{weights}
base: {{profile: dsocr-standard-v1}}
sweep: {{hardware: [h200], runtime: [vllm], batch: [16], weights_dtype: [{weights}], kv_cache_dtype: [{weights}]}}
"""


@pytest.mark.parametrize("weights", ["bf16", "fp8"])
def test_no_module_sits_above_the_runtime_achieved_roof_and_the_compute_bound_ones_reach_it(registry_url, tmp_path,
                                                                                            weights):
    """Each module is placed at its FLOPs over its predicted time and the bytes the pricing moves, each operator at
    its own category's efficiency: the achieved roof drawn is the runtime's fastest category's (in bf16 SAM's
    convolutions, which reach more of the peak than the matmuls; with fp8 weights the fp8 matmul) and its best
    bandwidth, so every module sits on or under it, and the compute-bound ones on it."""
    import matplotlib.pyplot as plt
    import numpy as np

    scenario_id, points, fig, shown = _priced_figure(registry_url, tmp_path / "roof.yaml",
                                                     ACHIEVED_ROOF_SCENARIO.format(weights=weights))
    try:
        (compute, memory, matmul, fp8_peak, fp8_efficiency), = rows(
            registry_url, "SELECT MAX(rc.compute_efficiency * p.efficiency_scale), "
            "MAX(rc.bandwidth_efficiency * p.efficiency_scale), "
            "MAX(CASE WHEN c.name = 'matmul' THEN rc.compute_efficiency END), MAX(p.peak_fp8_flops_per_s), "
            "MAX(rp.fp8_compute_efficiency) FROM scenario_points p "
            "JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id "
            "JOIN runtime_profile_categories rc ON rc.runtime_profile_id = p.runtime_profile_id "
            "JOIN operator_categories c ON c.id = rc.category_id WHERE p.scenario_id = :s", s=scenario_id)
        roof = fig.axes[0]
        [achieved] = [line for line in roof.get_lines() if "achieved roof" in line.get_label()]
        if weights == "bf16":
            assert float(compute) > float(matmul)  # a roof at the matmul's efficiency would leave modules above it
            assert shown.achieved_peak_flops_per_s == pytest.approx(shown.roof_peak_flops_per_s * float(compute))
            assert f"conv {float(compute):.2f} of peak" in achieved.get_label()
        else:
            assert shown.achieved_peak_flops_per_s == pytest.approx(float(fp8_peak) * float(fp8_efficiency))
            assert shown.achieved_peak_flops_per_s > shown.roof_peak_flops_per_s * float(compute)
            assert f"fp8 matmul {float(fp8_efficiency):.2f} of the fp8 peak" in achieved.get_label()
        assert shown.achieved_bandwidth_bytes_per_s == pytest.approx(
            shown.roof_bandwidth_bytes_per_s * float(memory))
        grid = np.asarray(achieved.get_xdata())
        assert np.allclose(achieved.get_ydata(), np.minimum(shown.achieved_peak_flops_per_s,
                                                            grid * shown.achieved_bandwidth_bytes_per_s) / 1e12)
        offsets = np.vstack([c.get_offsets() for c in roof.collections])
        assert len(offsets) == shown.module_points > 100
        xs, ys = offsets[:, 0], offsets[:, 1]
        ceiling = np.minimum(shown.achieved_peak_flops_per_s, xs * shown.achieved_bandwidth_bytes_per_s) / 1e12
        assert (ys <= ceiling * (1 + 1e-9)).all()
        compute_bound = xs * shown.achieved_bandwidth_bytes_per_s > shown.achieved_peak_flops_per_s
        assert (ys[compute_bound] >= 0.999 * ceiling[compute_bound]).any()  # the roof is reached, not only bounded
    finally:
        plt.close(fig)


def test_a_shipped_gpu_or_runtime_is_not_edited_and_user_entries_survive_upgrade(registry_url, tmp_path):
    """db upgrade restores the shipped catalog: a file that changes a shipped GPU or runtime version is refused
    (one line naming the file and what to do), an entry repeated as shipped stays shipped, and the user's own
    entries survive db upgrade."""
    edit = tmp_path / "h100.yaml"
    edit.write_text("- name: h100-sxm\n  dense_bf16_tflops: 700\n  memory_tb_per_s: 3.35\n  memory_gb: 80\n"
                    "- name: b300\n  dense_bf16_tflops: 2250\n  memory_tb_per_s: 8\n  memory_gb: 180\n")
    refused = run_command(["hardware", "add", str(edit), "--db", registry_url])
    assert refused.exit_code == 2
    assert refused.stderr == (f"dsocr-registry: error: {edit}: h100-sxm is a shipped GPU, kept at its datasheet "
                              "figures (db upgrade restores them); add yours under a new name, e.g. "
                              "h100-sxm-custom\n")
    assert rows(registry_url, "SELECT peak_bf16_flops_per_s, origin FROM hardware WHERE name = 'h100-sxm'") == [
        (989e12, "shipped")]
    assert rows(registry_url, "SELECT COUNT(*) FROM hardware WHERE name = 'b300'") == [(0,)]  # nothing written
    shipped_as_is = tmp_path / "shipped.yaml"
    shipped_as_is.write_text(shipped("hardware.yaml"))
    again = run_command(["hardware", "add", str(shipped_as_is), "--db", registry_url])
    assert again.exit_code == 0
    assert again.stdout == ("hardware: 0 added or updated (); shipped and unchanged: h100-sxm, h200, a100-40g, "
                            "a100-80g, l40s, rtx-4090, b200, h100-pcie, h20, l4, a10, l40, rtx-5090, rtx-pro-6000, "
                            "mi300x, mi325x\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("- name: h100-sxm-custom\n  dense_bf16_tflops: 700\n  memory_tb_per_s: 3.35\n  memory_gb: 80\n")
    assert run_command(["hardware", "add", str(mine), "--db", registry_url]).exit_code == 0
    vllm = [p for p in parse_runtimes(yaml.safe_load(shipped("runtimes.yaml")), "runtimes") if p["name"] == "vllm"][0]
    changed = yaml.safe_load(shipped("runtimes.yaml"))
    entry = next(e for e in changed if e["name"] == "vllm")
    entry["gpu_memory_utilization"] = 0.5
    runtime_file = tmp_path / "vllm.yaml"
    runtime_file.write_text(yaml.safe_dump([entry], sort_keys=False))
    refused = run_command(["runtime", "add", str(runtime_file), "--db", registry_url])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert f"{runtime_file}: vllm@{vllm['version']} is a shipped runtime profile" in refused.stderr
    entry["version"] = vllm["version"] + 1
    runtime_file.write_text(yaml.safe_dump([entry], sort_keys=False))
    assert run_command(["runtime", "add", str(runtime_file), "--db", registry_url]).exit_code == 0
    assert run_command(["db", "upgrade", "--db", registry_url]).exit_code == 0
    assert rows(registry_url, "SELECT name, peak_bf16_flops_per_s, origin FROM hardware WHERE name LIKE 'h100%' "
                "ORDER BY name") == [("h100-pcie", 756e12, "shipped"), ("h100-sxm", 989e12, "shipped"),
                                     ("h100-sxm-custom", 700e12, "user")]
    assert rows(registry_url, "SELECT version, gpu_memory_utilization, origin FROM runtime_profiles "
                "WHERE name = 'vllm' ORDER BY version") == [(vllm["version"], vllm["gpu_memory_utilization"],
                                                             "shipped"), (vllm["version"] + 1, 0.5, "user")]


def test_counts_take_the_number_of_their_noun(registry_url, tmp_path):
    from registry.interfaces.output import plural

    assert [plural(n, "GPU") for n in (0, 1, 1.0, 2, 1234)] == ["0 GPUs", "1 GPU", "1 GPU", "2 GPUs", "1,234 GPUs"]
    scenario = tmp_path / "one.yaml"
    scenario.write_text("name: one-gpu\nbase:\n  profile: dsocr-base-v1\nsweep:\n  hardware: [h200]\n"
                        "  runtime: [hf-eager]\n  batch: [1]\ntarget:\n  pages_per_day: 100\n")
    result = run_command(["whatif", "--scenario", str(scenario), "--db", registry_url])
    assert result.exit_code == 0, result.output
    assert "(id 1): 1 point, each one batch in lock step" in result.stdout
    # a static point answers no capacity question: the GPUs for a load come from `plan`
    assert "GPUs for the target: one batch in lock step is not a server under load" in result.stdout
    assert " GPU for the target, " not in result.stdout
