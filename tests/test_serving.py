"""Serving simulation: step costs from the pricing views, the vLLM V1 engine simulation, serving scenarios."""

import json

import numpy as np
import pytest
import sqlalchemy as sa

from tests.helpers import REPO, rows, run_command

STANDARD_PAGES = ["1654x2339"]


def _ids(db_url, hardware="h100-sxm", runtime="vllm"):
    from registry.pricing.catalog import resolve_hardware, resolve_runtime
    from registry.store.db import Registry

    registry = Registry(db_url)
    with registry.begin() as conn:
        hid = resolve_hardware(conn, hardware)[0]
        rid = resolve_runtime(conn, runtime)[0]
    return registry, hid, rid


@pytest.fixture(scope="session")
def h100_cost(tmp_path_factory):
    """The step costs of the standard page on the H100 under vllm (a DuckDB registry of its own)."""
    from registry.store.db import Registry
    from registry.serving.step_cost import step_costs

    url = str(tmp_path_factory.mktemp("serving") / "cost.duckdb")
    Registry(url).upgrade()
    registry, hid, rid = _ids(url)
    try:
        cost = step_costs(registry, "t", "dsocr-standard-v1", {}, STANDARD_PAGES, [hid], [rid])[0]
    finally:
        registry.dispose()
    return cost, url


def test_step_cost_equals_the_views_on_points_not_used_to_derive_it(registry_url):
    """Decode at batch 3 and a third context, prefill at a fourth prompt length, vision of one page: the step
    function against the views' stage times of those single-batch points (rel 1e-6)."""
    from registry.serving.step_cost import make_workloads, record_probes, step_costs

    registry, hid, rid = _ids(registry_url, "a100-40g")
    try:
        cost = step_costs(registry, "t", "dsocr-standard-v1", {}, STANDARD_PAGES, [hid], [rid])[0]
        held = [("x", dict(page="1654x2339", batch=3, new_tokens=2, prompt_text_tokens=509)),
                ("x", dict(page="1654x2339", batch=1, new_tokens=2, prompt_text_tokens=150))]
        scenario_id, _ = record_probes(registry, "held", make_workloads("dsocr-standard-v1", {}, held), [hid], [rid])
        with registry.begin() as conn:
            stage = {(p, s): (t, c) for p, s, t, c in conn.execute(sa.text(
                "SELECT point_index, stage, SUM(stage_time_s), MAX(calls) FROM v_point_stage_time "
                "WHERE scenario_id = :s GROUP BY point_index, stage"), {"s": scenario_id}).all()}
    finally:
        registry.dispose()
    context = 912 + 500
    assert cost.step_time(3, 3 * context) == pytest.approx(stage[(1, "decode")][0], rel=1e-6)
    p = 912 + 141
    assert cost.prefill_time(p, p * p) == pytest.approx(stage[(2, "prefill")][0], rel=1e-6)
    assert cost.step_time(0, 0, vision_pages=1) == pytest.approx(
        stage[(2, "vision")][0] + stage[(2, "projector")][0], rel=1e-6)
    # vision runs one page per call: three pages cost three calls
    assert stage[(1, "vision")][1] == 3
    assert cost.step_time(0, 0, vision_pages=3) == pytest.approx(stage[(1, "vision")][0] + stage[(1, "projector")][0],
                                                                 rel=1e-6)


def _static_latency(url, new_tokens):
    from registry.pricing.points import PointKey, ScenarioRecord, read_points, record_scenario
    from registry.store.analyzed import ensure_reports
    from analyzer.workload import load_profile

    registry, hid, rid = _ids(url)
    try:
        key = ensure_reports(registry, [load_profile("dsocr-standard-v1", new_tokens=new_tokens)], "t",
                             execution="vllm")[0]
        with registry.begin() as conn:
            sid = record_scenario(conn, ScenarioRecord(name="static", definition={}), [PointKey(key, hid, rid)]).scenario_id
        return read_points(registry, sid)[0]["page_latency_s"]
    finally:
        registry.dispose()


