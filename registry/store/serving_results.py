"""Serving benchmarks in the registry: a result file (registry.serving.bench_results) and the setup it ran on ->
serving_measurements rows (and their requests); the simulation of each run's own requests on its own setup ->
serving_predictions; both side by side in v_serving_compare.

A result file does not say what it ran on, so the setup comes from a small YAML file (and command-line options,
which take precedence):

    hardware: h200                  # a GPU of the catalog (hardware list)                    required
    engine: sglang                  # an engine profile (engine list), NAME or NAME@VERSION    required
    engine_release: sglang 0.5.7    # free text: the release that ran
    variant: ocr2                   # v1 or ocr2                                               required
    mode: gundam                    # resolution mode of the images                            required with images
    page: 1654x2339                 # page size of the images (default: the variant's standard page)
    images_per_request: 0           # 0: text-only requests
    max_num_seqs: 256               # the engine's limits as the server ran                    required
    max_num_batched_tokens: 8192    #                                                          required
    runtime: vllm                   # runtime profile the GPU work is priced with (default vllm)
    host: epyc-2c-vllm-0.8.5        # host profile (default: the engine's)
    logits_processor: {ngram_size: 30, window_size: 90}
    vcpus: 16                       # CPU workers of the page pipeline (default: the engine's)

The replay sends the run's own requests: each request's input and output lengths when the file lists them, else
the run's totals split evenly over its completed requests (lengths `totals`); at the run's request rate and
burstiness, under its max concurrency (a closed loop at rate inf).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib

import attrs
import numpy as np
import sqlalchemy as sa

from analyzer import ranges
from analyzer.fileio import MAX_MEASUREMENT_BYTES, InputLimitError, decode_text, quote, read_input, source_name, \
    unreadable
from registry.serving.bench_results import LATENCY_METRICS, BenchResultError, BenchRun, parse_results
from registry.store.db import Registry, RegistryError

SETUP_KEYS = ("hardware", "engine", "engine_release", "variant", "mode", "page", "images_per_request", "max_num_seqs",
              "max_num_batched_tokens", "runtime", "host", "logits_processor", "vcpus")
REQUIRED_SETUP = ("hardware", "engine", "variant", "max_num_seqs", "max_num_batched_tokens")
DEFAULT_SERVING_RUNTIME = "vllm"  # fused kernels and CUDA graphs: what vLLM and SGLang run
STANDARD_PROFILE = {"v1": "dsocr-standard-v1", "ocr2": "dsocr-standard-ocr2"}
COMPARED_METRICS = ("request_throughput_per_s", "output_throughput_tokens_per_s", *LATENCY_METRICS)
REPLAY_SEED = 0


class ServingResultError(RegistryError):
    """A result file, setup or request that cannot be taken in; one line."""


@attrs.frozen
class Setup:
    hardware: str
    engine: str
    variant: str
    max_num_seqs: int
    max_num_batched_tokens: int
    mode: str | None = None
    page: str | None = None
    images_per_request: int = 0
    engine_release: str | None = None
    runtime: str = DEFAULT_SERVING_RUNTIME
    host: str | None = None
    ngram: tuple[int, int] | None = None
    vcpus: int | None = None


def read_setup(path: str | pathlib.Path | None, options: dict) -> Setup:
    """The setup from a YAML file (None: none) and options (None values left out; they win), checked: a missing
    key or a bad value is one line naming it."""
    import yaml

    data: dict = {}
    source = "setup"
    if path is not None:
        source = source_name(path)
        try:
            raw = read_input(path, 2**20, "setup file")
            data = yaml.safe_load(decode_text(raw)) or {}
        except (OSError, InputLimitError) as exc:
            raise ServingResultError(unreadable(source, exc) if isinstance(exc, OSError) else f"{source}: {exc}") \
                from None
        except yaml.YAMLError:
            raise ServingResultError(f"{source}: not a YAML mapping of the setup ({', '.join(SETUP_KEYS)})") \
                from None
        if not isinstance(data, dict):
            raise ServingResultError(f"{source}: not a YAML mapping of the setup ({', '.join(SETUP_KEYS)})")
        for key in data:
            if key not in SETUP_KEYS:
                raise ServingResultError(f"{source}: unknown setup key {quote(key)}; known: {', '.join(SETUP_KEYS)}")
    data = {**data, **{k: v for k, v in options.items() if v is not None}}
    for key in REQUIRED_SETUP:
        if data.get(key) is None:
            option = "--" + key.replace("_", "-")
            raise ServingResultError(f"{source}: missing setup key {key!r} (a result file does not record it: give "
                                     f"it in --setup FILE or {option})")

    def text(key, limit=200):
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip() \
                or len(str(value)) > limit:
            raise ServingResultError(f"{source}: {key} must be a name, got {quote(value)}")
        return str(value).strip()

    def integer(key, bounds: ranges.Range, default=None):
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not bounds.contains(value):
            raise ServingResultError(f"{source}: {key} must be an integer {bounds.phrase()}, got {quote(value)}")
        return int(value)

    from analyzer.variants import VARIANT_NAMES
    from analyzer.workload import MODES

    variant = text("variant")
    if variant not in VARIANT_NAMES:
        raise ServingResultError(f"{source}: variant must be one of {', '.join(VARIANT_NAMES)}, got {quote(variant)}")
    images = integer("images_per_request", ranges.Range(0, 64, "images"), 0)
    mode = text("mode")
    if mode is not None and mode not in MODES[variant]:
        raise ServingResultError(f"{source}: mode must be one of {', '.join(MODES[variant])} (the {variant} "
                                 f"model's), got {quote(mode)}")
    if images and mode is None:
        raise ServingResultError(f"{source}: missing setup key 'mode' (the resolution mode of the requests' images)")
    page = text("page")
    if page is not None:
        sides = page.split("x")
        if len(sides) != 2 or not all(s.isdigit() and len(s) < 10 and ranges.PAGE_SIDE_PX.contains(int(s))
                                      for s in sides):
            raise ServingResultError(f"{source}: page must be WIDTHxHEIGHT in pixels, got {quote(page)}")
    ngram = None
    processor = data.get("logits_processor")
    if processor is not None:
        if not isinstance(processor, dict) or set(processor) != {"ngram_size", "window_size"}:
            raise ServingResultError(f"{source}: logits_processor must be {{ngram_size: N, window_size: W}}, got "
                                     f"{quote(processor)}")
        size = processor["ngram_size"]
        window = processor["window_size"]
        for key, value, bounds in (("ngram_size", size, ranges.NGRAM_SIZE), ("window_size", window,
                                                                            ranges.NGRAM_WINDOW)):
            if isinstance(value, bool) or not isinstance(value, int) or not bounds.contains(value):
                raise ServingResultError(f"{source}: logits_processor.{key} must be an integer {bounds.phrase()}, "
                                         f"got {quote(value)}")
        if window < size:
            raise ServingResultError(f"{source}: logits_processor.window_size must be >= ngram_size ({size})")
        ngram = (int(size), int(window))
    return Setup(hardware=text("hardware"), engine=text("engine", 110), variant=variant,
                 max_num_seqs=integer("max_num_seqs", ranges.MAX_NUM_SEQS),
                 max_num_batched_tokens=integer("max_num_batched_tokens", ranges.MAX_NUM_BATCHED_TOKENS),
                 mode=mode, page=page, images_per_request=images, engine_release=text("engine_release"),
                 runtime=text("runtime", 110) or DEFAULT_SERVING_RUNTIME, host=text("host", 110), ngram=ngram,
                 vcpus=integer("vcpus", ranges.CPU_WORKERS))


def read_results(path: str | pathlib.Path) -> list[BenchRun]:
    source = source_name(path)
    try:
        raw = read_input(path, MAX_MEASUREMENT_BYTES, "result file")
        text = decode_text(raw)
    except InputLimitError as exc:
        raise ServingResultError(f"{source}: {exc}") from None
    except OSError as exc:
        raise ServingResultError(unreadable(source, exc)) from None
    try:
        return parse_results(text, source)
    except BenchResultError as exc:
        raise ServingResultError(str(exc)) from None


@attrs.frozen
class Ingested:
    measurement_id: int
    run: int
    new: bool


def ingest_serving_results(registry: Registry, path: str | pathlib.Path, setup: Setup) -> list[Ingested]:
    """Store every run of the result file with its setup, all or nothing; a run stored before is kept as it is."""
    from registry.pricing.catalog import resolve_hardware, resolve_runtime
    from registry.serving.profiles import ProfileError, load_profile
    from registry.store.ingest import bulk_insert

    runs = read_results(path)
    source = source_name(path)
    out = []
    with registry.begin() as conn:
        try:
            hardware_id, _ = resolve_hardware(conn, setup.hardware)
            runtime_id, _, _ = resolve_runtime(conn, setup.runtime)
            engine = load_profile(conn, "engine", setup.engine)
            host = load_profile(conn, "host", setup.host or engine.default_host)
        except (RegistryError, ProfileError) as exc:
            raise ServingResultError(f"{source}: setup: {exc}") from None
        resolved = {"hardware": setup.hardware, "runtime_profile_id": runtime_id, "engine": engine.label,
                    "host": host.label, **{k: v for k, v in attrs.asdict(setup).items()
                                          if k not in ("hardware", "runtime", "engine", "host")}}
        for run in runs:
            rows = run.per_request
            content = json.dumps({"run": run.raw, "requests": None if rows is None else attrs.asdict(rows),
                                  "setup": resolved}, sort_keys=True, default=str)
            digest = hashlib.sha256(content.encode()).hexdigest()
            found = conn.execute(sa.text("SELECT id FROM serving_measurements WHERE content_sha256 = :h"),
                                 {"h": digest}).scalar()
            if found is not None:
                out.append(Ingested(int(found), run.index, False))
                continue
            if run.completed < 1:
                raise ServingResultError(f"{source}: run {run.index}: no completed requests")
            row = {
                "content_sha256": digest, "source": source[:1000], "tool": run.tool,
                "ingested_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
                "model_id": None if run.model_id is None else str(run.model_id)[:200],
                "hardware_id": hardware_id, "runtime_profile_id": runtime_id, "engine": engine.name,
                "engine_version": engine.version, "engine_release": setup.engine_release,
                "variant": setup.variant, "mode": setup.mode or _default_mode(setup.variant), "page": setup.page,
                "images_per_request": setup.images_per_request, "max_num_seqs": setup.max_num_seqs,
                "max_num_batched_tokens": setup.max_num_batched_tokens, "host_profile": host.name,
                "host_version": host.version, "ngram_size": setup.ngram[0] if setup.ngram else None,
                "ngram_window": setup.ngram[1] if setup.ngram else None, "vcpus": setup.vcpus,
                "requests": run.requests, "completed": run.completed,
                "request_rate_per_s": run.request_rate_per_s, "burstiness": run.burstiness,
                "max_concurrency": run.max_concurrency, "duration_s": run.duration_s,
                "total_input_tokens": run.total_input_tokens, "total_output_tokens": run.total_output_tokens,
                "request_throughput_per_s": run.request_throughput_per_s,
                "output_throughput_tokens_per_s": run.output_throughput_tokens_per_s,
                "per_request_rows": rows is not None, "setup": json.dumps(resolved, sort_keys=True),
                "raw": json.dumps(run.raw, sort_keys=True, default=str), **run.latency_ms}
            table = _table("serving_measurements")
            measurement_id = conn.execute(sa.insert(table).values(row).returning(table.c.id)).scalar_one()
            if rows is not None:
                n = len(rows.input_tokens)
                bulk_insert(conn, "serving_measurement_requests", {
                    "measurement_id": [measurement_id] * n, "request_index": list(range(1, n + 1)),
                    "input_tokens": list(rows.input_tokens), "output_tokens": list(rows.output_tokens),
                    "ttft_ms": list(rows.ttft_ms), "e2el_ms": list(rows.e2el_ms),
                    "succeeded": list(rows.succeeded)})
            out.append(Ingested(int(measurement_id), run.index, True))
    return out


def _table(name: str) -> sa.Table:
    from registry.store.models import Base

    return Base.metadata.tables[name]


def _default_mode(variant: str) -> str:
    from analyzer.workload import load_profile

    return load_profile(STANDARD_PROFILE[variant]).mode


@attrs.frozen
class Measured:
    """An ingested run as the replay needs it."""

    id: int
    hardware: str
    runtime: str
    engine: str
    host: str
    variant: str
    mode: str
    page: str | None
    images_per_request: int
    max_num_seqs: int
    max_num_batched_tokens: int
    ngram: tuple[int, int] | None
    vcpus: int | None
    completed: int
    request_rate_per_s: float | None
    burstiness: float
    max_concurrency: int | None
    total_input_tokens: int
    total_output_tokens: int


def load_measured(conn, measurement_id: int) -> Measured:
    row = conn.execute(sa.text(
        "SELECT sm.id, h.name, rp.name || '@' || CAST(rp.version AS VARCHAR(20)), "
        "sm.engine || '@' || CAST(sm.engine_version AS VARCHAR(20)), "
        "sm.host_profile || '@' || CAST(sm.host_version AS VARCHAR(20)), sm.variant, sm.mode, sm.page, "
        "sm.images_per_request, sm.max_num_seqs, sm.max_num_batched_tokens, sm.ngram_size, sm.ngram_window, "
        "sm.vcpus, sm.completed, sm.request_rate_per_s, sm.burstiness, sm.max_concurrency, sm.total_input_tokens, "
        "sm.total_output_tokens FROM serving_measurements sm JOIN hardware h ON h.id = sm.hardware_id "
        "JOIN runtime_profiles rp ON rp.id = sm.runtime_profile_id WHERE sm.id = :i"), {"i": measurement_id}).first()
    if row is None:
        raise ServingResultError(f"no serving measurement {measurement_id} (compare --serving lists them)")
    (mid, hardware, runtime, engine, host, variant, mode, page, images, seqs, tokens, ngram_size, ngram_window,
     vcpus, completed, rate, burstiness, concurrency, total_in, total_out) = row
    return Measured(int(mid), hardware, runtime, engine, host, variant, mode, page, int(images), int(seqs),
                    int(tokens), None if ngram_size is None else (int(ngram_size), int(ngram_window)),
                    vcpus, int(completed), rate, float(burstiness), concurrency, int(total_in), int(total_out))


def replay_trace(conn, measured: Measured):
    """The requests of an ingested run: its completed requests' own lengths when listed (failed ones are left
    out: they generated nothing), else its totals split evenly over its completed requests; their send times
    at the run's rate (gamma gaps of its burstiness) when it had one."""
    from registry.serving.requests import gamma_arrivals, make_trace

    listed = conn.execute(sa.text(
        "SELECT input_tokens, output_tokens FROM serving_measurement_requests "
        "WHERE measurement_id = :i AND succeeded AND output_tokens > 0 ORDER BY request_index"),
        {"i": measured.id}).all()
    if listed:
        prompt = [int(r[0]) for r in listed]
        output = [int(r[1]) for r in listed]
    else:
        n = measured.completed
        prompt = _split_evenly(measured.total_input_tokens, n)
        output = [max(t, 1) for t in _split_evenly(measured.total_output_tokens, n)]
    n = len(prompt)
    arrival = None
    if measured.request_rate_per_s is not None:
        arrival = gamma_arrivals(n, measured.request_rate_per_s, measured.burstiness, REPLAY_SEED).tolist()
    images = [measured.images_per_request] * n
    return make_trace(f"serving measurement {measured.id}", prompt, output, arrival, images,
                      [measured.page] * n)


