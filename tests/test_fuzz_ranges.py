"""Fuzzing the numbers of scenarios (Hypothesis): every numeric field of a what-if and of a serving scenario (the
serving block, the base workload and its sweep, the overrides, the targets) set to values at, inside and beyond its
physical range (analyzer/ranges.py): integers near 2**63 and past it, 1e308, infinities and NaN, zero, negatives,
booleans, strings. Through the library entry points (scenario_from_mapping, serving_spec, expand_workloads) and
the CLI's `whatif --scenario` on DuckDB and PostgreSQL: each is accepted, or refused with one line naming the
scenario; never a traceback or an internal error, within SECONDS_PER_INPUT, nothing written. The CLI runs every
check the command makes before its work; the work itself (analyses, the simulation) is replaced by a stub, since
an accepted scenario at the top of every range may simulate for minutes by design. DSOCR_FUZZ_EXAMPLES sets the
examples per test (default 10)."""

import contextlib
import copy
import os
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer import ranges
from tests.conftest import POSTGRES_URL, postgres_schema
from tests.fuzzing import MESSAGE_CHARS, SECONDS_PER_INPUT
from tests.helpers import rows, run_command

EXAMPLES = int(os.environ.get("DSOCR_FUZZ_EXAMPLES", "10"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# At, just inside and just past each range's bounds (1, 1,024, 4,096, 8,192, 16,384, 65,536, 100,000, 1,048,576,
# 1e-6, 0.001, 20, 1e6, 1e12 ...), and what no range holds.
EDGE_INTS = [0, 1, -1, 2, 63, 64, 65, 1024, 1025, 4096, 4097, 8192, 8193, 16384, 16385, 65536, 65537, 100_000,
             100_001, 1_048_576, 1_048_577, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64,
             10**30]
EDGE_FLOATS = [0.0, -0.0, 5e-324, 1e-7, 1e-6, 1e-3, 0.5, 0.9999999, 1.0, 1.0000001, 1.5, 20.0, 20.000001, 1e5,
               1e5 + 1, 1e6, 1e6 + 1, 1e10, 1e12, 1e13, 1e308, -1e308, float("inf"), float("-inf"), float("nan")]
NUMBERS = st.one_of(
    st.sampled_from(EDGE_INTS), st.sampled_from(EDGE_FLOATS), st.integers(), st.integers(-3, 70_000),
    st.floats(), st.floats(-1, 2e6), st.booleans(), st.none(), st.sampled_from(["1", "1e10", "", "x", "2**63"]),
    st.lists(st.integers(0, 3), max_size=2),
)
SIDES = st.one_of(st.sampled_from(EDGE_INTS), st.integers(0, 20_000))
SIZES = st.one_of(st.tuples(SIDES, SIDES).map(lambda wh: f"{wh[0]}x{wh[1]}"),
                  st.sampled_from(["", "x", "1654x", "9" * 5000 + "x1", "1e3x1e3"]), NUMBERS)

SERVING = {
    "base": {"profile": "dsocr-standard-v1"},
    "sweep": {"hardware": ["h100-sxm"], "runtime": ["vllm"]},
    "serving": {"max_num_seqs": 64, "max_num_batched_tokens": 8192, "block_size": 16, "gpu_memory_utilization": 0.9,
                "arrival": {"rate_per_s": [2, 20]}, "pages": {"count": 20, "seed": 7},
                "page_mix": {"new_tokens": {"distribution": "lognormal", "median": 300, "p90": 600, "max": 2000},
                             "page_size": [{"size": "1654x2339", "share": 0.5}, {"size": "1240x1754", "share": 0.5}]}},
    "overrides": {"memory_gb": 80},
    "target": {"pages_per_day": 1_000_000, "ttft_p99_s": 5, "page_latency_p99_s": 30},
}
SERVING_NUMBERS = [("serving", key) for key in ("max_num_seqs", "max_num_batched_tokens", "block_size",
                                                "gpu_memory_utilization")] + [
    ("serving", "arrival", "rate_per_s", 0), ("serving", "arrival", "rate_per_s", 1),
    ("serving", "arrival", "offline_pages"), ("serving", "pages", "count"), ("serving", "pages", "seed"),
    ("serving", "page_mix", "new_tokens", "median"), ("serving", "page_mix", "new_tokens", "p90"),
    ("serving", "page_mix", "new_tokens", "max"), ("serving", "page_mix", "page_size", 0, "share"),
    ("overrides", "memory_gb"), ("overrides", "peak_tflops"), ("overrides", "efficiency_scale"),
    ("target", "pages_per_day"), ("target", "ttft_p99_s"), ("target", "page_latency_p99_s")]
SERVING_SIZES = [("serving", "page_mix", "page_size", 0, "size"), ("serving", "page_mix", "page_size", 1, "size")]

STATIC = {
    "base": {"profile": "dsocr-standard-v1", "new_tokens": 512, "prompt_text_tokens": 9, "min_tiles": 2,
             "max_tiles": 9},
    "sweep": {"hardware": ["h200"], "batch": [1, 8], "new_tokens": [256], "page": ["1654x2339"]},
    "overrides": {"peak_tflops": 800, "memory_tb_per_s": 3.0, "memory_gb": 80, "efficiency_scale": 0.9},
    "target": {"pages_per_day": 1_000_000, "page_latency_s": 30},
}
STATIC_NUMBERS = [("base", key) for key in ("new_tokens", "prompt_text_tokens", "min_tiles", "max_tiles", "batch")] + [
    ("sweep", "batch", 0), ("sweep", "batch", 1), ("sweep", "new_tokens", 0)] + [
    ("overrides", key) for key in ("peak_tflops", "memory_tb_per_s", "memory_gb", "efficiency_scale")] + [
    ("target", "pages_per_day"), ("target", "page_latency_s")]
STATIC_SIZES = [("sweep", "page", 0), ("base", "page"), ("sweep", "tiles", 0)]


@st.composite
def numeric_edits(draw, base: dict, numbers: list[tuple], sizes: list[tuple]) -> dict:
    """`base` with one to three of its numbers (or WxH sizes) replaced by drawn values."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(numbers + sizes))
        parent = data
        for part in path[:-1]:
            parent = parent.setdefault(part, {}) if isinstance(part, str) else parent[part]
        key = path[-1]
        value = draw(SIZES if path in sizes else NUMBERS)
        if isinstance(parent, list) and key >= len(parent):
            parent.append(value)
        else:
            parent[key] = value
    return data


SERVING_SCENARIOS = numeric_edits(SERVING, SERVING_NUMBERS, SERVING_SIZES)
STATIC_SCENARIOS = numeric_edits(STATIC, STATIC_NUMBERS, STATIC_SIZES)


def _one_line(text: str, name: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines[:5]
    line = lines[0]
    assert len(line) <= MESSAGE_CHARS and line.isprintable(), line[:400]
    assert name in line and "Traceback" not in text and "internal error" not in line, line
    return line


def accepted_overrides(scenario, overrides: dict) -> None:
    """What an accepted scenario holds is within the physical ranges, whatever got past the checks."""
    from registry.pricing.whatif import OVERRIDE_RANGES, TARGET_RANGES

    for key, value in overrides.items():
        assert value is None or OVERRIDE_RANGES[key].contains(value), (key, value)
    for key, value in (scenario.data.get("target") or {}).items():
        assert value is None or TARGET_RANGES[key].contains(value), (key, value)


def accepted_serving(scenario, spec) -> None:
    from registry.serving.scenario import check_simulated_work, simulated_points

    config = spec.config
    assert ranges.MAX_NUM_SEQS.contains(config.max_num_seqs) and ranges.BLOCK_SIZE.contains(config.block_size)
    assert ranges.MAX_NUM_BATCHED_TOKENS.contains(config.max_num_batched_tokens)
    assert ranges.SIMULATED_PAGES.contains(spec.count) and ranges.SEED.contains(spec.seed)
    assert all(rate is None or ranges.ARRIVAL_RATE_PER_S.contains(rate) for rate in spec.rates)
    context = ranges.context_tokens("v1")
    assert 1 <= spec.mix.median <= spec.mix.p90 <= context and spec.mix.median <= spec.mix.max_tokens <= context
    assert spec.gpu_memory_utilization is None or ranges.GPU_MEMORY_UTILIZATION.contains(spec.gpu_memory_utilization)
    check_simulated_work(scenario, spec, simulated_points(scenario, spec))  # within the work limit
    accepted_overrides(scenario, {k: scenario.data["overrides"].get(k) for k in scenario.data.get("overrides", {})})


def accepted_workloads(workloads) -> None:
    for w in workloads:
        assert ranges.PAGE_SIDE_PX.contains(w.page_width_px) and ranges.PAGE_SIDE_PX.contains(w.page_height_px)
        assert ranges.BATCH_PAGES.contains(w.batch)
        assert w.prefill_tokens + w.new_tokens <= ranges.context_tokens(w.variant)
        assert w.tile_grid is None or w.tile_grid[0] * w.tile_grid[1] <= ranges.TILES.high


def library_verdict(data: dict) -> str:
    """The library's checks of a scenario mapping (what the service and the CLI call before any work)."""
    from analyzer.errors import AnalyzerInputError
    from registry.store.db import RegistryError
    from registry.serving.scenario import serving_spec
    from registry.pricing.whatif import _overrides, expand_workloads, scenario_from_mapping

    started = time.perf_counter()
    try:
        scenario = scenario_from_mapping(data, "fuzzed")
        if "serving" in data:
            accepted_serving(scenario, serving_spec(scenario))
        else:
            overrides = _overrides(scenario)
            accepted_workloads(expand_workloads(scenario))
            accepted_overrides(scenario, overrides)
        verdict = "accepted"
    except (RegistryError, AnalyzerInputError) as exc:
        line = _one_line(str(exc), "fuzzed")
        assert line.startswith("fuzzed: "), line
        verdict = "refused"
    assert time.perf_counter() - started <= SECONDS_PER_INPUT
    return verdict


@pytest.mark.parametrize("kind", ["serving", "static"])
def test_fuzzed_scenario_numbers_through_the_library(kind):
    library_verdict(copy.deepcopy(SERVING if kind == "serving" else STATIC))  # the imports, before any timing
    verdicts = []

    @FUZZ
    @given(data=SERVING_SCENARIOS if kind == "serving" else STATIC_SCENARIOS)
    def run(data):
        verdicts.append(library_verdict(data))

    run()
    assert "refused" in verdicts


# -- the command line -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """Registries on every backend the run has (DuckDB, and PostgreSQL when DSOCR_TEST_POSTGRES_URL is set)."""
    urls = [str(tmp_path_factory.mktemp("ranges") / "registry.duckdb")]
    with contextlib.ExitStack() as schemas:
        if POSTGRES_URL:
            urls.append(schemas.enter_context(postgres_schema("ranges")))
        for url in urls:
            assert run_command(["db", "upgrade", "--db", url]).exit_code == 0
        yield urls


@pytest.fixture
def checks_only(monkeypatch):
    """`whatif` with every check it makes, the work after them (analyses, pricing, the simulation) stubbed."""
    import registry.serving.scenario
    import registry.pricing.whatif

    def price_checked(registry_, scenario, progress=False, new_run=False, then=None, analyze=None):
        registry.pricing.whatif._overrides(scenario)
        registry.pricing.whatif.expand_workloads(scenario)
        with registry_.begin() as conn:
            registry.pricing.whatif.resolve_devices(scenario, conn)
        return registry.pricing.whatif.PricedScenario(0, [], False, None)

    monkeypatch.setattr(registry.pricing.whatif, "price_scenario", price_checked)
    monkeypatch.setattr(registry.serving.scenario, "run_serving", lambda *args, **kwargs: (0, [], {}))


WRITTEN = ("scenarios", "scenario_points", "serving_points", "reports")


def cli_verdict(data: dict, folder, urls: list[str]) -> str:
    path = folder / "fuzzed-scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    verdicts = []
    for url in urls:
        before = rows(url, "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in WRITTEN))
        started = time.perf_counter()
        result = run_command(["whatif", "--scenario", str(path), "--db", url, "--format", "json"])
        assert time.perf_counter() - started <= SECONDS_PER_INPUT
        assert result.exit_code in (0, 2), result.output[-2000:]  # never 3, an internal error
        if result.exit_code == 2:
            _one_line(result.stderr, str(path))
            assert result.stdout == ""
        assert rows(url, "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in WRITTEN)) == before
        verdicts.append("accepted" if result.exit_code == 0 else "refused")
    assert len(set(verdicts)) == 1, verdicts
    return verdicts[0]


@pytest.mark.parametrize("kind", ["serving", "static"])
def test_fuzzed_scenario_numbers_through_whatif(kind, backends, checks_only, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz-ranges-{kind}")
    assert cli_verdict(copy.deepcopy(SERVING if kind == "serving" else STATIC), folder, backends) == "accepted"
    verdicts = []

    @FUZZ
    @given(data=SERVING_SCENARIOS if kind == "serving" else STATIC_SCENARIOS)
    def run(data):
        verdicts.append(cli_verdict(data, folder, backends))

    run()
    assert "refused" in verdicts
