"""Serving scenarios: a `serving:` block (and serving targets) in a what-if scenario file -> simulated points.

Checks the block (one line FILE:LINE: key: message, before anything is written), derives the step costs of each
GPU x runtime from the registry (registry.serving.step_cost), simulates each arrival rate (registry.serving.engine) and records
the scenario with one serving_points row per GPU x runtime x rate (serving_requests rows only when asked).
"""

from __future__ import annotations

import math
import re
import sys

import attrs
import numpy as np
import sqlalchemy as sa

from analyzer import ranges
from analyzer.fileio import quote
from registry.store.db import Registry
from registry.serving.engine import CPU_PIPELINES, Z90, EngineConfig, PageMix, Pages, make_pages, simulate
from registry.serving.host import HostModel, NGramProcessor
from registry.serving.requests import RequestTrace, TraceError, gamma_arrivals, read_trace
from registry.serving.profiles import EngineProfile, HostProfile, ProfileError, capture_sizes, shipped_profiles
from registry.pricing.whatif import DEFAULT_PROFILE, Scenario, ScenarioError, _check_keys, _overrides

DEFAULT_ENGINE = "vllm-v1"
SERVING_MEMORY_MODEL = "paged-kv"  # the memory model of the runtimes an engine simulates (a paged KV pool)
SERVING_KEYS = {"engine", "host", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "block_size",
                "cuda_graph_capture_sizes", "cpu_workers", "cpu_pipeline", "render_dpi", "render_workers",
                "logits_processor",
                "arrival", "pages", "page_mix", "requests"}
ARRIVAL_KEYS = {"rate_per_s", "offline_pages", "concurrency", "waves", "burstiness"}
NGRAM_KEYS = {"ngram_size", "window_size"}
PAGES_KEYS = {"count", "seed"}
MIX_KEYS = {"new_tokens", "page_size"}
TOKENS_KEYS = {"distribution", "median", "p90", "max"}
SIZE_KEYS = {"size", "share"}
SERVING_SWEEP_KEYS = {"hardware", "runtime", "weights_dtype", "kv_cache_dtype"}
_PAGE = re.compile(r"^[0-9]+x[0-9]+$")


@attrs.frozen
class PageFamily:
    """Pages of one size of the scenario's mix: their prompt, the source of their image and its crops."""

    page: str | None
    prefill_tokens: int
    image_tokens: int  # of the page's image: a replayed request's prompt is its text + its images' tokens
    variant: str
    mode: str
    megapixels: float
    crops: int


@attrs.frozen
class ServingSpec:
    engine: str  # the engine profile as the scenario names it (NAME or NAME@VERSION)
    host: str | None  # the host profile as named; None: the engine's default_host
    given: dict  # the engine settings the scenario sets itself (the engine profile gives the others)
    ngram: NGramProcessor | None
    render_dpi: int | None
    gpu_memory_utilization: float | None
    rates: tuple[float | None, ...]  # open loop: Poisson rates (None: offline); () for a closed loop
    concurrencies: tuple[int, ...]  # closed loop: pages in flight; () for an open loop
    count: int
    seed: int
    mix: PageMix
    pages: tuple[str, ...]
    target: dict
    families: tuple[PageFamily, ...] = ()
    # resolved against the engine and host profiles (`resolve`)
    engine_profile: EngineProfile | None = None
    host_profile: HostProfile | None = None
    config: EngineConfig | None = None
    preprocess_s: tuple[float, ...] = ()  # per family: CPU seconds of one worker per page
    render_s: tuple[float, ...] | None = None  # per family: seconds of one renderer per page (None: not rendered)
    host_model: HostModel | None = None
    requests: RequestTrace | None = None  # replayed one for one instead of pages drawn from the mix
    burstiness: float = 1.0  # shape of the gamma gaps between a trace's requests sent at a rate (1: Poisson)

    @property
    def arrivals(self) -> tuple[tuple[float | None, int | None], ...]:
        """(Poisson rate or None, closed-loop concurrency or None) of each simulated point of a GPU x runtime."""
        if self.concurrencies:
            return tuple((None, c) for c in self.concurrencies)
        return tuple((rate, None) for rate in self.rates)


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _int(scenario: Scenario, path: tuple, value, default: int, bounds: ranges.Range) -> int:
    """An integer of the block within its physical range (analyzer.ranges), `default` when left out."""
    if value is None:
        return default
    problem = bounds.problem(value)
    if problem:
        raise scenario.fail(path, problem)
    return int(value)