def test_one_page_at_a_time_equals_the_static_model(h100_cost):
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate

    cost, url = h100_cost
    static = _static_latency(url, 512)
    pages = make_pages(4, 1, PageMix(median=512, p90=512, max_tokens=512), None)
    assert (pages.new_tokens == 512).all()
    result = simulate(cost, EngineConfig(max_num_seqs=1), pages)
    service = np.diff(np.concatenate([[0.0], np.sort(result.finish)]))
    assert service == pytest.approx(np.full(4, static), rel=0.01)
    assert result.summary()["preemptions"] == 0


def test_littles_law_holds_on_the_trace(h100_cost):
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate

    cost, _ = h100_cost
    result = simulate(cost, EngineConfig(), make_pages(1500, 3, PageMix(), 6.0))
    summary = result.summary()
    in_system = result.pages_in_system_mean()
    assert in_system == pytest.approx(summary["pages_per_s"] * summary["mean_page_latency_s"], rel=0.02)
    assert (result.finish >= result.first_token).all() and (result.first_token > result.arrival).all()


def test_saturated_throughput_stays_under_the_step_cost_bound(h100_cost):
    from registry.serving.engine import EngineConfig, PageMix, make_pages, saturated_bound_pages_per_s, simulate

    cost, _ = h100_cost
    config = EngineConfig(max_num_seqs=128)
    pages = make_pages(1500, 5, PageMix(), None)
    summary = simulate(cost, config, pages).summary()
    bound = saturated_bound_pages_per_s(cost, config, float(pages.new_tokens.mean()))
    assert 0 < summary["pages_per_s"] <= bound
    assert summary["mean_running_pages"] > 100  # it was saturated


def test_a_tiny_kv_pool_preempts_and_loses_no_page(h100_cost):
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate

    cost, _ = h100_cost
    pages = make_pages(300, 11, PageMix(median=400, p90=900, max_tokens=2000), None)
    pool = int(((912 + 2000) // 16 + 1) * 3)  # about three long pages
    result = simulate(cost, EngineConfig(max_num_seqs=64, kv_pool_blocks=pool), pages)
    assert result.preemptions.sum() > 0
    assert not np.isnan(result.finish).any() and not np.isnan(result.first_token).any()
    assert (result.emitted == result.new_tokens).all()  # every page finished exactly once, with all its tokens
    assert result.kv_blocks_peak <= pool
    summary = result.summary()
    assert summary["pages"] == 300 and summary["kv_pool_use_peak"] <= 1.0
    full = simulate(cost, EngineConfig(max_num_seqs=64), pages)
    assert full.preemptions.sum() == 0
    assert result.summary()["duration_s"] >= full.summary()["duration_s"]


def test_same_seed_same_bytes(h100_cost):
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate

    cost, _ = h100_cost
    outputs = []
    for _ in range(2):
        result = simulate(cost, EngineConfig(), make_pages(800, 42, PageMix(shares=(1.0,)), 5.0))
        outputs.append(b"".join(a.tobytes() for a in (result.arrival, result.first_token, result.finish,
                                                      result.new_tokens, result.preemptions))
                       + json.dumps(result.summary(), sort_keys=True).encode())
    assert outputs[0] == outputs[1]
    other = simulate(cost, EngineConfig(), make_pages(800, 43, PageMix(shares=(1.0,)), 5.0))
    assert other.finish.tobytes() != simulate(cost, EngineConfig(), make_pages(800, 42, PageMix(), 5.0)).finish.tobytes()


SMALL = """name: small-serving
base: {profile: dsocr-standard-v1}
sweep: {hardware: [h100-sxm, a100-40g], runtime: [vllm]}
serving:
  engine: vllm-v1
  max_num_seqs: 64
  arrival: {rate_per_s: [2, 20]}
  pages: {count: 150, seed: 7}
  page_mix:
    new_tokens: {distribution: lognormal, median: 300, p90: 600, max: 2000}
    page_size: [{size: 1654x2339, share: 0.5}, {size: 1240x1754, share: 0.5}]
target: {pages_per_day: 1000000, ttft_p99_s: 5, page_latency_p99_s: 30}
"""


def test_whatif_serving_records_points_and_the_summary_view(registry_url, tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text(SMALL)
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json",
                          "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    points = json.loads(result.stdout)["serving"]
    assert len(points) == 4 and (tmp_path / "s.png").stat().st_size > 0
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_points") == [(4,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_requests") == [(0,)]  # only when asked
    by = {(p["hardware"], p["arrival_rate_per_s"]): p for p in points}
    slow = by[("h100-sxm", 2.0)]
    assert slow["pages_per_s"] == pytest.approx(2.0, rel=0.25)
    assert slow["ttft_p50_s"] <= slow["ttft_p99_s"] <= slow["page_latency_p99_s"]
    assert slow["page_latency_p50_s"] <= slow["page_latency_p90_s"] <= slow["page_latency_p99_s"]
    for hardware in ("h100-sxm", "a100-40g"):
        meeting = [p["arrival_rate_per_s"] for p in points if p["hardware"] == hardware and p["meets_targets"]]
        best = by[(hardware, 2.0)]["best_rate_per_s"]
        assert best == (max(meeting) if meeting else None)
        if best:
            assert by[(hardware, 2.0)]["gpus_needed"] == np.ceil(1_000_000 / (86400 * best))
    csv_a = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "csv"]).stdout
    csv_b = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "csv"]).stdout
    strip = lambda text: [line.split(",", 1)[1] for line in text.splitlines()]  # noqa: E731 (point index kept)
    assert strip(csv_a) == strip(csv_b)  # same seed, same output
    # the same run three times: one serving scenario and one probe scenario, the points stored once
    assert rows(registry_url, "SELECT kind, COUNT(*) FROM scenarios GROUP BY kind ORDER BY kind") == [
        ("serving", 1), ("serving-probe", 1)]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_points") == [(4,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM v_point_summary") == [(0,)]  # probes are not what-if points
    fresh = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--new-run", "--format", "json"])
    assert json.loads(fresh.stdout)["scenario_id"] != json.loads(result.stdout)["scenario_id"]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_points") == [(8,)]
    assert rows(registry_url, "SELECT kind, COUNT(*) FROM scenarios GROUP BY kind ORDER BY kind") == [
        ("serving", 2), ("serving-probe", 1)]


