"""Serving engines in parts: the KV block pool, the schedulers of each policy, the host model, the page feeder (CPU
pool, closed loop), the engine loop composing them with a fake GPU cost (no torch), the shipped engine and host
profiles, and scenarios that pick them."""

import json

import attrs
import numpy as np
import pytest
import yaml

from tests.helpers import REPO, rows, run_command


@attrs.frozen
class Family:
    page: str
    prefill_tokens: int
    vision_s: float


@attrs.define
class FakeCost:
    """A GPU step cost with round numbers: decode 10 ms + 1 ms per page (padded) + 1 us per token of context;
    prefill 20 ms + 10 us per token; vision per page from its family."""

    families: list
    kv_pool_bytes: int = 10 ** 9
    kv_bytes_per_token: int = 1
    decode_base_s: float = 0.010
    decode_per_page_s: float = 0.001
    decode_per_context_s: float = 1e-6
    prefill_base_s: float = 0.020
    prefill_per_token_s: float = 1e-5

    def decode_time(self, b, context):
        b = np.atleast_1d(np.asarray(b, dtype=float))
        return self.decode_base_s + self.decode_per_page_s * b + self.decode_per_context_s * np.asarray(context)

    def decode_series(self, b, context, steps, context_step=None):
        step = b if context_step is None else context_step
        return self.decode_time(b, context + step * np.arange(steps, dtype=float))

    def step_time(self, b, context, p=0.0, q=0.0, vision_pages=None):
        vision = 0.0 if vision_pages is None else float(sum(n * f.vision_s for n, f in zip(vision_pages,
                                                                                            self.families)))
        if p > 0:
            return self.prefill_base_s + self.prefill_per_token_s * (p + b) + vision
        if b > 0:
            return float(self.decode_time(b, context)[0]) + vision
        return vision


PAGE = Family("1000x1000", 100, 0.05)


def pages_of(arrival, new_tokens, preprocess_s=None):
    from registry.serving.engine import Pages

    n = len(new_tokens)
    return Pages(arrival=np.asarray(arrival, dtype=float), family=np.zeros(n, dtype=np.int64),
                 new_tokens=np.asarray(new_tokens, dtype=np.int64),
                 preprocess_s=None if preprocess_s is None else np.full(n, float(preprocess_s)))


# -- the parts alone ---------------------------------------------------------------------------------------------


def test_block_pool_grows_and_releases():
    from registry.serving.scheduler import BlockPool

    pool = BlockPool(10, 16, 3)
    pages = np.array([0, 1])
    assert pool.extra(pages, np.array([17, 16])).tolist() == [2, 1]
    pool.grow(pages, np.array([2, 1]))
    assert (pool.free, pool.used, pool.held.tolist()) == (7, 3, [2, 1, 0])
    assert pool.extra(pages, np.array([32, 33])).tolist() == [0, 2]
    pool.release(np.array([0]))
    assert (pool.free, pool.held.tolist()) == (9, [0, 1, 0])


def _state(prompts, new_tokens, blocks=1000, block_size=16):
    from registry.serving.scheduler import BlockPool, EngineState

    n = len(prompts)
    state = EngineState(np.asarray(prompts, dtype=np.int64), np.asarray(new_tokens, dtype=np.int64),
                        np.zeros(n, dtype=np.int64), BlockPool(blocks, block_size, n))
    state.waiting.extend(range(n))
    return state


def _apply(state, plan):
    state.computed[plan.run] = plan.comp + plan.alloc
    state.pool.grow(plan.run, plan.new_blocks)
    state.generated[plan.run[plan.emits]] += 1


def test_chunked_prefill_mixes_decode_and_chunks_prefill_into_the_budget():
    from registry.serving.scheduler import ChunkedPrefillScheduler

    state = _state([100, 100, 100], [5, 5, 5])
    scheduler = ChunkedPrefillScheduler(max_num_seqs=8, max_num_batched_tokens=150)
    plan = scheduler.schedule(state)  # page 0 whole, page 1's first 50 tokens
    assert plan.run.tolist() == [0, 1] and plan.alloc.tolist() == [100, 50] and plan.admitted == [0, 1]
    assert plan.emits.tolist() == [True, False] and plan.new_blocks.tolist() == [7, 4]
    _apply(state, plan)
    plan = scheduler.schedule(state)  # page 0 decodes, page 1 finishes its prefill, page 2 takes what is left
    assert plan.run.tolist() == [0, 1, 2] and plan.alloc.tolist() == [1, 50, 99]
    assert plan.prefilling.tolist() == [False, True, True] and plan.emits.tolist() == [True, True, False]


