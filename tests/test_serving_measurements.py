"""Serving measurements in: benchmark result files (vllm bench serve, SGLang bench_serving, GuideLLM) as measured
points, request traces replayed one for one, v_serving_compare, and the host fit through the simulator."""

import json

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from tests.helpers import REPO, rows, run_command

DATA = REPO / "tests" / "data" / "serving-results"
SAMPLES = ["vllm-bench-serve.json", "vllm-benchmark-serving-old.json", "sglang-bench-serving.jsonl",
           "guidellm-benchmarks.json"]
SETUP = {"hardware": "h100-sxm", "engine": "vllm-v1", "variant": "v1", "mode": "gundam", "images_per_request": 0,
         "max_num_seqs": 256, "max_num_batched_tokens": 8192}


@pytest.fixture
def setup_file(tmp_path):
    path = tmp_path / "setup.yaml"
    path.write_text(yaml.safe_dump(SETUP))
    return path


def ingest(db, path, setup, *extra):
    return run_command(["ingest", "--serving-results", str(path), "--setup", str(setup), "--db", db, *extra])


# -- the result files ---------------------------------------------------------------------------------------------

def test_each_tools_sample_of_the_same_run_stores_the_same_point(registry_url, setup_file):
    """The four samples (written from each tool's documented fields) describe one run of 4 requests: they store the
    same aggregates and the same per-request rows."""
    for name in SAMPLES:
        result = ingest(registry_url, DATA / name, setup_file)
        assert result.exit_code == 0, result.output
        assert "stored as serving measurement" in result.output
    stored = rows(registry_url, "SELECT tool, requests, completed, duration_s, total_input_tokens, "
                                "total_output_tokens, request_throughput_per_s, output_throughput_tokens_per_s, "
                                "max_concurrency, per_request_rows, mean_ttft_ms, median_ttft_ms "
                                "FROM serving_measurements ORDER BY id")
    assert [r[0] for r in stored] == ["vllm-bench-serve", "vllm-bench-serve", "sglang-bench-serving", "guidellm"]
    # end-to-end latency: SGLang's and GuideLLM's own figures, vLLM's from its per-request latencies (the older
    # script wrote neither)
    e2el = [r[0] for r in rows(registry_url, "SELECT mean_e2el_ms FROM serving_measurements ORDER BY id")]
    assert e2el[1] is None and [e2el[0], *e2el[2:]] == pytest.approx([545.0, 545.0, 545.0], rel=1e-6)
    for row in stored:
        assert row[1:8] == (4, 4, 2.0, 1000, 100, 2.0, 50.0)
        assert row[9] is True
        assert row[10] == pytest.approx(65.0, rel=1e-5) and row[11] == pytest.approx(65.0, rel=1e-5)
    requests = rows(registry_url, "SELECT measurement_id, input_tokens, output_tokens, ttft_ms, "
                                  "e2el_ms FROM serving_measurement_requests "
                                  "ORDER BY measurement_id, request_index")
    by_run = {}
    for mid, *values in requests:
        by_run.setdefault(mid, []).append(tuple(values))
    assert len(by_run) == 4
    for values in by_run.values():
        assert [v[:2] for v in values] == [(100, 10), (200, 20), (300, 30), (400, 40)]
        assert [v[2] for v in values] == pytest.approx([50.0, 60.0, 70.0, 80.0], rel=1e-5)
        assert [v[3] for v in values] == pytest.approx([230.0, 440.0, 650.0, 860.0], rel=1e-5)


def test_the_same_file_twice_is_stored_once(tmp_path, setup_file):
    db = str(tmp_path / "r.duckdb")
    assert ingest(db, DATA / "vllm-bench-serve.json", setup_file).exit_code == 0
    again = ingest(db, DATA / "vllm-bench-serve.json", setup_file)
    assert again.exit_code == 0 and "already present as serving measurement 1" in again.output
    assert rows(db, "SELECT COUNT(*) FROM serving_measurements") == [(1,)]
    assert rows(db, "SELECT COUNT(*) FROM serving_measurement_requests") == [(4,)]


def _refused(tmp_path, path, setup, needle):
    db = tmp_path / "refused.duckdb"
    result = ingest(str(db), path, setup)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and needle in message, message
    assert not db.exists()  # nothing written, not even an empty registry