def test_serve_sim_writes_one_point_and_its_pages(registry_url, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "serving.yaml"
    path.write_text(SMALL)
    out = tmp_path / "requests.parquet"
    result = run_command(["serve-sim", "--scenario", str(path), "--db", registry_url, "--rate", "3",
                          "--requests-out", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pydict()
    assert len(table["page"]) == 150 and set(table["page"]) == {"1654x2339", "1240x1754"}
    assert all(f >= t >= a for a, t, f in zip(table["arrival_s"], table["first_token_s"], table["finish_s"]))
    assert rows(registry_url, "SELECT COUNT(*), MIN(arrival_rate_per_s) FROM serving_points") == [(1, 3.0)]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_requests") == [(150,)]
    assert rows(registry_url, "SELECT hardware FROM v_serving_summary") == [("h100-sxm",)]
    again = run_command(["serve-sim", "--scenario", str(path), "--db", registry_url, "--rate", "3",
                         "--requests-out", str(out), "--format", "json"])
    assert again.exit_code == 0, again.output  # the same simulation: its point and pages are stored once
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_points") == [(1,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_requests") == [(150,)]



@pytest.mark.parametrize("option,name,message", [
    ("--hardware", "h1000", "--hardware 'h1000': not in the scenario's sweep.hardware; give one of: h100-sxm, "
                            "a100-40g"),
    ("--runtime", "hf-eager", "--runtime 'hf-eager': not in the scenario's sweep.runtime; give one of: vllm@3"),
])
def test_serve_sim_refuses_a_device_the_scenario_does_not_sweep(registry_url, tmp_path, option, name, message):
    """A --hardware or --runtime outside the scenario's sweep is an error naming what it sweeps, not a silent
    simulation of its first GPU or runtime."""
    path = tmp_path / "serving.yaml"
    path.write_text(SMALL)
    result = run_command(["serve-sim", "--scenario", str(path), "--db", registry_url, "--rate", "3", option, name])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"dsocr-registry: error: {message}"]
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_points") == [(0,)]


BAD = [
    ("engine: tgi", "serving.engine: unknown engine profile 'tgi'"),
    ("max_num_seqs: 0", "serving.max_num_seqs: must be a positive integer"),
    ("max_num_batched_tokens: -5", "serving.max_num_batched_tokens: must be a positive integer"),
    ("max_num_batched_tokens: 512",
     "serving.max_num_batched_tokens: 512 tokens per step (engine vllm-v1@1) is smaller than one page's prefill"),
    ("page_mix: {page_size: []}", "serving.page_mix.page_size: must be a non-empty list"),
    ("page_mix: {page_size: [{size: 1654x2339}]}", "serving.page_mix.page_size: each entry needs size and share"),
    ("page_mix: {page_size: [{size: A4, share: 1}]}", "serving.page_mix.page_size: size must be WIDTHxHEIGHT"),
    ("page_mix: {page_size: [{size: 1654x2339, share: 0.5}, {size: 1240x1754, share: 0.3}]}",
     "serving.page_mix.page_size: shares must sum to 1, got 0.8"),
    ("page_mix: {new_tokens: {median: 700, p90: 100, max: 8000}}", "serving.page_mix.new_tokens.p90: must be >= the median"),
    ("page_mix: {new_tokens: {distribution: zipf}}", "serving.page_mix.new_tokens.distribution: unknown"),
    ("arrival: {rate_per_s: [1, -2]}", "serving.arrival.rate_per_s: must be a list of positive numbers"),
    ("arrival: {rate_per_s: [fast]}", "serving.arrival.rate_per_s: must be a list of positive numbers"),
    ("arrival: {rate_per_s: []}", "serving.arrival.rate_per_s: must be a list of positive numbers"),
    ("arrival: {}", "serving.arrival: give one of rate_per_s"),
    ("gpu_memory_utilization: 1.5", "serving.gpu_memory_utilization: must be a number in (0, 1]"),
    ("max_num_seq: 4", "serving.max_num_seq: unknown key (did you mean 'max_num_seqs'?)"),
    ("engine: vllm-v9", "serving.engine: unknown engine profile 'vllm-v9'"),
    ("host: my-laptop", "serving.host: unknown host profile 'my-laptop'"),
    ("cuda_graph_capture_sizes: [1, 4, 2]", "serving.cuda_graph_capture_sizes: must be increasing: 2 follows 4"),
    ("cpu_workers: 0", "serving.cpu_workers: must be"),
    ("logits_processor: {ngram_size: 30, window_size: 20}", "serving.logits_processor.window_size: must be >= "
                                                            "ngram_size (30)"),
    ("arrival: {concurrency: [0]}", "serving.arrival.concurrency: must be"),
]


@pytest.mark.parametrize("line,fragment", BAD)
def test_bad_serving_scenarios_give_one_line_and_record_nothing(registry_url, tmp_path, line, fragment):
    text = ("base: {profile: dsocr-standard-v1}\nsweep: {hardware: [h100-sxm], runtime: [vllm]}\nserving:\n"
            f"  {line}\n")
    if "arrival" not in line:
        text += "  arrival: {rate_per_s: [1]}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    for command in ("whatif", "serve-sim"):
        result = run_command([command, "--scenario", str(path), "--db", registry_url])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0] and f"{path}:4:" in lines[0], lines
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_points") == [(0,)]