def test_prefill_first_admits_whole_prompts_alone_then_decodes():
    from registry.serving.scheduler import PrefillFirstScheduler

    state = _state([100, 100, 100], [5, 5, 5])
    scheduler = PrefillFirstScheduler(max_num_seqs=8, max_num_batched_tokens=250)
    plan = scheduler.schedule(state)  # two whole prompts fit the budget, the third waits
    assert plan.run.tolist() == [0, 1] and plan.alloc.tolist() == [100, 100] and plan.emits.all()
    _apply(state, plan)
    plan = scheduler.schedule(state)  # the third is admitted: a prefill-only step, the running pages wait
    assert plan.run.tolist() == [2] and plan.alloc.tolist() == [100]
    _apply(state, plan)
    plan = scheduler.schedule(state)  # nothing waits: every running page decodes one token
    assert plan.run.tolist() == [0, 1, 2] and plan.alloc.tolist() == [1, 1, 1] and not plan.prefilling.any()


def test_prefill_first_preempts_the_last_admitted_when_blocks_run_out():
    from registry.serving.scheduler import PrefillFirstScheduler

    state = _state([32, 32], [5, 5], blocks=4)
    scheduler = PrefillFirstScheduler(max_num_seqs=8, max_num_batched_tokens=1000)
    _apply(state, scheduler.schedule(state))  # both admitted: 2 blocks each, the pool full
    plan = scheduler.schedule(state)  # each needs a third block: page 1 (admitted last) is preempted
    assert plan.preempted and plan.run.tolist() == [0] and list(state.waiting) == [1]
    assert state.preemptions.tolist() == [0, 1] and state.target[1] == 32 + 1


def test_host_model_prices_each_piece():
    from registry.serving.host import HostModel, NGramProcessor

    costs = {"schedule_step_us": 100, "schedule_per_request_us": 10, "sampler_per_request_us": 5,
             "logits_call_per_request_us": 2, "logits_history_per_token_us": 0.5, "ngram_call_us": 1,
             "ngram_per_window_token_us": 0.25, "detokenize_per_token_us": 20}
    ngram = NGramProcessor(ngram_size=3, window_size=10)
    host = HostModel.from_costs(costs, {"logits", "detokenize"}, ngram, rebuilds_history=True)
    generated = np.array([1, 5, 40])  # window positions scanned: 0, 5 - 3 + 1 = 3, 10 - 3 + 1 = 8
    assert host.window_tokens(generated) == 11
    serial, overlapped = host.step(4, 3, float(generated.sum()), 11)
    assert serial == pytest.approx((100 + 10 * 4 + 5 * 3) * 1e-6)
    assert overlapped == pytest.approx(((2 + 1) * 3 + 0.5 * 46 + 0.25 * 11 + 20 * 3) * 1e-6)
    # a leap of pure-decode steps: the history and the window grow by a token a page per step
    series = host.decode_series(generated, 3)
    for t in range(3):
        g = generated + t
        expected = host.step(3, 3, float(g.sum()), host.window_tokens(g))
        assert series[0][t] == pytest.approx(expected[0]) and series[1][t] == pytest.approx(expected[1])


# -- the engine loop, hand-computed ------------------------------------------------------------------------------


def test_prefill_first_stalls_running_pages_by_exactly_the_new_pages_vision_and_prefill():
    from registry.serving.engine import EngineConfig, simulate

    cost = FakeCost([PAGE])
    config = EngineConfig(max_num_seqs=8, max_num_batched_tokens=1000, policy="prefill-first")
    trace = []
    result = simulate(cost, config, pages_of([0.0, 0.05], [5, 3]), trace=trace, leap=False)
    prefill_s = 0.05 + 0.020 + 1e-5 * 100
    assert all(step.decoding == 0 or step.prefill_tokens == 0 for step in trace)  # no step mixes them
    assert [(s.decoding, s.prefill_tokens) for s in trace[:3]] == [(0, 100), (0, 100), (2, 0)]
    assert trace[1].seconds == pytest.approx(prefill_s) and trace[1].start_s == pytest.approx(prefill_s)
    # page 0's first token ends step 1; its second token ends step 3: the second page's prefill stalled it
    assert result.first_token[0] == pytest.approx(prefill_s)
    assert result.first_token[1] == pytest.approx(2 * prefill_s)
    decode_s = 0.010 + 0.001 * 2 + 1e-6 * (100 + 100)
    assert trace[2].seconds == pytest.approx(decode_s)
    # chunked prefill mixes the second page's prefill with page 0's decode instead
    mixed = []
    simulate(cost, attrs.evolve(config, policy="chunked-prefill"), pages_of([0.0, 0.05], [5, 3]), trace=mixed,
             leap=False)
    assert mixed[1].decoding == 1 and mixed[1].prefill_tokens == 100