def test_another_tools_file_a_truncated_file_and_bad_figures_are_refused(tmp_path, setup_file):
    measurement = tmp_path / "forward-passes.json"
    measurement.write_text(json.dumps({"env": {"gpu": "H200"}, "rows": []}))
    _refused(tmp_path, measurement, setup_file, "measurement file of single forward passes")
    truncated = tmp_path / "truncated.json"
    truncated.write_text((DATA / "vllm-bench-serve.json").read_text()[:700])
    _refused(tmp_path, truncated, setup_file, "not valid JSON (truncated?)")
    document = json.loads((DATA / "vllm-bench-serve.json").read_text())
    for key, value, needle in (("mean_ttft_ms", float("nan"), "mean_ttft_ms is nan"),
                               ("duration", -2.0, "duration is negative"),
                               ("output_throughput", float("inf"), "output_throughput is inf")):
        bad = tmp_path / f"bad-{key}.json"
        bad.write_text(json.dumps(dict(document, **{key: value})))
        _refused(tmp_path, bad, setup_file, needle)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"latency": [1, 2]}))
    _refused(tmp_path, other, setup_file, "not a result of vllm bench serve, SGLang bench_serving or GuideLLM")


@pytest.mark.parametrize("missing", ["hardware", "engine", "variant", "max_num_seqs", "max_num_batched_tokens"])
def test_a_missing_setup_key_is_named(tmp_path, missing):
    setup = tmp_path / "setup.yaml"
    setup.write_text(yaml.safe_dump({k: v for k, v in SETUP.items() if k != missing}))
    _refused(tmp_path, DATA / "vllm-bench-serve.json", setup, f"missing setup key '{missing}'")


def test_bad_setup_values_are_refused_in_one_line(tmp_path):
    for change, needle in (({"variant": "v3"}, "variant must be one of"), ({"mode": "huge"}, "mode must be one of"),
                           ({"colour": "red"}, "unknown setup key 'colour'"),
                           ({"images_per_request": 1, "mode": None}, "missing setup key 'mode'"),
                           ({"max_num_seqs": 0}, "max_num_seqs must be an integer")):
        setup = tmp_path / "setup.yaml"
        setup.write_text(yaml.safe_dump({k: v for k, v in {**SETUP, **change}.items() if v is not None}))
        _refused(tmp_path, DATA / "vllm-bench-serve.json", setup, needle)
    setup = tmp_path / "setup.yaml"
    setup.write_text(yaml.safe_dump({**SETUP, "hardware": "h999"}))
    result = ingest(str(tmp_path / "r.duckdb"), DATA / "vllm-bench-serve.json", setup)
    assert result.exit_code == 2 and "setup:" in result.output and "h999" in result.output
    assert not (tmp_path / "r.duckdb").exists()  # the registry this command created is removed with its failure


def test_options_override_the_setup_file(tmp_path, setup_file):
    db = str(tmp_path / "r.duckdb")
    result = ingest(db, DATA / "vllm-bench-serve.json", setup_file, "--hardware", "h200", "--max-num-seqs", "64")
    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT h.name, max_num_seqs FROM serving_measurements sm JOIN hardware h "
                    "ON h.id = sm.hardware_id") == [("h200", 64)]


# -- replay -------------------------------------------------------------------------------------------------------

def test_a_replay_sends_the_files_own_requests_under_its_concurrency(tmp_path, setup_file):
    from registry.store.db import Registry
    from registry.store.serving_results import replay_plan, simulate_replay

    db = str(tmp_path / "r.duckdb")
    assert ingest(db, DATA / "vllm-bench-serve.json", setup_file).exit_code == 0
    registry = Registry(db)
    try:
        replay = replay_plan(registry, 1)
        figures = simulate_replay(replay)
    finally:
        registry.dispose()
    assert replay.plan.rates == ((None, 4),)  # rate inf under max concurrency 4: a closed loop of 4 clients
    trace = replay.plan.spec.requests
    assert trace.prompt_tokens.tolist() == [100, 200, 300, 400]
    assert trace.output_tokens.tolist() == [10, 20, 30, 40]
    assert figures["requests"] == 4 and figures["total_output_tokens"] == 100


def test_totals_only_runs_replay_their_totals_split_evenly(tmp_path):
    from registry.store.db import Registry
    from registry.store.serving_results import load_measured, replay_trace

    db = str(tmp_path / "r.duckdb")
    result = ingest(db, DATA / "sglang-cookbook-dsocr-v1-mi300x.jsonl",
                    DATA / "sglang-cookbook-dsocr-v1-mi300x.setup.yaml")
    assert result.exit_code == 0, result.output
    registry = Registry(db)
    try:
        with registry.begin() as conn:
            trace = replay_trace(conn, load_measured(conn, 2))
    finally:
        registry.dispose()
    assert len(trace) == 1000 and int(trace.output_tokens.sum()) == 188_375
    assert int(trace.prompt_tokens.sum()) == 301_698 and not trace.images.any()
    assert set(trace.output_tokens.tolist()) == {188, 189}