def _split_evenly(total: int, n: int) -> list[int]:
    """n integers summing to total, as even as can be (the first total % n one larger)."""
    base, extra = divmod(int(total), n)
    return [base + 1] * extra + [base] * (n - extra)


def replay_scenario(measured: Measured, host: str | None = None):
    """The serving scenario that replays an ingested run on its setup (host: another host profile)."""
    from registry.pricing.whatif import scenario_from_mapping

    base = {"profile": STANDARD_PROFILE[measured.variant], "variant": measured.variant, "mode": measured.mode}
    if measured.page:
        base["page"] = measured.page
    serving: dict = {"engine": measured.engine, "host": host or measured.host, "max_num_seqs": measured.max_num_seqs,
                     "max_num_batched_tokens": measured.max_num_batched_tokens}
    if measured.ngram is not None:
        serving["logits_processor"] = {"ngram_size": measured.ngram[0], "window_size": measured.ngram[1]}
    if measured.vcpus is not None:
        serving["cpu_workers"] = measured.vcpus
    if measured.max_concurrency is not None:
        serving["arrival"] = {"concurrency": [measured.max_concurrency]}
    data = {"name": f"serving-measurement-{measured.id}", "base": base,
            "sweep": {"hardware": [measured.hardware], "runtime": [measured.runtime]}, "serving": serving}
    return scenario_from_mapping(data, f"serving measurement {measured.id}", allow_profile_paths=False)