@pytest.mark.parametrize("detokenize_us,step_s", [(30_000, 0.001 + 0.030), (5_000, 0.001 + 0.0111)])
def test_serial_host_time_adds_and_overlapped_host_time_takes_the_max(detokenize_us, step_s):
    from registry.serving.engine import EngineConfig, simulate
    from registry.serving.host import HostModel

    cost = FakeCost([Family("p", 100, 0.0)])
    host = HostModel.from_costs({"schedule_step_us": 1000, "detokenize_per_token_us": detokenize_us},
                                {"detokenize"})
    trace = []
    result = simulate(cost, EngineConfig(), pages_of([0.0], [3]), host=host, trace=trace, leap=False)
    prefill_gpu = 0.020 + 1e-5 * 100
    assert trace[0].seconds == pytest.approx(0.001 + max(prefill_gpu, detokenize_us * 1e-6))
    # decode steps at context 100 and 101: 11.1 ms and 11.101 ms of GPU
    assert trace[1].seconds == pytest.approx(step_s, abs=2e-6)
    assert result.finish[0] == pytest.approx(sum(s.seconds for s in trace))
    assert result.host_wait_s == pytest.approx(sum(s.seconds - s.gpu_s for s in trace))


def test_a_pure_decode_batch_is_padded_to_the_next_captured_graph():
    from registry.serving.engine import EngineConfig, simulate

    cost = FakeCost([Family("p", 16, 0.0)])
    trace = []
    simulate(cost, EngineConfig(capture_sizes=(1, 2, 4, 8)), pages_of([0.0] * 3, [4, 4, 4]), trace=trace,
             leap=False)
    decode = [s for s in trace if s.prefill_tokens == 0]
    # 3 pages replay the graph of 4: 10 ms + 4 x 1 ms + context (48 + 3 tokens a step)
    assert decode[0].gpu_s == pytest.approx(0.010 + 0.004 + 1e-6 * 48)
    assert decode[1].gpu_s == pytest.approx(0.010 + 0.004 + 1e-6 * 51)


def test_a_cpu_pool_caps_offline_throughput_at_workers_over_seconds_per_page():
    from registry.serving.engine import EngineConfig, simulate

    cost = FakeCost([Family("p", 100, 0.0)])
    config = EngineConfig(cpu_workers=3)
    result = simulate(cost, config, pages_of(np.zeros(300), np.full(300, 5), preprocess_s=0.5))
    summary = result.summary()
    assert 6.0 * 0.98 <= summary["pages_per_s"] <= 6.0  # 3 workers / 0.5 s
    assert summary["bound_by"] == "cpu-pool" and summary["cpu_utilization"] > 0.98
    # all-first: the engine starts when the last page is preprocessed (100 rounds of 0.5 s)
    first = simulate(cost, attrs.evolve(config, cpu_pipeline="all-first"),
                     pages_of(np.zeros(300), np.full(300, 5), preprocess_s=0.5))
    assert first.first_token.min() > 50.0


def test_a_closed_loop_keeps_at_most_its_concurrency_in_flight():
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate

    cost = FakeCost([Family("p", 100, 0.02)])
    pages = make_pages(200, 5, PageMix(median=50, p90=120, max_tokens=400), None, closed_loop=True)
    result = simulate(cost, EngineConfig(concurrency=7, cpu_workers=2), attrs.evolve(
        pages, preprocess_s=np.full(200, 0.01)))
    assert result.pages_in_system_max() == 7
    assert np.isfinite(result.arrival).all() and (result.finish >= result.arrival).all()
    # a page is sent when one finishes: every send after the first 7 is at some page's finish
    later = np.sort(result.arrival)[7:]
    assert np.isin(later, result.finish).all()