def test_a_trace_of_the_page_mix_replays_as_the_page_mix(tmp_path):
    """A request trace holding exactly the pages a page-mix scenario draws (their arrivals, output tokens, one image
    of the scenario's page each) gives the same simulation, row for row."""
    from analyzer.workload import load_profile
    from registry.serving.engine import PageMix, make_pages

    mix = {"new_tokens": {"median": 300, "p90": 700, "max": 2000}}
    common = {"base": {"profile": "dsocr-standard-v1"}, "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]}}
    drawn = yaml.safe_dump({"name": "drawn", **common, "serving": {
        "engine": "vllm-v1", "arrival": {"rate_per_s": [3.0]}, "pages": {"count": 60, "seed": 5}, "page_mix": mix}})
    pages = make_pages(60, 5, PageMix(median=300, p90=700, max_tokens=2000), 3.0)
    text_tokens = load_profile("dsocr-standard-v1").prompt_text_tokens
    lines = ["arrival_s,prompt_tokens,output_tokens,images,page_size"]
    lines += [f"{a!r},{text_tokens},{int(t)},1," for a, t in zip(pages.arrival.tolist(), pages.new_tokens.tolist())]
    (tmp_path / "pages.csv").write_text("\n".join(lines) + "\n")
    traced = yaml.safe_dump({"name": "traced", **common, "serving": {"engine": "vllm-v1", "requests": "pages.csv"}})
    (tmp_path / "drawn.yaml").write_text(drawn)
    (tmp_path / "traced.yaml").write_text(traced)
    db = str(tmp_path / "r.duckdb")
    outputs = []
    for name in ("drawn", "traced"):
        result = run_command(["whatif", "--scenario", str(tmp_path / f"{name}.yaml"), "--db", db, "--format", "json"])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    keys = ["pages", "pages_per_s", "output_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
            "page_latency_p99_s", "mean_running_pages", "kv_pool_use_peak", "preemptions"]
    first, second = (o["serving"][0] for o in outputs)
    for key in keys:
        # the drawn run starts at its first arrival, the trace at 0: the same times after that shift
        assert second[key] == pytest.approx(first[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("body, needle", [
    ("prompt_tokens,output_tokens,colour\n9,10,red\n", "unknown column 'colour'"),
    ("prompt_tokens\n9\n", "missing column 'output_tokens'"),
    ("prompt_tokens,output_tokens\n9,0\n", "request 1: output_tokens must be an integer from 1"),
    ("prompt_tokens,output_tokens,arrival_s\n9,10,0.5\n9,10,\n", "request 2: arrival_s is missing"),
    ("prompt_tokens,output_tokens,images,page_size\n9,10,1,big\n", "page_size must be WIDTHxHEIGHT"),
])
def test_bad_request_traces_are_refused_in_one_line(tmp_path, body, needle):
    (tmp_path / "trace.csv").write_text(body)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "t", "base": {"profile": "dsocr-standard-v1"},
        "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
        "serving": {"requests": "trace.csv", "arrival": {"concurrency": [4]}}}))
    db = tmp_path / "r.duckdb"
    result = run_command(["whatif", "--scenario", str(tmp_path / "s.yaml"), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not db.exists()


def test_a_trace_beside_a_page_mix_is_refused(tmp_path):
    (tmp_path / "trace.jsonl").write_text('{"prompt_tokens": 9, "output_tokens": 10}\n')
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "t", "base": {"profile": "dsocr-standard-v1"},
        "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
        "serving": {"requests": "trace.jsonl", "page_mix": {"new_tokens": {"median": 10}}}}))
    result = run_command(["whatif", "--scenario", str(tmp_path / "s.yaml"), "--db", str(tmp_path / "r.duckdb")])
    assert result.exit_code == 2 and "no pages or page_mix beside it" in result.output


# -- compare and calibrate ----------------------------------------------------------------------------------------