def test_bad_serving_targets_give_one_line(registry_url, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sweep: {hardware: [h100-sxm], runtime: [vllm]}\nserving: {arrival: {rate_per_s: [1]}}\n"
                    "target: {ttft_p99_s: -1}\n")
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url])
    assert result.exit_code == 2 and f"{path}:3: target.ttft_p99_s: must be a positive number" in result.stderr
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]


def test_overrides_reach_the_serving_step_costs(h100_cost):
    from registry.serving.step_cost import step_costs

    cost, url = h100_cost
    registry, hid, rid = _ids(url)
    try:
        slower = step_costs(registry, "o", "dsocr-standard-v1", {}, STANDARD_PAGES, [hid], [rid],
                            overrides={"efficiency_scale": 0.5})[0]
    finally:
        registry.dispose()
    assert slower.prefill_time(912, 912 ** 2) > 1.5 * cost.prefill_time(912, 912 ** 2)


def test_a_serving_scenario_needs_a_vllm_runtime(registry_url, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sweep: {hardware: [h100-sxm], runtime: [hf-eager]}\nserving: {arrival: {rate_per_s: [1]}}\n")
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url])
    assert result.exit_code == 2 and "sweep.runtime: hf-eager@3 does not price the vllm execution" in result.stderr
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]


def test_the_example_serving_scenario_validates():
    from registry.serving.scenario import serving_spec
    from registry.pricing.whatif import load_scenario

    spec = serving_spec(load_scenario(REPO / "queries" / "examples" / "serving.yaml"))
    assert spec.rates == (1.0, 2.0, 4.0, 8.0) and spec.mix.shares == (0.8, 0.2)