def _mapping(scenario: Scenario, path: tuple, value, keys: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise scenario.fail(path, "must be a mapping")
    _check_keys(scenario, path, value, keys)
    return value


def _base_workload(scenario: Scenario):
    """The base workload: its variant's context bounds the page mix's new tokens, and its new tokens are every
    page's when the scenario gives no page_mix.new_tokens."""
    from analyzer.errors import AnalyzerInputError
    from analyzer.workload import load_profile

    profile, base = _base(scenario)
    base.pop("page", None)
    base.pop("tiles", None)
    base.pop("prompt_text_tokens", None)
    new_tokens = (scenario.data.get("base") or {}).get("new_tokens")
    if new_tokens is not None:
        base["new_tokens"] = new_tokens
    try:
        return load_profile(profile, **base)
    except AnalyzerInputError as exc:
        raise scenario.fail(("base",), str(exc)) from None


def _variant(scenario: Scenario) -> str:
    return _base_workload(scenario).variant


def mean_new_tokens_bound(mix: PageMix) -> float:
    """An upper bound on the mean new tokens of the page mix: the lognormal's mean, or its max when smaller (the
    mean of the clipped draws is at most both)."""
    mu = math.log(mix.median)
    sigma = max((math.log(mix.p90) - mu) / Z90, 0.0)
    return min(float(mix.max_tokens), math.exp(mu + sigma * sigma / 2))


def simulated_points(scenario: Scenario, spec: ServingSpec) -> int:
    """Simulations the whole scenario runs: GPUs x runtimes x arrival rates."""
    sweep = scenario.data["sweep"]
    return len(sweep["hardware"]) * len(sweep.get("runtime") or [None]) * len(spec.arrivals)


def check_simulated_work(scenario: Scenario, spec: ServingSpec, points: int) -> None:
    """Refuse up front a simulation of more than MAX_SIMULATED_TOKENS generated tokens over `points` points (a
    few minutes of simulation), or of more points than a what-if sweep may have."""
    from registry.pricing.whatif import MAX_SWEEP_POINTS

    if points > MAX_SWEEP_POINTS:
        raise scenario.fail(("serving", "arrival", "rate_per_s"),
                            f"{points:,} simulations (GPUs x runtimes x rates) exceed the limit of "
                            f"{MAX_SWEEP_POINTS:,}")
    per_point = (float(spec.requests.output_tokens.sum()) if spec.requests is not None
                 else spec.count * mean_new_tokens_bound(spec.mix))
    tokens = points * per_point
    if tokens > ranges.MAX_SIMULATED_TOKENS:
        raise scenario.fail(("serving", "pages"),
                            f"simulates about {tokens:,.0f} new tokens ({points:,} point{'s' if points != 1 else ''} x "
                            f"{spec.count:,} pages x "
                            f"{per_point / spec.count:,.0f}), over the limit of "
                            f"{ranges.MAX_SIMULATED_TOKENS:,}: fewer pages, rates or GPUs")


def serving_spec(scenario: Scenario, points: int | None = None,
                 requests: RequestTrace | None = None) -> ServingSpec | None:
    """The checked serving block of a scenario, or None when it has none. Every number is checked against its
    physical range (analyzer.ranges) before it is used, and the simulated work of `points` points (default: every
    GPU x runtime x rate of the scenario) against MAX_SIMULATED_TOKENS. `requests`: a trace to replay (an ingested
    benchmark's), instead of the block's own."""
    data = scenario.data
    if "plan" in data:
        raise scenario.fail(("plan",), "a plan: search it with `dsocr-registry plan --scenario FILE`")
    if "serving" not in data:
        return None
    block = _mapping(scenario, ("serving",), data["serving"], SERVING_KEYS)
    trace = requests if requests is not None else _request_trace(scenario, block)
    if trace is not None:
        for key in ("pages", "page_mix"):
            if key in block:
                raise scenario.fail(("serving", key), "a request trace gives the requests (their lengths and "
                                                      "pages): no pages or page_mix beside it")
    _overrides(scenario)  # the overrides and targets: within their physical ranges
    for key in data["sweep"]:
        if key not in SERVING_SWEEP_KEYS:
            raise scenario.fail(("sweep", key), "a serving scenario sweeps only hardware, runtime, weights_dtype "
                                "and kv_cache_dtype (the page mix sets the pages)")
    given: dict = {}
    engine = block.get("engine", DEFAULT_ENGINE)
    host = block.get("host")
    for key, value in (("engine", engine), ("host", host)):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 110):
            raise scenario.fail(("serving", key), f"must name a {key} profile ({key} list), got {quote(value)}")
    for key, bounds in (("max_num_seqs", ranges.MAX_NUM_SEQS), ("max_num_batched_tokens",
                                                               ranges.MAX_NUM_BATCHED_TOKENS),
                        ("block_size", ranges.BLOCK_SIZE), ("cpu_workers", ranges.CPU_WORKERS)):
        if block.get(key) is not None:
            given[key] = _int(scenario, ("serving", key), block[key], 0, bounds)
    if block.get("cuda_graph_capture_sizes") is not None:
        given["capture_sizes"] = capture_sizes(block["cuda_graph_capture_sizes"],
                                               ("serving", "cuda_graph_capture_sizes"), scenario)
    pipeline = block.get("cpu_pipeline", "streamed")
    if pipeline not in CPU_PIPELINES:
        raise scenario.fail(("serving", "cpu_pipeline"), f"unknown pipeline {quote(pipeline)}; known: "
                                                         f"{', '.join(CPU_PIPELINES)}")
    given["cpu_pipeline"] = pipeline
    utilization = block.get("gpu_memory_utilization")
    if utilization is not None and not ranges.GPU_MEMORY_UTILIZATION.contains(utilization):
        raise scenario.fail(("serving", "gpu_memory_utilization"), ranges.GPU_MEMORY_UTILIZATION.problem(utilization))
    render_dpi = None
    if block.get("render_dpi") is not None:
        render_dpi = _int(scenario, ("serving", "render_dpi"), block["render_dpi"], 0, ranges.RENDER_DPI)
    if block.get("render_workers") is not None:
        if render_dpi is None:
            raise scenario.fail(("serving", "render_workers"), "renderers need pages to render: give render_dpi")
        given["render_workers"] = _int(scenario, ("serving", "render_workers"), block["render_workers"], 0,
                                       ranges.CPU_WORKERS)
    ngram = None
    if block.get("logits_processor") is not None:
        processor = _mapping(scenario, ("serving", "logits_processor"), block["logits_processor"], NGRAM_KEYS)
        for key in sorted(NGRAM_KEYS - set(processor)):
            raise scenario.fail(("serving", "logits_processor"), f"missing key {key!r} (the no-repeat n-gram "
                                                                 "processor's n-gram size and window)")
        size = _int(scenario, ("serving", "logits_processor", "ngram_size"), processor["ngram_size"], 0,
                    ranges.NGRAM_SIZE)
        window = _int(scenario, ("serving", "logits_processor", "window_size"), processor["window_size"], 0,
                      ranges.NGRAM_WINDOW)
        if window < size:
            raise scenario.fail(("serving", "logits_processor", "window_size"),
                                f"must be >= ngram_size ({size}), got {window}")
        ngram = NGramProcessor(size, window)
    arrival = _mapping(scenario, ("serving", "arrival"), block.get("arrival"), ARRIVAL_KEYS)
    pages = _mapping(scenario, ("serving", "pages"), block.get("pages"), PAGES_KEYS)
    count = _int(scenario, ("serving", "pages", "count"), pages.get("count"), 1000, ranges.SIMULATED_PAGES)
    seed = _int(scenario, ("serving", "pages", "seed"), pages.get("seed"), 0, ranges.SEED)
    burstiness = 1.0
    if "burstiness" in arrival:
        burstiness = arrival["burstiness"]
        if not _is_number(burstiness) or not 0.01 <= burstiness <= 100 or "rate_per_s" not in arrival:
            raise scenario.fail(("serving", "arrival", "burstiness"),
                                f"the shape of the gamma gaps between requests sent at rate_per_s: a number from "
                                f"0.01 to 100 (1: Poisson) beside rate_per_s, got {quote(burstiness)}")
        burstiness = float(burstiness)
    waves = arrival.get("waves", False)
    if not isinstance(waves, bool):
        raise scenario.fail(("serving", "arrival", "waves"), f"must be true or false, got {quote(waves)}")
    if waves and "concurrency" not in arrival:
        raise scenario.fail(("serving", "arrival", "waves"), "waves send `concurrency` pages at once: give "
                                                             "concurrency")
    given["waves"] = waves
    if trace is not None:
        count = len(trace)
        if "offline_pages" in arrival:
            raise scenario.fail(("serving", "arrival", "offline_pages"),
                                f"a request trace sends its own {count:,} requests: leave out arrival (offline, "
                                "or the trace's arrival_s), or give rate_per_s or concurrency")
        if "rate_per_s" in arrival and trace.has_arrivals:
            raise scenario.fail(("serving", "arrival", "rate_per_s"),
                                f"{trace.source} gives each request its arrival_s: no rate_per_s beside it")
        if not arrival:
            arrival = {"offline_pages": count}  # the trace's own arrivals, or all at once
    if sum(key in arrival for key in ARRIVAL_KEYS - {"waves", "burstiness"}) != 1:
        raise scenario.fail(("serving", "arrival"), "give one of rate_per_s: [rates], offline_pages: N or "
                                                    "concurrency: [N] (a closed loop of N clients)")
    concurrencies: tuple[int, ...] = ()
    if "concurrency" in arrival:
        values = arrival["concurrency"]
        values = values if isinstance(values, list) and values else [values]
        for value in values:
            _int(scenario, ("serving", "arrival", "concurrency"), value, 0, ranges.CONCURRENCY)
        concurrencies = tuple(int(v) for v in values)
        rates: tuple[float | None, ...] = ()
        if pipeline == "all-first":
            raise scenario.fail(("serving", "cpu_pipeline"), "all-first preprocesses every page before the engine "
                                                             "starts: give offline_pages, not a closed loop")
    elif "offline_pages" in arrival:
        count = _int(scenario, ("serving", "arrival", "offline_pages"), arrival["offline_pages"], count,
                     ranges.SIMULATED_PAGES)
        rates = (None,)
    else:
        values = arrival["rate_per_s"]
        values = [values] if _is_number(values) else values
        if (not isinstance(values, list) or not values
                or not all(_is_number(v) and v > 0 for v in values)):
            raise scenario.fail(("serving", "arrival", "rate_per_s"),
                                f"must be a list of positive numbers (pages per second), got {quote(values)}")
        for value in values:
            if not ranges.ARRIVAL_RATE_PER_S.contains(value):
                raise scenario.fail(("serving", "arrival", "rate_per_s"),
                                    f"each rate must be {ranges.ARRIVAL_RATE_PER_S.phrase()}, got {quote(value)}")
        rates = tuple(float(v) for v in values)
    mix = _mapping(scenario, ("serving", "page_mix"), block.get("page_mix"), MIX_KEYS)
    tokens = _mapping(scenario, ("serving", "page_mix", "new_tokens"), mix.get("new_tokens"), TOKENS_KEYS)
    where = ("serving", "page_mix", "new_tokens")
    if tokens.get("distribution", "lognormal") != "lognormal":
        raise scenario.fail(where + ("distribution",), f"unknown distribution {quote(tokens['distribution'])}; known: "
                            "lognormal")
    # Left out, every page generates the base workload's new tokens (what a what-if point of it prices); a
    # distribution is given whole: median, p90 and max, none of them guessed
    base_workload = _base_workload(scenario)
    if not tokens:
        median = p90 = largest = base_workload.new_tokens
    else:
        for key in ("median", "p90", "max"):
            if key not in tokens:
                raise scenario.fail(where, f"missing key {key!r}: give median, p90 and max new tokens (or leave "
                                           f"new_tokens out: every page then generates the base workload's "
                                           f"{base_workload.new_tokens})")
        median, p90, largest = tokens["median"], tokens["p90"], tokens["max"]
    for key, value in (("median", median), ("p90", p90), ("max", largest)):
        if not _is_number(value) or value < 1:
            raise scenario.fail(where + (key,), f"must be a number >= 1, got {quote(value)}")
    # up to the model's context, as a workload's new tokens
    variant = base_workload.variant
    within = ranges.new_tokens_range(variant, integer=False)
    for key, value in (("median", median), ("p90", p90), ("max", largest)):
        if not within.contains(value):
            raise scenario.fail(where + (key,), f"{within.problem(value)} (the context of the {variant} model)")
    if p90 < median:
        raise scenario.fail(where + ("p90",), f"must be >= the median ({median}), got {p90}")
    if largest < median:
        raise scenario.fail(where + ("max",), f"must be >= the median ({median}), got {largest}")
    sizes = mix.get("page_size")
    where = ("serving", "page_mix", "page_size")
    if trace is not None:
        # a family per page size the trace's images use (the scenario's page when none): its probes price the LM
        sizes = [{"size": size, "share": 1.0 / max(len(trace.page_sizes), 1)} for size in trace.page_sizes or [None]]
    if sizes is None:
        sizes = [{"size": None, "share": 1.0}]
    if not isinstance(sizes, list) or not sizes:
        raise scenario.fail(where, "must be a non-empty list of {size: WIDTHxHEIGHT, share: FRACTION}")
    pages_px, shares = [], []
    for entry in sizes:
        if not isinstance(entry, dict) or "share" not in entry or "size" not in entry:
            raise scenario.fail(where, f"each entry needs size and share, got {quote(entry)}")
        _check_keys(scenario, where, entry, SIZE_KEYS)
        size, share = entry["size"], entry["share"]
        if size is not None and (not isinstance(size, str) or not _PAGE.match(size)):
            raise scenario.fail(where, f"size must be WIDTHxHEIGHT in pixels, got {quote(size)}")
        if size is not None:
            for side in size.split("x"):
                if len(side) > 9 or not ranges.PAGE_SIDE_PX.contains(int(side)):
                    raise scenario.fail(where, f"size {quote(size)}: each side must be "
                                        f"{ranges.PAGE_SIDE_PX.phrase()}")
        if not _is_number(share) or share <= 0:
            raise scenario.fail(where, f"share must be a positive number, got {quote(share)}")
        if size in pages_px:
            raise scenario.fail(where, f"size {size} is listed twice")
        pages_px.append(size)
        shares.append(float(share))
    if abs(sum(shares) - 1.0) > 1e-6:
        raise scenario.fail(where, f"shares must sum to 1, got {sum(shares):g}")
    target = dict(scenario.data.get("target") or {})
    spec = ServingSpec(engine=engine, host=host, given=given, ngram=ngram, render_dpi=render_dpi,
                       gpu_memory_utilization=None if utilization is None else float(utilization), rates=rates,
                       concurrencies=concurrencies, count=count, seed=seed,
                       mix=PageMix(median=float(median), p90=float(p90), max_tokens=int(largest),
                                   shares=tuple(shares)),
                       pages=tuple(pages_px), target=target, families=tuple(_families(scenario, pages_px)),
                       requests=trace, burstiness=burstiness)
    check_simulated_work(scenario, spec, simulated_points(scenario, spec) if points is None else points)
    shipped_engines = {p.name: p for _, p in shipped_profiles("engine")}
    shipped_hosts = {p.name: p for _, p in shipped_profiles("host")}
    engine_profile = shipped_engines.get(engine)
    if engine_profile is not None:  # a shipped engine: resolved (and checked) now; the user's in serving_plan
        host_profile = shipped_hosts.get(host or engine_profile.default_host)
        if host_profile is not None:
            spec = resolve(scenario, spec, engine_profile, host_profile)
    return spec