def test_v_serving_compare_is_measured_beside_predicted(registry_url):
    """Each row of the view: the stored measured and predicted figures of its metric, their ratio and error."""
    result = ingest(registry_url, DATA / "sglang-cookbook-dsocr-v1-mi300x.jsonl",
                    DATA / "sglang-cookbook-dsocr-v1-mi300x.setup.yaml")
    assert result.exit_code == 0, result.output
    result = run_command(["compare", "--serving", "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    measured = dict(zip(["request_throughput_per_s", "mean_tpot_ms", "p99_ttft_ms"], rows(
        registry_url, "SELECT request_throughput_per_s, mean_tpot_ms, p99_ttft_ms FROM serving_measurements "
                      "WHERE id = 2")[0]))
    predicted = dict(zip(["request_throughput_per_s", "mean_tpot_ms", "p99_ttft_ms"], rows(
        registry_url, "SELECT request_throughput_per_s, mean_tpot_ms, p99_ttft_ms FROM serving_predictions "
                      "WHERE measurement_id = 2")[0]))
    assert measured == {"request_throughput_per_s": 61.59, "mean_tpot_ms": 7.42, "p99_ttft_ms": 349.53}
    for metric in measured:
        row = next(r for r in printed if r["measurement_id"] == 2 and r["metric"] == metric)
        assert row["measured"] == measured[metric] and row["predicted"] == pytest.approx(predicted[metric])
        assert row["ratio"] == pytest.approx(predicted[metric] / measured[metric], rel=1e-12)
        assert row["error"] == pytest.approx((predicted[metric] - measured[metric]) / measured[metric], rel=1e-12)
    # the v1 cookbook run lists no p99 end-to-end latency: no row for it; 13 of 14 metrics for run 1
    assert sum(r["measurement_id"] == 1 for r in printed) == 13
    assert not any(r["metric"] == "p99_e2el_ms" for r in printed)


def test_calibration_recovers_known_host_costs(tmp_path):
    """'Measurements' simulated with known scheduler costs: the fit from the shipped profile finds them within
    2%, and no parameter ends on a bound."""
    from registry.serving.fit_host import with_costs
    from registry.serving.profiles import load_profile
    from registry.store.db import Registry
    from registry.store.serving_results import calibrate_serving, replay_plan, simulate_replay

    db = str(tmp_path / "r.duckdb")
    for name in ("sglang-cookbook-dsocr-v1-mi300x", "sglang-cookbook-dsocr2-h200"):
        assert ingest(db, DATA / f"{name}.jsonl", DATA / f"{name}.setup.yaml").exit_code == 0
    known = {"schedule_step_us": 900.0, "schedule_per_request_us": 25.0}
    registry = Registry(db, writes=True)
    try:
        with registry.begin() as conn:
            host = with_costs(load_profile(conn, "host", "epyc-2c-vllm-0.8.5"), known)
        for mid in (1, 2, 3, 4):
            replay = replay_plan(registry, mid)
            spec = replay.plan.spec
            figures = simulate_replay(replay, spec.engine_profile.host_model(host, spec.ngram))
            with registry.begin() as conn:
                conn.execute(sa.text("UPDATE serving_measurements SET request_throughput_per_s = :r, "
                                     "mean_tpot_ms = :t WHERE id = :i"),
                             {"r": figures["request_throughput_per_s"], "t": figures["mean_tpot_ms"], "i": mid})
        result = calibrate_serving(registry, None, None)
    finally:
        registry.dispose()
    assert result["on_bounds"] == {}
    for key, value in known.items():
        assert result["parameters"][key] == pytest.approx(value, rel=0.02), key
    assert result["profile"] == "epyc-2c-vllm-0.8.5@2"
    assert all(abs(e) < 0.01 for errors in result["after"].values() for e in errors.values())