@attrs.frozen
class ReplayPlan:
    """A measured run's replay, ready to simulate (no registry needed): calibration simulates it many times."""

    measured: Measured
    plan: object  # registry.serving.scenario.ServingPlan


def replay_plan(registry: Registry, measurement_id: int, host: str | None = None,
                progress: bool = False) -> ReplayPlan:
    from registry.pricing.whatif import ScenarioError
    from registry.serving.scenario import serving_plan, serving_spec

    with registry.begin() as conn:
        measured = load_measured(conn, measurement_id)
        trace = replay_trace(conn, measured)
    scenario = replay_scenario(measured, host)
    try:
        spec = serving_spec(scenario, points=1, requests=trace)
        plan = serving_plan(registry, scenario, spec, progress)
    except ScenarioError as exc:
        raise ServingResultError(str(exc)) from None
    return ReplayPlan(measured, plan)


def simulate_replay(replay: ReplayPlan, host_model=None) -> dict:
    """The replay's figures, named as the benchmark tools name theirs: throughputs and latency statistics (ms) of
    TTFT, TPOT (per request: (latency - TTFT) / (output - 1)), ITL (the gaps between a request's tokens, pooled)
    and end-to-end latency; with the resource that bounds it. `host_model`: another host model (calibration)."""
    from registry.serving.engine import simulate
    from registry.serving.scenario import trace_pages

    plan = replay.plan
    spec = plan.spec
    _, _, cost, config = plan.points[0]
    rate, concurrency = plan.rates[0]
    pages = trace_pages(spec, rate, concurrency)
    steps: list = []
    result = simulate(cost, attrs.evolve(config, concurrency=concurrency), pages,
                      host=spec.host_model if host_model is None else host_model, trace=steps)
    return replay_figures(result, steps)


