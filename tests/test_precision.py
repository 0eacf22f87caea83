"""Precision as a deployment choice (fp8 weights, an fp8 KV cache), money, and where efficiencies come from."""

import json

import pytest

from tests.helpers import rows, run_command


@pytest.fixture(scope="session")
def vllm_report_file(tmp_path_factory):
    """The standard v1 page traced under vllm (batch 4, 256 new tokens), as a JSON report."""
    from analyzer.analysis import analyze
    from analyzer.report import write_report
    from analyzer.workload import load_profile

    path = tmp_path_factory.mktemp("vllm") / "standard-vllm.json"
    write_report(analyze(load_profile("dsocr-standard-v1", batch=4, new_tokens=256), "vllm"), path)
    return path


def _scenario(tmp_path, name, sweep, extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nbase:\n  profile: dsocr-standard-v1\n  batch: 4\n  new_tokens: 256\n"
                    f"sweep:\n{sweep}{extra}")
    return path


def _priced(registry_url, tmp_path, vllm_report_file, name, sweep, extra=""):
    assert run_command(["ingest", str(vllm_report_file), "--db", registry_url]).exit_code == 0
    result = run_command(["whatif", "--scenario", str(_scenario(tmp_path, name, sweep, extra)), "--format", "json",
                          "--db", registry_url])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _refused(registry_url, command, table, message, names=""):
    """The command exits 2 with one line holding `message` (and `names`, a file), and `table` gains no row."""
    before = rows(registry_url, f"SELECT COUNT(*) FROM {table}")
    result = run_command([*command, "--db", registry_url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and names in lines[0], lines
    assert rows(registry_url, f"SELECT COUNT(*) FROM {table}") == before


def test_fp8_weights_halve_exactly_the_weight_bytes_of_matmul_rows(registry_url, tmp_path, vllm_report_file):
    """Every operator row of the same report on the same GPU, bf16 against fp8 weights: a matmul row moves its bytes
    less half its weight bytes, at the fp8 rate and the fp8 efficiency; every other row is priced exactly as in
    bf16."""
    data = _priced(registry_url, tmp_path, vllm_report_file, "fp8-weights",
                   "  hardware: [h200]\n  runtime: [vllm]\n  weights_dtype: [bf16, fp8]\n")
    assert [p["weights_dtype"] for p in sorted(data["points"], key=lambda p: p["point_index"])] == ["bf16", "fp8"]
    query = ("SELECT g.point_index, c.name, g.stage, g.view_kind, g.flops, g.bytes_read + g.bytes_written, "
             "o.weight_bytes_read, g.op_calls, g.kernel_launches, g.compute_bound_s, g.memory_bound_s, g.dispatch_s "
             "FROM v_point_cost_group_time g JOIN operator_categories c ON c.id = g.category_id "
             "JOIN operator_cost_groups o ON o.report_id = g.report_pk AND o.stage = g.stage "
             "AND o.view_kind = g.view_kind AND o.category_id = g.category_id AND o.op_calls = g.op_calls "
             "AND o.kernel_launches = g.kernel_launches AND o.flops = g.flops AND o.bytes_read = g.bytes_read "
             "AND o.bytes_written = g.bytes_written WHERE g.scenario_id = :s")
    priced = {}
    for point, category, stage, view, flops, moved, weights, calls, launches, compute, memory, dispatch in rows(
            registry_url, query, s=data["scenario_id"]):
        priced.setdefault((category, stage, view, flops, moved, weights, calls, launches), {})[point] = (
            compute, memory, dispatch)
    runtime = dict(rows(registry_url, "SELECT c.name, rc.bandwidth_efficiency FROM runtime_profile_categories rc "
                                      "JOIN operator_categories c ON c.id = rc.category_id "
                                      "JOIN runtime_profiles p ON p.id = rc.runtime_profile_id "
                                      "WHERE p.name = 'vllm' AND p.version = 3"))
    fp8_efficiency = rows(registry_url, "SELECT fp8_compute_efficiency FROM runtime_profiles "
                                        "WHERE name = 'vllm' AND version = 3")[0][0]
    peak_fp8, bandwidth = rows(registry_url, "SELECT peak_fp8_flops_per_s, memory_bandwidth_bytes_per_s "
                                             "FROM hardware WHERE name = 'h200'")[0]
    matmul_rows = 0
    for (category, _, _, flops, moved, weights, _, _), by_point in priced.items():
        bf16, fp8 = by_point[1], by_point[2]
        if category != "matmul" or weights == 0 and flops == 0:
            assert fp8 == bf16  # nothing else changes, to the bit
            continue
        matmul_rows += 1
        assert fp8[1] == pytest.approx((moved - weights / 2) / (bandwidth * runtime[category]), rel=1e-12)
        assert fp8[0] == pytest.approx(flops / (peak_fp8 * fp8_efficiency), rel=1e-12)
        assert fp8[2] == bf16[2]
    assert matmul_rows > 10
    assert sum(w for (c, *_, w, _, _) in priced if c == "matmul") > 0


def test_an_fp8_kv_cache_doubles_the_kv_pool_pages(registry_url, tmp_path, vllm_report_file):
    """The same pool in bytes holds twice the tokens: 61,440 bytes per token of v1's KV cache in bf16 (12 layers x
    2 x 10 heads x 128 x 2 B), 30,720 in fp8; the largest concurrency doubles, to within the floor."""
    data = _priced(registry_url, tmp_path, vllm_report_file, "fp8-kv",
                   "  hardware: [h200]\n  runtime: [vllm]\n  kv_cache_dtype: [bf16, fp8]\n")
    points = {p["kv_cache_dtype"]: p for p in data["points"]}
    bf16, fp8 = points["bf16"], points["fp8"]
    assert bf16["kv_pool_bytes"] == fp8["kv_pool_bytes"] > 0
    per_token = {r[0]: r[1] for r in rows(registry_url, "SELECT kv_cache_dtype, kv_cache_bytes_per_token FROM "
                                                        "v_point_summary_all WHERE scenario_id = :s",
                                          s=data["scenario_id"])}
    assert per_token == {"bf16": 61_440, "fp8": 30_720}
    sequence_tokens = 912 + 256
    pool = bf16["kv_pool_bytes"]
    assert bf16["max_batch_in_memory"] == pool // (61_440 * sequence_tokens)
    assert fp8["max_batch_in_memory"] == pool // (30_720 * sequence_tokens)
    assert fp8["max_batch_in_memory"] in (2 * bf16["max_batch_in_memory"], 2 * bf16["max_batch_in_memory"] + 1)
    # 16-token blocks of the serving engine: pages of the pool, by hand
    blocks = {dtype: pool // (16 * size) for dtype, size in per_token.items()}
    assert blocks["fp8"] in (2 * blocks["bf16"], 2 * blocks["bf16"] + 1)


def test_cost_per_1000_pages_is_gpu_seconds_per_page_times_price_over_3_6(registry_url, tmp_path,
                                                                           vllm_report_file):
    assert run_command(["hardware", "price", "h200", "3.5", "--db", registry_url]).exit_code == 0
    data = _priced(registry_url, tmp_path, vllm_report_file, "money", "  hardware: [h200]\n  runtime: [vllm]\n")
    point = data["points"][0]
    assert point["usd_per_hour"] == 3.5
    assert point["usd_per_1000_pages"] == pytest.approx(point["gpu_seconds_per_page"] * 3.5 / 3.6, rel=1e-12)
    assert point["usd_per_million_output_tokens"] == pytest.approx(3.5 / 3600 * 1e6 / point["tokens_per_s"],
                                                                   rel=1e-12)
    assert point["efficiency_source"] == "calibrated on h200"


def test_efficiencies_say_where_they_come_from(registry_url, tmp_path, vllm_report_file):
    data = _priced(registry_url, tmp_path, vllm_report_file, "provenance",
                   "  hardware: [h200, a100-80g]\n  runtime: [vllm]\n")
    sources = {p["hardware"]: p["efficiency_source"] for p in data["points"]}
    assert sources == {"h200": "calibrated on h200", "a100-80g": "datasheet-scaled from h200"}
    # a profile of the user's own that names no GPU it was fitted on: assumed
    import yaml

    from registry.pricing.catalog import shipped

    mine = [dict(p, name="vllm-mine", version=1) for p in yaml.safe_load(shipped("runtimes.yaml"))
            if p["name"] == "vllm"]
    del mine[0]["calibrated_on"]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    assert run_command(["runtime", "add", str(tmp_path / "mine.yaml"), "--db", registry_url]).exit_code == 0
    data = _priced(registry_url, tmp_path, vllm_report_file, "assumed", "  hardware: [h200]\n  runtime: [vllm-mine]\n")
    assert data["points"][0]["efficiency_source"] == "assumed (not calibrated)"


def test_calibrate_on_another_gpu_makes_that_gpus_own_profile_version(registry_url, tmp_path):
    from tests.helpers import REPO

    measurements = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"
    stored = run_command(["ingest", "--measurements", str(measurements), "--hardware", "a100-80g", "--runtime",
                          "hf-eager", "--db", registry_url])
    assert stored.exit_code == 0, stored.output
    out = tmp_path / "a100.yaml"
    fitted = run_command(["calibrate", "--hardware", "a100-80g", "--runtime", "hf-eager", "--out", str(out),
                          "--db", registry_url])
    assert fitted.exit_code == 0, fitted.output
    import yaml

    assert yaml.safe_load(out.read_text())[0]["calibrated_on"] == "a100-80g"
    assert rows(registry_url, "SELECT version, calibrated_on FROM runtime_profiles WHERE name = 'hf-eager' "
                              "ORDER BY version DESC LIMIT 1") == [(4, "a100-80g")]
    sources = {r[0]: r[1] for r in rows(registry_url, "SELECT hardware, efficiency_source FROM v_point_summary_all "
                                                      "WHERE runtime_version = 4")}
    assert sources == {"a100-80g": "calibrated on a100-80g"}


@pytest.mark.parametrize("sweep, message", [
    ("  hardware: [h200]\n  runtime: [vllm]\n  weights_dtype: [fp16]\n",
     "sweep.weights_dtype: unknown dtype 'fp16'; expected one of: bf16, fp8"),
    ("  hardware: [a100-80g]\n  runtime: [vllm]\n  weights_dtype: [fp8]\n",
     "GPU a100-80g has no fp8 tensor rate in the catalog"),
    ("  hardware: [h200]\n  runtime: [hf-eager]\n  kv_cache_dtype: [fp8]\n",
     "fp8 is priced for the vllm execution"),
])
def test_bad_precision_is_one_line_and_records_nothing(registry_url, tmp_path, sweep, message):
    path = _scenario(tmp_path, "bad", sweep)
    _refused(registry_url, ["whatif", "--scenario", str(path)], "scenarios", message, str(path))


@pytest.mark.parametrize("edit, message", [
    ({"weights_dtype": "fp16"}, "weights_dtype: unknown dtype 'fp16'; expected one of: bf16, fp8"),
    ({"name": "eager-fp8", "execution": "hf-eager", "kv_cache_dtype": "fp8", "cuda_graph_decode": False},
     "fp8 is priced for the vllm execution"),
    ({"fp8_compute_efficiency": 1.5}, "fp8_compute_efficiency"),
    ({"calibrated_on": ""}, "calibrated_on: must be the name of the GPU the profile was fitted on"),
])
def test_a_runtime_file_with_a_bad_precision_is_refused_in_one_line(registry_url, tmp_path, edit, message):
    import yaml

    from registry.pricing.catalog import shipped

    entry = dict(next(p for p in yaml.safe_load(shipped("runtimes.yaml")) if p["name"] == "vllm"),
                 name="vllm-mine", version=1)
    entry.update(edit)
    if entry["execution"] == "hf-eager":
        for key in ("graph_kernel_us", "gpu_memory_utilization", "max_num_batched_tokens"):
            entry.pop(key)
    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump([entry]))
    _refused(registry_url, ["runtime", "add", str(path)], "runtime_profiles", message, str(path))


@pytest.mark.parametrize("dtype_key, message", [
    ("kv_cache_dtype", "was analyzed before the KV-cache bytes were counted (schema 3): re-analyze it to price an "
                       "fp8 KV cache"),
    ("weights_dtype", "was analyzed before its matmul weight bytes were recorded (schema 3): re-analyze it to "
                      "price fp8 weights"),
])
def test_fp8_of_a_report_older_than_schema_4_is_refused(registry_url, tmp_path, vllm_report_file, dtype_key,
                                                        message):
    """A report without the byte roles (stored as a schema-3 report stores them: no KV split, no matmul weight
    bytes) prices in bf16 and refuses fp8 in one line."""
    import sqlalchemy as sa

    from registry.store.db import Registry

    assert run_command(["ingest", str(vllm_report_file), "--db", registry_url]).exit_code == 0
    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            conn.execute(sa.text("UPDATE reports SET schema_version = 3, matmul_weight_bytes = NULL"))
            conn.execute(sa.text("UPDATE operator_metrics SET kv_cache_bytes_read = NULL, "
                                 "kv_cache_bytes_written = NULL"))
    finally:
        registry.dispose()
    bf16 = _scenario(tmp_path, "old-bf16", "  hardware: [h200]\n  runtime: [vllm]\n")
    assert run_command(["whatif", "--scenario", str(bf16), "--db", registry_url]).exit_code == 0
    path = _scenario(tmp_path, "old-fp8", f"  hardware: [h200]\n  runtime: [vllm]\n  {dtype_key}: [fp8]\n")
    _refused(registry_url, ["whatif", "--scenario", str(path)], "scenarios", message)