def test_three_commands_from_a_vllm_result_file_to_a_compare_table(tmp_path, setup_file):
    """The README's three commands: ingest the result file with its setup, compare, fit the host and compare
    again under the fitted profile."""
    db = str(tmp_path / "r.duckdb")
    result = ingest(db, DATA / "vllm-bench-serve.json", setup_file)
    assert result.exit_code == 0, result.output
    result = run_command(["compare", "--serving", "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["id", "hardware", "engine", "variant"]
    assert "request_throughput_per_s" in result.output and "(14 rows)" in result.output
    out = tmp_path / "fitted-host.yaml"
    result = run_command(["calibrate", "--serving", "--out", str(out), "--name", "my-host", "--db", db])
    assert result.exit_code == 0, result.output
    assert "-> my-host@1 (stored)" in result.output
    document = yaml.safe_load(out.read_text())[0]
    assert document["name"] == "my-host" and document["costs"]["schedule_step_us"]["how"] == "fitted"
    result = run_command(["compare", "--serving", "--host", "my-host", "--db", db, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert all(",my-host@1," in line for line in result.output.splitlines()[1:])


def test_compare_and_calibrate_serving_errors(tmp_path, setup_file):
    db = str(tmp_path / "r.duckdb")
    assert run_command(["db", "upgrade", "--db", db]).exit_code == 0
    result = run_command(["compare", "--serving", "--db", db])
    assert result.exit_code == 2 and "no serving measurements stored" in result.output
    assert ingest(db, DATA / "vllm-bench-serve.json", setup_file).exit_code == 0
    result = run_command(["compare", "--serving", "--measurement", "7", "--db", db])
    assert result.exit_code == 2 and "no serving measurement 7; stored: 1" in result.output
    result = run_command(["calibrate", "--serving", "--free", "colour_us", "--out", str(tmp_path / "x.yaml"),
                          "--db", db])
    assert result.exit_code == 2 and "unknown host cost 'colour_us'" in result.output
    assert not (tmp_path / "x.yaml").exists()
    result = run_command(["compare", "--serving", "--hardware", "h100-sxm", "--db", db])
    assert result.exit_code == 2 and "no --measurements, --hardware or --runtime" in result.output
    result = run_command(["compare", "--db", db])
    assert result.exit_code == 2 and "missing option --measurements" in result.output


def test_a_closed_loop_sends_a_page_no_earlier_than_its_own_send_time():
    """Under a max concurrency, a request with its own send time (a rate) waits for it even when a client is
    free, and for a free client when its time has come."""
    from registry.serving.engine import EngineConfig, Pages, simulate
    from tests.test_serving_engines import Family, FakeCost

    cost = FakeCost([Family("a", 100, 1.0)])  # a page's vision takes 1 s: text-only requests never run it
    pages = Pages(arrival=np.array([0.0, 10.0, 10.001, 30.0]), family=np.zeros(4, dtype=np.int64),
                  new_tokens=np.array([5, 5, 5, 5]), prompt_tokens=np.array([50, 50, 50, 50]),
                  images=np.zeros(4, dtype=np.int64))
    result = simulate(cost, EngineConfig(concurrency=1), pages)
    sent = result.arrival.tolist()
    assert sent[0] == 0.0 and sent[1] == 10.0 and sent[3] == 30.0
    # the third is due at 10.001 but the one client is busy with the second until it finishes
    assert sent[2] == pytest.approx(result.finish[1]) and sent[2] > 10.001
    # text-only requests run no vision and prefill their own prompts
    assert result.prompt_tokens.tolist() == [50, 50, 50, 50]
    assert result.finish[0] < 0.2


def test_guidellm_reports_of_both_layouts_read_alike():
    """GuideLLM v0.4+ keeps the strategy in config and the totals in metrics, and its TPOT counts the first token:
    the TPOT of vLLM and SGLang is taken from the listed requests instead."""
    from registry.serving.bench_results import parse_results

    document = json.loads((DATA / "guidellm-benchmarks.json").read_text())
    old = parse_results(json.dumps(document), "old.json")[0]
    bench = document["benchmarks"][0]
    newer = {k: v for k, v in bench.items() if k not in ("args", "request_totals")}
    newer["config"] = {"strategy": bench["args"]["strategy"]}
    newer["metrics"] = dict(bench["metrics"], request_totals=bench["request_totals"])
    new = parse_results(json.dumps({"benchmarks": [newer]}), "new.json")[0]
    assert (new.requests, new.completed, new.max_concurrency, new.total_output_tokens) == (4, 4, 4, 100)
    assert new.per_request == old.per_request
    # (e2el - ttft) / (output - 1) of the 4 requests: (230-50)/9, (440-60)/19, (650-70)/29, (860-80)/39 = 20 ms
    assert new.latency_ms["mean_tpot_ms"] == pytest.approx(20.0, rel=1e-5)
    assert new.latency_ms["mean_ttft_ms"] == old.latency_ms["mean_ttft_ms"]


def test_a_service_request_cannot_name_a_trace_file():
    from registry.pricing.whatif import ScenarioError, scenario_from_mapping
    from registry.serving.scenario import serving_spec

    scenario = scenario_from_mapping({"name": "t", "base": {"profile": "dsocr-standard-v1"},
                                      "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
                                      "serving": {"requests": "/etc/passwd"}}, "request body")
    with pytest.raises(ScenarioError, match="a request trace is read from a file beside a scenario file"):
        serving_spec(scenario)