def _offline_point(hardware: str, weights: str, usd_per_1000_pages, pages_per_s: float) -> dict:
    return {"hardware": hardware, "runtime": "vllm@3", "arrival_rate_per_s": None, "concurrency": None,
            "pages": 1000, "weights_dtype": weights, "kv_cache_dtype": weights,
            "usd_per_1000_pages": usd_per_1000_pages, "pages_per_s": pages_per_s}


def test_offline_points_are_drawn_as_cost_and_throughput_bars_cheapest_gpu_first():
    """Offline points have no rate to draw latency against: one group of bars per GPU, the group with the cheapest
    bar first and a GPU without a price last, one bar per precision, each bar as long as its dollars per 1,000
    pages (left) and its pages/s (right), its value written beside it."""
    import matplotlib.pyplot as plt

    from registry.serving.scenario import build_serving_figure

    points = [_offline_point("h200", "bf16", 0.093, 13.7), _offline_point("h200", "fp8", 0.084, 15.1),
              _offline_point("l4", "bf16", None, 1.4), _offline_point("l40s", "bf16", 0.066, 4.6),
              _offline_point("l40s", "fp8", 0.052, 5.8)]
    fig = build_serving_figure(points, {"ttft_p99_s": 5})
    try:
        cost, speed = fig.axes
        for axes in (cost, speed):
            assert [t.get_text() for t in axes.get_yticklabels()] == ["l40s / vllm@3", "h200 / vllm@3",
                                                                      "l4 / vllm@3"]
        assert "dollars per 1,000 pages" in cost.get_xlabel() and speed.get_xlabel() == "pages/s on one GPU"
        assert [t.get_text() for t in cost.get_legend().get_texts()] == ["bf16 weights, bf16 KV",
                                                                         "fp8 weights, fp8 KV"]

        def bars(axes):  # (group row, width, colour) of each bar, the group the nearest tick
            return sorted((round(p.get_y() + p.get_height() / 2), round(p.get_width(), 6), p.get_facecolor())
                          for p in axes.patches)

        bf16, fp8 = (p.get_facecolor() for p in cost.get_legend().get_patches())
        assert bars(cost) == sorted([(0, 0.066, bf16), (0, 0.052, fp8), (1, 0.093, bf16), (1, 0.084, fp8),
                                     (2, 0.0, bf16)])
        assert bars(speed) == sorted([(0, 4.6, bf16), (0, 5.8, fp8), (1, 13.7, bf16), (1, 15.1, fp8),
                                      (2, 1.4, bf16)])
        written = {t.get_text() for t in cost.texts}
        assert {"$0.052", "$0.066", "$0.084", "$0.093", "no price"} == written
        assert {"4.6", "5.8", "13.7", "15.1", "1.4"} == {t.get_text() for t in speed.texts}
    finally:
        plt.close(fig)