def resolve(scenario: Scenario, spec: ServingSpec, engine: EngineProfile, host: HostProfile) -> ServingSpec:
    """The spec with its engine and host profiles: the engine's settings (the scenario's own first), each page
    family's preprocessing seconds and the host model; a page whose prefill cannot fit one step is refused."""
    given = spec.given
    config = EngineConfig(
        max_num_seqs=given.get("max_num_seqs", engine.max_num_seqs),
        max_num_batched_tokens=given.get("max_num_batched_tokens", engine.max_num_batched_tokens),
        block_size=given.get("block_size", engine.block_size), policy=engine.policy,
        capture_sizes=given.get("capture_sizes", engine.capture_sizes),
        cpu_workers=given.get("cpu_workers", engine.cpu_workers), cpu_pipeline=given["cpu_pipeline"],
        waves=given["waves"], render_workers=given.get("render_workers", 1))
    # one page's prefill must fit one step: its image is encoded at once, and its placeholder tokens are one chunk
    # (a text-only trace has no image: its prompts are chunked like any)
    text_only = spec.requests is not None and not spec.requests.images.any()
    prefill = max(f.prefill_tokens for f in spec.families)
    if config.max_num_batched_tokens < prefill and not text_only:
        key = "max_num_batched_tokens" if "max_num_batched_tokens" in given else "engine"
        raise scenario.fail(("serving", key), f"{config.max_num_batched_tokens} tokens per step (engine "
                                              f"{engine.label}) is smaller than one page's prefill ({prefill} "
                                              "tokens, image included)")
    try:
        preprocess = tuple(host.preprocess_s(f.variant, f.mode, f.megapixels, f.crops) for f in spec.families)
    except ProfileError as exc:
        raise scenario.fail(("serving", "host"), str(exc)) from None
    render = None if spec.render_dpi is None else tuple(host.render_s(f.megapixels) for f in spec.families)
    return attrs.evolve(spec, engine_profile=engine, host_profile=host, config=config, preprocess_s=preprocess,
                        render_s=render,
                        host_model=engine.host_model(host, spec.ngram))


