"""Measure a host profile: the CPU work of serving DeepSeek-OCR on the machine this runs on.

A host profile is one YAML document (the shipped ones are in registry/data/hosts.yaml) that the serving simulator
prices a step's host work from: the serving engine's per-step and per-request Python work (vLLM V0's scheduler,
input preparation, sampling metadata, sampler, bookkeeping, logits-processor loop, detokenization), the n-gram
no-repeat processor, page preprocessing per variant and resolution mode, and page rendering.

- Page preprocessing (registry.serving.page_pipeline, DeepSeek-OCR's pipeline in numpy + PIL) is timed per mode on
  several page sizes and fitted per page as fixed + per source megapixel + per crop (least squares).
- Rendering: the PNG encode + decode round trip per megapixel; with PyMuPDF installed, the rasterization of a
  generated PDF page at 144 dpi plus that round trip.
- The n-gram processor (registry.serving.ngram) is timed on token histories of several lengths: per call + per
  token of min(window, generated). One call on a fixed history is the profile's `python_speed_kernel_us`, the
  single-thread speed of this CPU for pure Python.
- vLLM V0's own code (registry.serving.vllm_host) where vLLM imports; elsewhere its pieces are the shipped
  default profile's, scaled by the ratio of this CPU's `python_speed_kernel_us` to that profile's (how: scaled).

Timing, spread and fits: registry.serving.host_timing (thread CPU time; spread = max(IQR / 2, 10% of value)).
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable

import numpy as np

from analyzer.variants import VARIANTS
from registry.serving import page_pipeline
from registry.serving.host_timing import figure, fit_linear, fitted, measured, repeat_us, rounds_us, spread_of
from registry.serving.ngram import RECIPE_NGRAM_SIZE, RECIPE_WINDOW_SIZE, NoRepeatNGram
from registry.serving.profiles import HOST_COST_KEYS, NAME_PATTERN

PROFILE_VERSION = 1
DEFAULT_PROFILE = "epyc-2c-vllm-0.8.5"  # the shipped profile measured with vLLM's own code
VLLM_COST_KEYS = (
    "schedule_step_us", "schedule_per_request_us", "prepare_inputs_step_us", "prepare_inputs_per_request_us",
    "sampling_metadata_step_us", "sampling_metadata_per_request_us", "sampler_step_us", "sampler_per_request_us",
    "bookkeeping_per_request_us", "logits_call_per_request_us", "logits_history_per_token_us",
    "detokenize_per_token_us")
NGRAM_COST_KEYS = ("ngram_call_us", "ngram_per_window_token_us")
COST_KEYS = HOST_COST_KEYS  # the order of a profile's costs: the registry's parser owns it
PREPROCESS_TERMS = ("fixed_ms", "per_megapixel_ms", "per_crop_ms")
DOCUMENT_KEYS = ("name", "version", "description", "source", "measured_on", "python_speed_kernel_us", "costs",
                 "preprocess", "render_per_megapixel_ms")

# Page sizes the preprocessing is fitted over: A4 at 144 dpi (DeepSeek's rendering), at 200 and 300 dpi, a
# landscape A4, a wide strip and a square page (other tile grids), and a small page (no tiles).
PAGE_SIZES = ((1191, 1684), (1654, 2339), (2480, 3508), (2339, 1654), (1920, 640), (2000, 2000), (600, 500))
QUICK_PAGE_SIZES = ((1191, 1684), (2339, 1654), (1920, 640), (600, 500))
NGRAM_HISTORY_LENGTHS = (30, 45, 60, 75, 90, 200)
KERNEL_HISTORY_TOKENS = 200


def _progress(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)


def ngram_kernel(seed: int = 0) -> Callable[[], object]:
    """The pure-Python speed kernel: one n-gram no-repeat call (vLLM recipe's 30 / 90) on a fixed history."""
    history = [int(t) for t in np.random.default_rng(seed).integers(0, 129280, KERNEL_HISTORY_TOKENS)]
    processor = NoRepeatNGram(RECIPE_NGRAM_SIZE, RECIPE_WINDOW_SIZE)
    return lambda: processor.banned_tokens(history)


def measure_ngram(repeats: int) -> dict:
    """{ngram_call_us, ngram_per_window_token_us}: the n-gram processor on histories of several lengths."""
    processor = NoRepeatNGram(RECIPE_NGRAM_SIZE, RECIPE_WINDOW_SIZE)
    rng = np.random.default_rng(1)
    histories = [[int(t) for t in rng.integers(0, 129280, length)] for length in NGRAM_HISTORY_LENGTHS]
    rounds = rounds_us([lambda h=history: processor.banned_tokens(h) for history in histories], repeats)
    window_tokens = np.minimum(NGRAM_HISTORY_LENGTHS, RECIPE_WINDOW_SIZE)
    values, spreads = fit_linear(np.column_stack([np.ones(len(window_tokens)), window_tokens]), rounds)
    return {"ngram_call_us": fitted(values, spreads, 0), "ngram_per_window_token_us": fitted(values, spreads, 1)}


class SpeedKernel:
    """The pure-Python speed kernel, timed at several moments of a measurement (a few repeats each): the median
    of samples spread over the whole run is not thrown off by one burst of load from elsewhere."""

    def __init__(self, repeats_per_sample: int = 3):
        self.work = ngram_kernel()
        self.repeats = repeats_per_sample
        self.samples: list[float] = []

    def sample(self) -> None:
        self.samples += repeat_us(self.work, self.repeats)

    def figure(self) -> dict:
        return measured(self.samples)


def measure_preprocess(page_sizes, repeats: int, progress=None, between_rounds: Callable[[], object] = lambda: None
                       ) -> dict:
    """{variant: {mode: {fixed_ms, per_megapixel_ms, per_crop_ms}}} fitted over the page sizes. Every round times
    every mode on every page (round-robin over all of them: a burst of load lands in one round)."""
    pages = [page_pipeline.synthetic_page(w, h, seed=i) for i, (w, h) in enumerate(page_sizes)]
    megapixels = np.array([w * h / 1e6 for w, h in page_sizes])
    modes = [(variant_name, mode) for variant_name, variant in VARIANTS.items() for mode in variant.modes]
    works = [lambda p=page, v=variant_name, m=mode: page_pipeline.preprocess_page(p, v, m)
             for variant_name, mode in modes for page in pages]
    _progress(progress, f"preprocessing: {len(modes)} modes x {len(pages)} pages, warming up")
    rounds_us(works, 0, target_us=0.0)  # no timing: one call of each work to warm it up
    collected = []
    for r in range(repeats):
        _progress(progress, f"preprocessing: round {r + 1} of {repeats}")
        collected.append(rounds_us(works, 1, target_us=-1.0)[0])
        between_rounds()
    rounds = np.array(collected) / 1e3  # ms
    result: dict = {variant_name: {} for variant_name in VARIANTS}
    for index, (variant_name, mode) in enumerate(modes):
        spec = VARIANTS[variant_name].modes[mode]
        mode_rounds = rounds[:, index * len(pages):(index + 1) * len(pages)]
        crops = np.array([page_pipeline.PageProcessor(variant_name, mode).tile_grid(*page.size) for page in pages])
        crops = crops.prod(axis=1).astype(float)
        if spec.tile_px is None:
            values, spreads = fit_linear(np.column_stack([np.ones_like(megapixels), megapixels]), mode_rounds)
            terms = {"fixed_ms": fitted(values, spreads, 0), "per_megapixel_ms": fitted(values, spreads, 1),
                     "per_crop_ms": figure(0.0, 0.0)}
        else:
            values, spreads = fit_linear(np.column_stack([np.ones_like(megapixels), megapixels, crops]), mode_rounds)
            terms = {name: fitted(values, spreads, i) for i, name in enumerate(PREPROCESS_TERMS)}
        result[variant_name][mode] = terms
    return result


def measure_render(page_sizes, repeats: int) -> tuple[dict, str]:
    """Rendering per megapixel (ms) and how it was timed."""
    if page_pipeline.pymupdf_available():
        samples = []
        for width, height in page_sizes[:3]:
            # a PDF page whose 144 dpi raster is about the page size
            pdf = page_pipeline.synthetic_pdf(width * 72 / page_pipeline.RENDER_DPI,
                                              height * 72 / page_pipeline.RENDER_DPI)
            times = repeat_us(lambda d=pdf: page_pipeline.rasterize_pdf_page(d), repeats, target_us=0.0)
            samples.append(np.array(times) / 1e3 / (width * height / 1e6))
        how = "PyMuPDF rasterization at 144 dpi of generated PDF pages + the PNG round trip"
    else:
        samples = []
        for width, height in page_sizes[:3]:
            page = page_pipeline.synthetic_page(width, height)
            times = repeat_us(lambda p=page: page_pipeline.render_round_trip(p), repeats, target_us=0.0)
            samples.append(np.array(times) / 1e3 / (width * height / 1e6))
        how = "the PNG encode + decode round trip only (PyMuPDF is not installed)"
    per_round = np.median(np.array(samples), axis=0)  # rounds: the median over page sizes
    return measured(per_round), how


def _library_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def shipped_profiles() -> list[dict]:
    """The documents of the host profiles shipped in registry/data/hosts.yaml, as the catalog reads them."""
    from registry.serving.profiles import shipped_profiles as shipped_catalog

    return [entry for entry, _ in shipped_catalog("host")]


def shipped_profile(name: str = DEFAULT_PROFILE) -> dict:
    for profile in shipped_profiles():
        if profile["name"] == name:
            return profile
    raise KeyError(f"no shipped host profile {name!r}")


def scaled_vllm_costs(kernel: dict, reference: dict | None = None) -> dict:
    """The reference profile's vLLM costs scaled by this CPU's speed kernel relative to the reference's."""
    reference = reference or shipped_profile()
    ratio = kernel["value"] / reference["python_speed_kernel_us"]["value"]
    kernel_relative = kernel["spread"] / kernel["value"] if kernel["value"] else 0.0
    reference_kernel = reference["python_speed_kernel_us"]
    reference_relative = reference_kernel["spread"] / reference_kernel["value"]
    costs = {}
    for key in VLLM_COST_KEYS:
        cost = reference["costs"][key]
        value = cost["value"] * ratio
        # the reference's own spread, scaled, plus what the two kernel timings leave unknown
        spread = cost["spread"] * ratio + value * (kernel_relative + reference_relative)
        costs[key] = figure(value, spread, "scaled")
    return costs


def measure_host(quick: bool = False, progress: Callable[[str], None] | None = None, name: str | None = None,
                 with_vllm: bool | None = None) -> dict:
    """One host-profile document measured on this machine (see the module docstring and README "Measuring a
    host"). `quick`: fewer repeats, page sizes and vLLM points (a check, not a profile to ship). `with_vllm`:
    None times vLLM's own code when it imports here, False always scales the shipped default's vLLM pieces."""
    from registry.serving import vllm_host

    repeats = 5 if quick else 7
    page_sizes = QUICK_PAGE_SIZES if quick else PAGE_SIZES
    _progress(progress, "n-gram processor and the pure-Python speed kernel")
    speed = SpeedKernel()
    speed.sample()
    ngram_costs = measure_ngram(repeats=5 if quick else 9)
    speed.sample()
    _progress(progress, "rendering")
    render, render_how = measure_render(page_sizes, repeats)
    speed.sample()
    preprocess = measure_preprocess(page_sizes, repeats, progress, between_rounds=speed.sample)
    importable, why = vllm_host.vllm_importable() if with_vllm is not False else (False, "not asked for")
    vllm_version = why if importable else None
    if importable:
        counts, lengths = ((1, 32, 100), (64, 1024)) if quick else ((1, 8, 32, 100, 256), (64, 512, 2048))
        vllm_costs = vllm_host.measure_v0(counts, lengths, rounds=3 if quick else 5, steps=3, progress=progress)
        speed.sample()
        vllm_source = (f"vLLM {vllm_version} V0's own host code run on this CPU with synthetic decode requests "
                       f"({', '.join(map(str, counts))} running; {', '.join(map(str, lengths))} generated tokens; "
                       f"prompt {vllm_host.PROMPT_TOKENS} tokens, block size {vllm_host.BLOCK_SIZE}): "
                       "Scheduler.schedule, ModelInputForGPUBuilder with the FlashAttention metadata builder "
                       "(tensors on the CPU), SamplingMetadata.prepare, _apply_logits_processors with a "
                       "pass-through processor, the sampler's post-sync Python (get_pythonized_sample_results, "
                       "get_logprobs, _build_sampler_output), LLMEngine._advance_to_next_step, "
                       "SingleStepOutputProcessor.process_outputs + RequestOutputFactory.create with a synthetic "
                       "byte-level BPE tokenizer; fitted by least squares. Not run (GPU only): the forward, "
                       "CUDA-graph replay, the sampler's kernels and its GPU sync, host-to-device copies.")
    kernel = speed.figure()
    if not importable:
        reference = shipped_profile()
        vllm_costs = scaled_vllm_costs(kernel, reference)
        vllm_source = (f"vLLM pieces scaled from the shipped profile {reference['name']} by this CPU's "
                       f"python_speed_kernel_us ({kernel['value']} us vs "
                       f"{reference['python_speed_kernel_us']['value']} us): vLLM not measured here ({why}).")
    costs = {key: (ngram_costs[key] if key in ngram_costs else vllm_costs[key]) for key in COST_KEYS}
    command = "dsocr-registry measure-host" + (" --quick" if quick else "")
    page_list = ", ".join(f"{w}x{h}" for w, h in page_sizes)
    document = {
        "name": name or default_name(vllm_version),
        "version": PROFILE_VERSION,
        "description": (f"host work on {cpu_name()} ({_cores()} cores), "
                        + (f"vLLM {vllm_version} V0 measured" if importable else "vLLM pieces scaled")),
        "source": (f"{command} (thread CPU time; spread = max(IQR/2 of repeats, 10% of value)). {vllm_source} "
                   f"n-gram processor {RECIPE_NGRAM_SIZE}/{RECIPE_WINDOW_SIZE} on histories of "
                   f"{', '.join(map(str, NGRAM_HISTORY_LENGTHS))} tokens. Preprocessing (DeepSeek-OCR's pipeline "
                   f"in numpy + PIL, a new processor per page) fitted over pages {page_list}. "
                   f"Rendering: {render_how}."),
        "measured_on": {
            "cpu": cpu_name(), "cores": _cores(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat(),
            "libraries": {"numpy": _library_version("numpy"), "pillow": _library_version("pillow"),
                          "vllm": vllm_version},
        },
        "python_speed_kernel_us": kernel,
        "costs": costs,
        "preprocess": preprocess,
        "render_per_megapixel_ms": render,
    }
    check_profile(document)
    return document


def default_name(vllm_version: str | None) -> str:
    cpu = cpu_name().lower()
    family = next((word for word in ("epyc", "xeon", "ryzen", "core", "graviton", "neoverse", "apple")
                   if word in cpu), "cpu")
    engine = f"vllm-{vllm_version}" if vllm_version else "vllm-scaled"
    return f"{family}-{_cores()}c-{engine}"


def check_profile(document: dict) -> None:
    """Refuses (ValueError, one line) a host-profile document the registry would refuse (its parser,
    registry.serving.profiles) or that lacks a piece measure-host measures: every cost, the speed kernel, rendering
    and every mode of every variant."""
    from registry.serving.profiles import Located, ProfileError, parse_host_profiles

    try:
        parse_host_profiles([document], Located("host profile", {}))
    except ProfileError as exc:
        raise ValueError(str(exc)) from None
    missing = [key for key in DOCUMENT_KEYS if key not in document]
    missing += [f"costs.{key}" for key in COST_KEYS if key not in (document.get("costs") or {})]
    for variant_name, variant in VARIANTS.items():
        modes = (document.get("preprocess") or {}).get(variant_name) or {}
        missing += [f"preprocess {variant_name} {mode}" for mode in variant.modes if mode not in modes]
    if missing:
        raise ValueError(f"host profile lacks {', '.join(missing)}")


def profile_rows(document: dict) -> list[tuple[str, float, float, str]]:
    """(piece, value, spread, how) per figure, in the profile's order, for a printed table."""
    rows = [("python_speed_kernel_us", *_triple(document["python_speed_kernel_us"]))]
    rows += [(key, *_triple(document["costs"][key])) for key in COST_KEYS]
    for variant_name, modes in document["preprocess"].items():
        for mode, terms in modes.items():
            rows += [(f"preprocess {variant_name} {mode} {term}", *_triple(terms[term])) for term in PREPROCESS_TERMS]
    rows.append(("render_per_megapixel_ms", *_triple(document["render_per_megapixel_ms"])))
    return rows


def _triple(value: dict) -> tuple[float, float, str]:
    return value["value"], value["spread"], value["how"]


__all__ = ["measure_host", "check_profile", "profile_rows", "shipped_profile", "shipped_profiles",
           "scaled_vllm_costs", "spread_of"]