def replay_figures(result, steps) -> dict:
    start, end = float(result.arrival.min()), float(result.finish.max())
    duration = end - start
    ttft = (result.first_token - result.arrival) * 1e3
    e2el = (result.finish - result.arrival) * 1e3
    multi = result.new_tokens > 1
    tpot = (e2el[multi] - ttft[multi]) / (result.new_tokens[multi] - 1)
    # every page decoding in a step emits a token at its end: the step's seconds are one gap of each of them
    gap_ms = np.array([s.seconds for s in steps if s.decoding]) * 1e3
    weight = np.array([s.decoding for s in steps if s.decoding], dtype=float)
    out = {"requests": len(result.arrival), "total_output_tokens": int(result.new_tokens.sum()),
           "duration_s": duration, "request_throughput_per_s": len(result.arrival) / duration,
           "output_throughput_tokens_per_s": float(result.new_tokens.sum()) / duration,
           "bound_by": result.summary()["bound_by"]}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("e2el", e2el)):
        out[f"mean_{name}_ms"] = float(values.mean()) if len(values) else None
        out[f"median_{name}_ms"] = float(np.median(values)) if len(values) else None
        out[f"p99_{name}_ms"] = float(np.percentile(values, 99)) if len(values) else None
    if len(gap_ms):
        out["mean_itl_ms"] = float((gap_ms * weight).sum() / weight.sum())
        out["median_itl_ms"] = _weighted_percentile(gap_ms, weight, 50)
        out["p99_itl_ms"] = _weighted_percentile(gap_ms, weight, 99)
    else:
        out.update(mean_itl_ms=None, median_itl_ms=None, p99_itl_ms=None)
    return out


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-th percentile of values each repeated `weight` times (the lower value at a tie, as numpy's
    'inverted_cdf')."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1], side="left"))
    return float(values[order][min(index, len(values) - 1)])