@pytest.mark.parametrize("engine", ["vllm-v0", "vllm-v1", "vllm-v1-async", "sglang"])
def test_littles_law_and_the_leap_hold_for_every_engine(engine):
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate
    from registry.serving.host import NGramProcessor
    from registry.serving.profiles import shipped_profiles

    profile = {p.name: p for _, p in shipped_profiles("engine")}[engine]
    host = {p.name: p for _, p in shipped_profiles("host")}[profile.default_host]
    model = profile.host_model(host, NGramProcessor(20, 50))
    cost = FakeCost([Family("a", 900, 0.03), Family("b", 300, 0.01)])
    config = EngineConfig(max_num_seqs=64, max_num_batched_tokens=2048, block_size=profile.block_size,
                          policy=profile.policy, capture_sizes=profile.capture_sizes, cpu_workers=4,
                          kv_pool_blocks=60_000 // profile.block_size)
    for rate, concurrency in ((None, None), (8.0, None), (None, 24)):
        pages = make_pages(300, 11, PageMix(median=200, p90=600, max_tokens=2000, shares=(0.6, 0.4)), rate,
                           closed_loop=concurrency is not None, preprocess_s_per_family=[0.2, 0.1])
        run = attrs.evolve(config, concurrency=concurrency)
        leaped = simulate(cost, run, pages, host=model)
        stepped = simulate(cost, run, pages, host=model, leap=False)
        np.testing.assert_allclose(leaped.finish, stepped.finish, rtol=1e-9)
        np.testing.assert_allclose(leaped.first_token, stepped.first_token, rtol=1e-9)
        assert leaped.steps == stepped.steps
        summary = leaped.summary()
        little = leaped.pages_in_system_mean() / (summary["pages_per_s"] * summary["mean_page_latency_s"])
        assert little == pytest.approx(1.0, abs=0.02)


# -- profiles ----------------------------------------------------------------------------------------------------


def test_the_shipped_profiles_say_what_each_engine_does():
    from registry.serving.host import PIECES
    from registry.serving.profiles import shipped_profiles

    engines = {p.name: p for _, p in shipped_profiles("engine")}
    assert set(engines) == {"vllm-v0", "vllm-v1", "vllm-v1-async", "sglang"}
    assert engines["vllm-v0"].policy == "prefill-first" and engines["vllm-v1"].policy == "chunked-prefill"
    v0 = engines["vllm-v0"].capture_sizes
    assert v0[:5] == (1, 2, 4, 8, 16) and v0[-1] == 512 and 104 in v0  # a batch of 100 pads to 104
    v1 = engines["vllm-v1"].capture_sizes
    assert v1[-1] == 512 and 248 in v1 and 256 in v1 and 264 not in v1 and 272 in v1
    for engine in engines.values():
        assert sorted(engine.host_serial + engine.host_overlapped) == sorted(PIECES)
    assert set(engines["vllm-v0"].host_overlapped) == {"logits", "detokenize"}
    assert engines["vllm-v0"].rebuilds_logits_history and not engines["vllm-v1"].rebuilds_logits_history
    hosts = {p.name for _, p in shipped_profiles("host")}
    assert "none" in hosts and all(e.default_host in hosts for e in engines.values())


BAD_PROFILE_FILES = [
    ("host", "costs:\n    schedule_step_us: {value: -3, spread: 1}\n", 5, "costs.schedule_step_us.value: must be a "
                                                                           "number from 0 to 1e9, got -3"),
    ("host", "costs: {speed_us: {value: 1, spread: 0}}\n", 4, "costs.speed_us: unknown host cost"),
    ("engine", None, 7, "cuda_graph_capture_sizes: must be increasing: 4 follows 8"),
]


@pytest.mark.parametrize("kind,tail,line,fragment", BAD_PROFILE_FILES)
def test_a_bad_profile_file_is_refused_in_one_line_and_stores_nothing(registry_url, tmp_path, kind, tail, line,
                                                                      fragment):
    if kind == "host":
        text = f"- name: mine\n  description: mine\n  source: mine\n  {tail}"
    else:
        text = ("- name: mine\n  follows: x\n  source: x\n  policy: chunked-prefill\n  block_size: 16\n"
                "  max_num_seqs: 8\n  cuda_graph_capture_sizes: [1, 8, 4]\n  host_serial: [schedule]\n"
                "  host_overlapped: [prepare_inputs, sampling_metadata, sampler, bookkeeping, logits, detokenize]\n"
                "  rebuilds_logits_history: false\n  max_num_batched_tokens: 64\n  cpu_workers: 1\n"
                "  default_host: none\n")
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    before = rows(registry_url, "SELECT COUNT(*) FROM serving_profiles")
    result = run_command([kind, "add", str(path), "--db", registry_url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:{line}: {fragment}" in lines[0], lines
    assert rows(registry_url, "SELECT COUNT(*) FROM serving_profiles") == before


def test_a_host_profile_added_prices_a_scenario_like_the_shipped_one(registry_url, tmp_path):
    from registry.pricing.catalog import shipped

    entries = yaml.safe_load(shipped("hosts.yaml"))
    measured = next(e for e in entries if e["name"] != "none")
    mine = dict(measured, name="my-host", version=3)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump([mine]))
    result = run_command(["host", "add", str(tmp_path / "mine.yaml"), "--db", registry_url])
    assert result.exit_code == 0 and "my-host@3 added" in result.output
    listed = run_command(["host", "list", "--db", registry_url]).output
    assert "my-host@3" in listed and "none@1" in listed
    shown = run_command(["host", "show", "my-host", "--db", registry_url]).output
    assert shown.startswith("# host profile my-host@3 (user)")
    scenario = (REPO / "queries" / "examples" / "vllm-serve.yaml").read_text()
    scenario = scenario.replace("hardware: [h100-sxm, l40s]", "hardware: [h100-sxm]").replace(
        "concurrency: [1, 16, 64]", "concurrency: [8]").replace("count: 400", "count: 60")
    points = {}
    for host in (measured["name"], "my-host@3"):
        path = tmp_path / f"{host}.yaml"
        path.write_text(scenario.replace("engine: vllm-v1", f"engine: vllm-v1\n  host: {host}"))
        result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"])
        assert result.exit_code == 0, result.output
        points[host] = json.loads(result.output)["serving"][0]
    mine_point, shipped_point = points["my-host@3"], points[measured["name"]]
    assert mine_point["host"] == "my-host@3" and shipped_point["host"] == f"{measured['name']}@1"
    assert mine_point["pages_per_s"] == shipped_point["pages_per_s"] and mine_point["concurrency"] == 8


# -- scenarios ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["serving.yaml", "serving-preempting.yaml"])
def test_no_host_work_and_no_padding_give_the_rows_of_the_engine_before_profiles(registry_url, tmp_path, name):
    before = json.loads((REPO / "tests" / "data" / "serving-before-engines.json").read_text())["scenarios"][name]
    source = REPO / ("queries/examples" if name == "serving.yaml" else "tests/data") / name
    scenario = yaml.safe_load(source.read_text())
    scenario["serving"].update(host="none", cuda_graph_capture_sizes=[])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(scenario))
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    after = json.loads(result.output)["serving"]
    assert len(after) == len(before)
    for old, new in zip(before, after):
        for key, value in old.items():
            if isinstance(value, float):
                assert new[key] == pytest.approx(value, rel=1e-12), key
            else:
                assert new[key] == value, key
        assert new["engine"] == "vllm-v1@1" and new["host"] == "none@1"


def test_the_deepseek_pipeline_example_runs_the_v0_engine_with_its_host_work(registry_url, tmp_path):
    scenario = yaml.safe_load((REPO / "queries" / "examples" / "deepseek-pdf-pipeline.yaml").read_text())
    scenario["sweep"]["hardware"] = ["a100-40g"]
    scenario["serving"]["arrival"] = {"offline_pages": 150}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(scenario))
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    point = json.loads(result.output)["serving"][0]
    assert point["engine"] == "vllm-v0@1" and point["cpu_workers"] == 64
    stored = rows(registry_url, "SELECT engine, block_size, max_num_seqs, host_wait_share, bound_by, cpu_utilization "
                                "FROM serving_points")
    engine, block_size, seqs, host_share, bound, cpu = stored[0]
    assert (engine, block_size, seqs) == ("vllm-v0", 256, 100)
    assert 0 < host_share < 1 and bound in ("gpu", "host", "cpu-pool", "kv", "load") and 0 < cpu < 1


def test_the_documented_engine_example_adds_and_serves(tmp_path):
    """docs/examples/my-engine.yaml, the file the serving docs add, is accepted as it is and its graph sizes and
    workers are the ones a scenario then runs with."""
    db = str(tmp_path / "e.duckdb")
    added = run_command(["engine", "add", str(REPO / "docs" / "examples" / "my-engine.yaml"), "--db", db])
    assert added.exit_code == 0, added.output
    shown = yaml.safe_load(run_command(["engine", "show", "vllm-v1-small-graphs", "--db", db]).stdout)
    assert shown[0]["cuda_graph_capture_sizes"] == [1, 2, 4, 8, 16, 32, 64]
    assert shown[0]["cpu_workers"] == 8 and shown[0]["policy"] == "chunked-prefill"