def _base(scenario: Scenario):
    from analyzer.workload import ProfileSource

    base = dict(scenario.data.get("base") or {})
    profile = ProfileSource(base.pop("profile", DEFAULT_PROFILE), scenario.allow_profile_paths)
    base.pop("batch", None)
    base.pop("new_tokens", None)
    return profile, base


def _families(scenario: Scenario, pages: list[str | None]) -> list[PageFamily]:
    from analyzer.errors import AnalyzerInputError
    from analyzer.workload import load_profile, parse_page

    profile, base = _base(scenario)
    out = []
    for page in pages:
        fields = dict(base, new_tokens=1)
        if page is not None:
            fields.pop("page", None)
            width, height = parse_page(page)
            fields.update(page_width_px=width, page_height_px=height)
        elif "page" in fields:
            width, height = parse_page(fields.pop("page"))
            fields.update(page_width_px=width, page_height_px=height)
        try:
            workload = load_profile(profile, **fields)
        except AnalyzerInputError as exc:
            raise scenario.fail(("base",), str(exc)) from None
        layout = workload.layout
        out.append(PageFamily(page=page, prefill_tokens=workload.prefill_tokens,
                              image_tokens=layout.image_placeholder_tokens, variant=workload.variant,
                              mode=workload.mode,
                              megapixels=workload.page_width_px * workload.page_height_px / 1e6,
                              crops=layout.tiles_wide * layout.tiles_high))
    return out