def predict(registry: Registry, measurement_id: int, host: str | None = None, progress: bool = False) -> dict:
    """Simulate an ingested run's requests on its setup (under `host`, default its own host profile) and store the
    prediction (replacing one of the same host profile version)."""
    replay = replay_plan(registry, measurement_id, host, progress)
    figures = simulate_replay(replay)
    host_profile = replay.plan.spec.host_profile
    row = {"measurement_id": measurement_id, "host_profile": host_profile.name, "host_version": host_profile.version,
           "simulated_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None), **figures}
    with registry.begin() as conn:
        conn.execute(sa.text("DELETE FROM serving_predictions WHERE measurement_id = :m AND host_profile = :h "
                             "AND host_version = :v"),
                     {"m": measurement_id, "h": host_profile.name, "v": host_profile.version})
        conn.execute(sa.insert(_table("serving_predictions")).values(row))
    return row


def measurement_ids(registry: Registry, ids: list[int] | None = None) -> list[int]:
    with registry.begin() as conn:
        known = [int(r[0]) for r in conn.execute(sa.text("SELECT id FROM serving_measurements ORDER BY id")).all()]
    if not ids:
        return known
    missing = [i for i in ids if i not in known]
    if missing:
        raise ServingResultError(f"no serving measurement {missing[0]}; stored: "
                                 f"{', '.join(map(str, known)) or 'none (ingest --serving-results FILE)'}")
    return list(ids)


COMPARE_COLUMNS = ["measurement_id", "hardware", "engine", "variant", "requests", "max_concurrency",
                   "request_rate_per_s", "host", "metric", "measured", "predicted", "ratio", "error", "bound_by"]


def compare_rows(registry: Registry, ids: list[int] | None = None, host: str | None = None,
                 progress: bool = False) -> list[dict]:
    """v_serving_compare's rows of the runs (default: every one), simulated first under `host` (default each run's
    own host profile) where no prediction of that host profile version is stored."""
    from registry.serving.profiles import ProfileError, load_profile

    chosen = measurement_ids(registry, ids)
    if not chosen:
        raise ServingResultError("no serving measurements stored (ingest --serving-results FILE --setup SETUP)")
    wanted = {}
    with registry.begin() as conn:
        for mid in chosen:
            label = host or load_measured(conn, mid).host
            try:
                profile = load_profile(conn, "host", label)
            except ProfileError as exc:
                raise ServingResultError(str(exc)) from None
            wanted[mid] = (profile.name, profile.version)
            stored = conn.execute(sa.text(
                "SELECT 1 FROM serving_predictions WHERE measurement_id = :m AND host_profile = :h AND "
                "host_version = :v"), {"m": mid, "h": profile.name, "v": profile.version}).first()
            if stored is None:
                wanted[mid] += (True,)
            else:
                wanted[mid] += (False,)
    for mid, (name, version, missing) in wanted.items():
        if missing:
            predict(registry, mid, f"{name}@{version}", progress)
    rows = []
    with registry.begin() as conn:
        for mid, (name, version, _) in wanted.items():
            result = conn.execute(sa.text(
                "SELECT measurement_id, hardware, engine, variant, requests, max_concurrency, request_rate_per_s, "
                "host_profile || '@' || CAST(host_version AS VARCHAR(20)), metric, measured, predicted, ratio, "
                "error, bound_by FROM v_serving_compare WHERE measurement_id = :m AND host_profile = :h AND "
                "host_version = :v ORDER BY metric_order"), {"m": mid, "h": name, "v": version}).all()
            rows.extend(dict(zip(COMPARE_COLUMNS, r)) for r in result)
    return rows


def calibrate_serving(registry: Registry, ids: list[int] | None, host: str | None, free: tuple[str, ...] = (),
                      name: str | None = None, progress: bool = False) -> dict:
    """Fit the free costs of a host profile (default: the runs' own, which must then be one) to ingested serving
    runs through the simulator (registry.serving.fit_host); store the result as the next version of `name`
    (default: the base's name), origin calibrated."""
    from registry.serving import fit_host
    from registry.serving.profiles import ProfileError, load_profile, store_profiles

    chosen = measurement_ids(registry, ids)
    if not chosen:
        raise ServingResultError("no serving measurements stored (ingest --serving-results FILE --setup SETUP)")
    with registry.begin() as conn:
        measured = {mid: load_measured(conn, mid) for mid in chosen}
        hosts = sorted({m.host for m in measured.values()})
        if host is None and len(hosts) > 1:
            raise ServingResultError(f"the runs were ingested with different host profiles ({', '.join(hosts)}): "
                                     "name the one to start from with --host")
        try:
            base = load_profile(conn, "host", host or hosts[0])
        except ProfileError as exc:
            raise ServingResultError(str(exc)) from None
        figures = {int(r[0]): {"request_throughput_per_s": r[1], "mean_tpot_ms": r[2]} for r in conn.execute(
            sa.text("SELECT id, request_throughput_per_s, mean_tpot_ms FROM serving_measurements")).all()}
    targets = [fit_host.Target(mid, replay_plan(registry, mid, base.label, progress), figures[mid])
               for mid in chosen]
    try:
        result = fit_host.calibrate_host(targets, base, tuple(free) or fit_host.DEFAULT_FREE)
        with registry.begin() as conn:
            document, profile = fit_host.fitted_document(conn, base, result["parameters"], name, chosen)
            store_profiles(conn, "host", [(document, profile)], "calibrated")
    except fit_host.FitError as exc:
        raise ServingResultError(str(exc)) from None
    return {**result, "document": document, "profile": profile.label, "base": base.label, "measurements": chosen}