def _page_names(scenario: Scenario, spec: ServingSpec) -> list[str]:
    from analyzer.workload import load_profile

    profile, base = _base(scenario)
    default = base.get("page")
    if default is None:
        workload = load_profile(profile)
        default = f"{workload.page_width_px}x{workload.page_height_px}"
    return [page or default for page in spec.pages]


SERVING_COLUMNS = ["point_index", "hardware", "runtime", "arrival_rate_per_s", "pages", "pages_per_s",
                   "output_tokens_per_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p90_s",
                   "tpot_p99_s", "page_latency_p50_s", "page_latency_p90_s", "page_latency_p99_s",
                   "mean_running_pages", "kv_pool_use_mean", "kv_pool_use_peak", "preemptions", "meets_targets",
                   "best_rate_per_s", "gpus_needed", "weights_dtype", "kv_cache_dtype", "usd_per_1000_pages",
                   "monthly_usd", "efficiency_source", "engine", "host", "concurrency", "cpu_workers",
                   "gpu_busy_share", "host_wait_share", "cpu_utilization", "bound_by"]
RESULT_KEYS = ["duration_s", "pages_per_s", "output_tokens_per_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s",
               "tpot_p50_s", "tpot_p90_s", "tpot_p99_s", "page_latency_p50_s", "page_latency_p90_s",
               "page_latency_p99_s", "mean_page_latency_s", "mean_running_pages", "kv_pool_use_mean",
               "kv_pool_use_peak", "preemptions", "steps", "gpu_busy_share", "host_wait_share", "engine_idle_share",
               "cpu_utilization", "bound_by"]


def check_runtimes(scenario: Scenario, conn) -> tuple[list[tuple[int, str]], list[tuple[int, str, int]]]:
    from analyzer.execution import execution_spec, executions_with_memory_model
    from analyzer.fileio import one_of
    from registry.pricing.catalog import runtime_execution
    from registry.pricing.whatif import resolve_devices

    hardware, runtimes = resolve_devices(scenario, conn)
    for runtime_id, name, version in runtimes:
        # the engine's KV pool is a paged cache's: it simulates the executions of the paged-kv memory model
        if execution_spec(runtime_execution(conn, runtime_id)).memory_model != SERVING_MEMORY_MODEL:
            paged = one_of(executions_with_memory_model(SERVING_MEMORY_MODEL))
            raise ScenarioError(f"{scenario.where('sweep', 'runtime')}: sweep.runtime: {name}@{version} does not "
                                f"price the {paged} execution; the vllm-v1 engine is simulated under a {paged} "
                                "runtime")
    if "runtime" not in scenario.data["sweep"]:
        raise scenario.fail(("sweep",), "missing key 'runtime' (a vllm runtime, e.g. [vllm])")
    return hardware, runtimes


def run_serving(registry: Registry, scenario: Scenario, spec: ServingSpec, progress: bool = False,
                rates: tuple | None = None, only: tuple[str, str] | None = None,
                keep_requests: bool = False, analyze=None, new_run: bool = False) -> tuple[int, list[dict], dict]:
    """Simulate every GPU x runtime x rate (or one point: `only` = (hardware, runtime), `rates`); record the
    scenario and its serving points; return (scenario id, rows of v_serving_summary, per-request arrays of the
    last point). The same simulation recorded before (same file, same registry state: the simulation is
    deterministic) reuses its scenario unless `new_run`."""
    plan = serving_plan(registry, scenario, spec, progress, rates, only, analyze)
    rows, requests = simulate_plan(plan, progress, keep_requests)
    scenario_id = record_serving(registry, scenario, spec, rows, requests, keep_requests, new_run)
    return scenario_id, read_serving(registry, scenario_id), requests


@attrs.frozen
class ServingPlan:
    """What a serving simulation needs, read from the registry: one (hardware id, runtime id, step costs, engine
    config with its KV pool) per GPU x runtime, the rates, the page names. Picklable: a worker process simulates
    it without opening the registry."""

    source: str
    spec: ServingSpec
    points: tuple  # (hardware id, runtime id, StepCost, EngineConfig)
    rates: tuple  # (Poisson rate or None, closed-loop concurrency or None) per simulated point
    pages: tuple[str, ...]


def serving_plan(registry: Registry, scenario: Scenario, spec: ServingSpec, progress: bool = False,
                 rates: tuple | None = None, only: tuple[str, str] | None = None, analyze=None,
                 write=None) -> ServingPlan:
    """The step costs of each GPU x runtime (analyzing and recording the probes not stored yet) and its KV pool.
    `only` = (hardware, runtime) keeps one GPU x runtime of the sweep (serve-sim's --hardware and --runtime; None:
    the sweep's first). `write(func, *args)` runs the step that writes (the probes' reports and points); the
    service passes its writer, the rest only reads."""
    from registry.pricing.model import paged_kv_pool_bytes
    from registry.serving.step_cost import derive, make_workloads, probe_workloads, record_probes

    from registry.pricing.whatif import check_precisions, precisions

    from registry.serving.profiles import load_profile

    combos = precisions(scenario)
    with registry.begin() as conn:
        hardware, runtimes = check_runtimes(scenario, conn)
        check_precisions(scenario, conn, hardware, runtimes, combos)
        try:
            engine = load_profile(conn, "engine", spec.engine)
        except ProfileError as exc:
            raise scenario.fail(("serving", "engine"), str(exc)) from None
        try:
            host = load_profile(conn, "host", spec.host or engine.default_host)
        except ProfileError as exc:
            raise scenario.fail(("serving", "host" if spec.host else "engine"), str(exc)) from None
    spec = resolve(scenario, spec, engine, host)
    if only is not None:
        hardware, runtimes = _only_point(hardware, runtimes, *only)
    arrivals = tuple(rates) if rates else spec.arrivals
    profile, base = _base(scenario)
    pages = _page_names(scenario, spec)
    overrides = _overrides(scenario)
    # step_cost.step_costs, with its writing step apart
    probes = probe_workloads(base, pages)
    workloads = make_workloads(profile, base, probes)
    write = write or (lambda func, *args: func(*args))
    probe_scenario_id, _ = write(record_probes, registry, scenario.name, workloads, [h for h, _ in hardware],
                                 [r for r, _, _ in runtimes], progress, overrides, analyze, combos)
    costs = derive(registry, probe_scenario_id, probes, len(workloads), pages)
    hw_ids = [(h, r) for h, _ in hardware for r, _, _ in runtimes for _ in combos]
    memory = {}
    with registry.begin() as conn:
        for hid, rid in hw_ids:
            memory[hid] = conn.execute(sa.text("SELECT memory_bytes FROM hardware WHERE id = :h"),
                                       {"h": hid}).scalar_one()
            memory[(rid, "util")] = conn.execute(sa.text(
                "SELECT gpu_memory_utilization FROM runtime_profiles WHERE id = :r"), {"r": rid}).scalar()
    points = []
    for (hid, rid), cost in zip(hw_ids, costs):
        if not spec.host_model.zero:  # the host profile prices the host work the runtime's per-step time stood for
            cost = cost.without_runtime_step_overhead()
        pool_bytes = cost.kv_pool_bytes
        if spec.gpu_memory_utilization is not None and memory[(rid, "util")] is not None:
            # the scenario's utilization instead of the profile's: the pool the views price, at that budget
            device_memory = int(overrides["memory_gb"] * 1e9) if overrides.get("memory_gb") else memory[hid]
            pool_bytes = paged_kv_pool_bytes(spec.gpu_memory_utilization, device_memory, cost.weight_bytes,
                                             cost.step_peak_bytes)
        pool = max(int(pool_bytes // (spec.config.block_size * cost.kv_bytes_per_token)), 0)
        points.append((hid, rid, cost, attrs.evolve(spec.config, kv_pool_blocks=pool)))
    return ServingPlan(source=scenario.source, spec=spec, points=tuple(points), rates=arrivals,
                       pages=tuple(pages))


def simulate_plan(plan: ServingPlan, progress: bool = False, keep_requests: bool = False) -> tuple[list[dict], dict]:
    """(serving_points rows, per-request arrays of the last point) of every GPU x runtime x rate of the plan. CPU
    work only: no registry (the service runs it in a worker process under a time and memory limit)."""
    from tqdm import tqdm

    spec = plan.spec
    rows, requests = [], {}
    bar = tqdm(total=len(plan.points) * len(plan.rates) * spec.count, unit="page", desc="simulating",
               file=sys.stderr, disable=not progress, leave=False)
    try:
        for hid, rid, cost, config in plan.points:
            for rate, concurrency in plan.rates:
                if spec.requests is not None:
                    sim_pages = trace_pages(spec, rate, concurrency)
                else:
                    sim_pages = make_pages(spec.count, spec.seed, spec.mix, rate,
                                           closed_loop=concurrency is not None,
                                           preprocess_s_per_family=spec.preprocess_s,
                                           render_s_per_family=spec.render_s)
                offset = bar.n

                def advance(done, offset=offset):
                    bar.update(offset + done - bar.n)

                try:
                    result = simulate(cost, attrs.evolve(config, concurrency=concurrency), sim_pages,
                                      progress=advance, host=spec.host_model)
                except ValueError as exc:
                    raise ScenarioError(f"{plan.source}: serving: {cost.hardware} / {cost.runtime}: {exc}") \
                        from None
                summary = result.summary()
                rows.append({"hardware_id": hid, "runtime_profile_id": rid, "engine": spec.engine_profile.name,
                             "engine_version": spec.engine_profile.version,
                             "host_profile": spec.host_profile.name, "host_version": spec.host_profile.version,
                             "weights_dtype": cost.weights_dtype, "kv_cache_dtype": cost.kv_cache_dtype,
                             "arrival_rate_per_s": rate, "concurrency": concurrency, "pages": spec.count,
                             "seed": spec.seed, "max_num_seqs": config.max_num_seqs,
                             "max_num_batched_tokens": config.max_num_batched_tokens,
                             "block_size": config.block_size, "kv_pool_blocks": config.kv_pool_blocks,
                             "cpu_workers": config.cpu_workers, "arrival_waves": config.waves,
                             "render_workers": config.render_workers if spec.render_s is not None else None,
                             "target_ttft_p99_s": spec.target.get("ttft_p99_s"),
                             "target_page_latency_p99_s": spec.target.get("page_latency_p99_s"),
                             **{k: summary[k] for k in RESULT_KEYS}})
                if keep_requests:
                    requests = {"page": [plan.pages[f] for f in result.family.tolist()],
                                "prompt_tokens": result.prompt_tokens.tolist(),
                                "new_tokens": result.new_tokens.tolist(), "arrival_s": result.arrival.tolist(),
                                "first_token_s": result.first_token.tolist(), "finish_s": result.finish.tolist(),
                                "preemptions": result.preemptions.tolist()}
                bar.update(offset + spec.count - bar.n)
    finally:
        bar.close()
    return rows, requests


def _request_trace(scenario: Scenario, block: dict) -> RequestTrace | None:
    """The trace `serving.requests` names (a file beside the scenario file), or None."""
    value = block.get("requests")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise scenario.fail(("serving", "requests"), f"must name a request trace file (.csv, .jsonl or .parquet), "
                                                     f"got {quote(value)}")
    if scenario.folder is None or not scenario.allow_profile_paths:
        raise scenario.fail(("serving", "requests"), "a request trace is read from a file beside a scenario file, "
                                                     "not named in a request")
    try:
        return read_trace(scenario.folder / value)
    except TraceError as exc:
        raise scenario.fail(("serving", "requests"), str(exc)) from None


def trace_pages(spec: ServingSpec, rate: float | None, concurrency: int | None) -> Pages:
    """The simulated pages of the spec's request trace: each request's family (its page size; a text-only request
    takes the first family, whose vision it never runs), its prompt (text + its images' tokens), its CPU work per
    image, and its send time: drawn at `rate` (gamma gaps of the spec's burstiness), the trace's own arrival_s, a
    free client of the closed loop, or all at t=0."""
    trace = spec.requests
    n = len(trace)
    index = {size: i for i, size in enumerate(spec.pages)}
    family = np.array([index.get(size, 0) if images else 0 for size, images in
                       zip(trace.page_size, trace.images.tolist())], dtype=np.int64)
    image_tokens = np.array([f.image_tokens for f in spec.families], dtype=np.int64)[family]
    if rate is not None:
        arrival = gamma_arrivals(n, rate, spec.burstiness, spec.seed)
    elif trace.has_arrivals:
        arrival = trace.arrival_s - trace.arrival_s.min()
    elif concurrency is not None:
        arrival = np.full(n, np.nan)
    else:
        arrival = np.zeros(n)
    per_image = trace.images.astype(float)
    preprocess = None if not spec.preprocess_s else np.asarray(spec.preprocess_s)[family] * per_image
    render = None if spec.render_s is None else np.asarray(spec.render_s)[family] * per_image
    return Pages(arrival=arrival, family=family, new_tokens=trace.output_tokens.copy(), preprocess_s=preprocess,
                 render_s=render, prompt_tokens=trace.prompt_tokens + trace.images * image_tokens,
                 images=trace.images.copy())


def record_serving(registry: Registry, scenario: Scenario, spec: ServingSpec, rows: list[dict], requests: dict,
                   keep_requests: bool = False, new_run: bool = False) -> int:
    """Record the scenario and its serving points (and requests if asked) in one transaction; its id."""
    from registry.store.ingest import bulk_insert
    from registry.pricing.points import ScenarioRecord, record_scenario

    with registry.begin() as conn:
        record = record_scenario(conn, ScenarioRecord(name=scenario.name, kind="serving", definition=scenario.data,
                                                      target=spec.target, content=rows), [], new_run=new_run)
        scenario_id, recorded = record.scenario_id, record.recorded_now
        for index, row in enumerate(rows, start=1):
            row.update(scenario_id=scenario_id, point_index=index)
        kept = 0 if recorded else conn.execute(sa.text(
            "SELECT COUNT(*) FROM serving_requests WHERE scenario_id = :s"), {"s": scenario_id}).scalar()
        if recorded:
            bulk_insert(conn, "serving_points", {key: [r[key] for r in rows] for key in rows[0]})
        if keep_requests and requests and not kept:
            n = len(requests["page"])
            bulk_insert(conn, "serving_requests", {"scenario_id": [scenario_id] * n,
                                                   "point_index": [len(rows)] * n,
                                                   "request_index": list(range(1, n + 1)), **requests})
    return scenario_id


def probe_analyses(registry: Registry, scenario: Scenario, spec: ServingSpec) -> list[tuple]:
    """(workload, execution) of every probe serving_plan prices: the service analyzes those not stored yet before
    it takes its writer."""
    from registry.pricing.catalog import runtime_execution
    from registry.serving.step_cost import make_workloads, probe_workloads

    with registry.begin() as conn:
        _, runtimes = check_runtimes(scenario, conn)
        executions = list(dict.fromkeys(runtime_execution(conn, rid) for rid, _, _ in runtimes))
    profile, base = _base(scenario)
    workloads = make_workloads(profile, base, probe_workloads(base, _page_names(scenario, spec)))
    return [(workload, execution) for execution in executions for workload in workloads]


def read_serving(registry: Registry, scenario_id: int) -> list[dict]:
    expressions = {"runtime": "runtime || '@' || CAST(runtime_version AS VARCHAR(20))",
                   "engine": "engine || '@' || CAST(engine_version AS VARCHAR(20))",
                   "host": "host_profile || '@' || CAST(host_version AS VARCHAR(20))"}
    columns = [expressions.get(c, c) for c in SERVING_COLUMNS]
    with registry.begin() as conn:
        result = conn.execute(sa.text(
            f"SELECT {', '.join(columns)} FROM v_serving_summary WHERE scenario_id = :s ORDER BY point_index"),
            {"s": scenario_id})
        return [dict(zip(SERVING_COLUMNS, row)) for row in result.all()]


def _precision(point: dict) -> str:
    return f"{point['weights_dtype']} weights, {point['kv_cache_dtype']} KV"


def build_serving_figure(points: list[dict], targets: dict | None = None):
    """The serving picture. Points under load (an arrival rate or a closed loop of clients): two panels against
    throughput (pages/s), one line per GPU x runtime x precision, page latency p50 / p99 on the left and time to
    first token p50 / p99 on the right, each with the scenario's p99 target as a horizontal line (the points under
    it meet it). Offline points (every page queued at once): two panels of bars, one group per GPU (the cheapest
    first) with one bar per precision, dollars per 1,000 pages at the GPU's price on the left and pages/s on the
    right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [p for p in points if p["arrival_rate_per_s"] is not None or p.get("concurrency") is not None]
    offline = [p for p in points if p["arrival_rate_per_s"] is None and p.get("concurrency") is None]
    panels = 2 * bool(loaded) + 2 * bool(offline)
    fig, axes = plt.subplots(1, max(panels, 2), figsize=(7.5 * max(panels, 2), 6 if not offline
                                                          else max(6, 1.5 + 0.3 * len(offline))))
    axes = list(axes)
    if loaded:
        _draw_under_load(axes[0], axes[1], loaded, targets or {})
    if offline:
        _draw_offline_cost(axes[-2], axes[-1], offline)
    fig.suptitle("simulated serving", fontsize=13)
    fig.tight_layout()
    return fig


def _draw_under_load(latency, ttft, points: list[dict], targets: dict) -> None:
    groups: dict[str, list[dict]] = {}
    for p in points:
        precision = ("" if (p["weights_dtype"], p["kv_cache_dtype"]) == ("bf16", "bf16")
                     else f" ({p['weights_dtype']}/{p['kv_cache_dtype']})")
        groups.setdefault(f"{p['hardware']} / {p['runtime']}{precision}", []).append(p)
    for label, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["pages_per_s"])
        x = [r["pages_per_s"] for r in rows]
        line, = latency.plot(x, [r["page_latency_p99_s"] for r in rows], marker="o", label=f"{label} p99")
        latency.plot(x, [r["page_latency_p50_s"] for r in rows], marker=".", linestyle="--",
                     color=line.get_color(), label=f"{label} p50")
        ttft.plot(x, [r["ttft_p99_s"] for r in rows], marker="o", color=line.get_color(), label=f"{label} p99")
        ttft.plot(x, [r["ttft_p50_s"] for r in rows], marker=".", linestyle="--", color=line.get_color(),
                  label=f"{label} p50")
    for axes, key, what in ((latency, "page_latency_p99_s", "page latency"), (ttft, "ttft_p99_s", "TTFT")):
        target = targets.get(key)
        if target is not None:
            axes.axhline(target, color="#B00000", linewidth=1.5, linestyle=":",
                         label=f"target: {what} p99 <= {target:g} s")
        axes.set_xlabel("throughput (pages/s)", fontsize=12)
        axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
        # under the axes, where it hides neither a line nor the target
        axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    latency.set_ylabel("page latency (s)", fontsize=12)
    latency.set_title("page latency percentiles against throughput", fontsize=13)
    ttft.set_ylabel("time to first token (s)", fontsize=12)
    ttft.set_title("time to first token against throughput", fontsize=13)


def _draw_offline_cost(cost, speed, points: list[dict]) -> None:
    # one group of bars per GPU x runtime, the groups in the order of their cheapest bar (GPUs the catalog has no
    # price for last, by pages/s), one bar per precision in a fixed colour
    groups: dict[str, dict[str, dict]] = {}
    for p in points:
        groups.setdefault(f"{p['hardware']} / {p['runtime']}", {})[_precision(p)] = p

    def cheapest_first(item):
        prices = [p["usd_per_1000_pages"] for p in item[1].values() if p["usd_per_1000_pages"] is not None]
        return (not prices, min(prices) if prices else -max(p["pages_per_s"] for p in item[1].values()))

    ordered = sorted(groups.items(), key=cheapest_first)
    precisions = list(dict.fromkeys(_precision(p) for p in points))
    height = 0.8 / len(precisions)
    colors = _default_colors(len(precisions))
    for k, precision in enumerate(precisions):
        rows = [(g, by[precision]) for g, (_, by) in enumerate(ordered) if precision in by]
        ys = [g - 0.4 + height * (k + 0.5) for g, _ in rows]
        prices = [p["usd_per_1000_pages"] if p["usd_per_1000_pages"] is not None else 0.0 for _, p in rows]
        drawn = cost.barh(ys, prices, height=height, color=colors[k], label=precision)
        for patch, (_, p) in zip(drawn.patches, rows):
            text = "no price" if p["usd_per_1000_pages"] is None else f"${p['usd_per_1000_pages']:.3f}"
            cost.annotate(text, (patch.get_width(), patch.get_y() + patch.get_height() / 2), xytext=(3, 0),
                          textcoords="offset points", va="center", fontsize=8)
        drawn = speed.barh(ys, [p["pages_per_s"] for _, p in rows], height=height, color=colors[k], label=precision)
        for patch, (_, p) in zip(drawn.patches, rows):
            speed.annotate(f"{p['pages_per_s']:.1f}", (patch.get_width(), patch.get_y() + patch.get_height() / 2),
                           xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    pages = sorted({p["pages"] for p in points})
    for axes in (cost, speed):
        axes.set_yticks(range(len(ordered)))
        axes.set_yticklabels([name for name, _ in ordered], fontsize=10)
        axes.invert_yaxis()  # the cheapest at the top
        axes.grid(True, axis="x", alpha=0.3)
        axes.margins(x=0.15)  # room for the value beside the longest bar
    # one legend for both panels, under the left one, where it hides no bar
    cost.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    cost.set_xlabel("dollars per 1,000 pages at the GPU's hourly price", fontsize=12)
    cost.set_title("GPU cost per 1,000 pages (cheapest GPU first)", fontsize=13)
    speed.set_xlabel("pages/s on one GPU", fontsize=12)
    speed.set_title(f"throughput, {' or '.join(f'{n:,}' for n in pages)} pages queued at once", fontsize=13)


def _default_colors(count: int) -> list[str]:
    """`count` colours of matplotlib's default cycle, in order."""
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(count)]


def plot_serving(points: list[dict], path, targets: dict | None = None) -> None:
    """build_serving_figure, written as PNG; `targets`: the scenario's (ttft_p99_s, page_latency_p99_s)."""
    import matplotlib.pyplot as plt

    from registry.interfaces.plots import save_figure

    fig = build_serving_figure(points, targets)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def write_requests(requests: dict, path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"request_index": np.arange(1, len(requests["page"]) + 1, dtype=np.int32), **requests})
    pq.write_table(table, str(path))


def _only_point(hardware: list[tuple[int, str]], runtimes: list[tuple[int, str, int]], hardware_name: str | None,
                runtime_name: str | None) -> tuple[list[tuple[int, str]], list[tuple[int, str, int]]]:
    """The one GPU and runtime of the sweep that serve-sim's --hardware and --runtime name (None: the sweep's
    first); a name the sweep lacks is refused, naming those it has, before anything is analyzed or recorded."""
    if hardware_name is None:
        hardware = hardware[:1]
    else:
        hardware = [h for h in hardware if h[1] == hardware_name] or _not_swept(
            "--hardware", hardware_name, "hardware", [name for _, name in hardware])
    if runtime_name is None:
        runtimes = runtimes[:1]
    else:
        runtimes = [r for r in runtimes if runtime_name in (f"{r[1]}@{r[2]}", r[1])] or _not_swept(
            "--runtime", runtime_name, "runtime", [f"{name}@{version}" for _, name, version in runtimes])
    return hardware, runtimes


def _not_swept(option: str, name: str, key: str, swept: list[str]):
    raise ScenarioError(f"{option} {quote(name)}: not in the scenario's sweep.{key}; give one of: "
                        f"{', '.join(dict.fromkeys(swept))}")
