"""Reports derived from a family's frame equal reports traced for the very workload: row for row, byte for byte
in JSON, under the same report id, on batches, prompt and output lengths the frame's probes never saw."""

import itertools

import pytest

from analyzer import trace_cache
from analyzer.analysis import analyze, analyze_traced, family_frame
from analyzer.categories import CategoryId
from analyzer.counts import CountVector, TraceResult
from analyzer.execution import Execution
from analyzer.frame import (FamilyKey, NotExactError, Polynomial, assemble_report, build_frame, fit_prefill,
                            prefill_probe_tokens)
from analyzer.report import dumps_json
from analyzer.variants import VARIANTS
from analyzer.workload import MODES, Workload

BATCHES = (3, 7, 48)
OUTPUTS = (1, 333, 4096)
PROMPTS = (9, 200)
FAMILIES = [(variant, execution, mode) for variant in VARIANTS for execution in ("hf-eager", "vllm")
            for mode in MODES[variant]]


def assert_same_report(derived, traced) -> None:
    assert derived.stages == traced.stages
    for ours, theirs in zip(derived.module_metrics, traced.module_metrics, strict=True):
        assert ours == theirs, (ours.module_path, ours.stage)
    assert dumps_json(derived) == dumps_json(traced)
    assert derived.report_id == traced.report_id


def _fitted_frame(workload, execution):
    """The family's frame with its prefill fit, as the trace cache gives it back, holding no traced prefill: every
    report assembled from it derives its prefill from the fit."""
    frame = family_frame(workload, execution)
    frame.fit()
    trace_cache.store_frame(frame)
    stored = trace_cache.load_frame(FamilyKey.of(workload, Execution(execution)))
    assert stored == frame
    stored.prefill_traces.clear()
    return stored


@pytest.mark.parametrize("variant, execution, mode", FAMILIES)
def test_derived_reports_equal_fresh_traces_on_the_unseen_grid(variant, execution, mode):
    """Every mode of both variants under both executions: batch 3, 7, 48 x output 1, 333, 4096 x prompt 9, 200."""
    frame = _fitted_frame(Workload(variant=variant, mode=mode, batch=2), execution)
    assert frame.prefill_fit is not None  # every standard family fits exactly: no point below was traced for it
    probes = set(prefill_probe_tokens(frame.prefill_fit.image_tokens, 8192)[0])
    for batch, new_tokens, prompt in itertools.product(BATCHES, OUTPUTS, PROMPTS):
        workload = Workload(variant=variant, mode=mode, batch=batch, new_tokens=new_tokens, prompt_text_tokens=prompt)
        assert workload.prefill_tokens not in probes
        assert_same_report(assemble_report(workload, Execution(execution), frame),
                           analyze_traced(workload, execution))


@pytest.mark.parametrize("execution", ["hf-eager", "vllm"])
def test_single_item_families_and_forced_tile_grids(execution):
    """Batch 1 is its own family (traced at one item), and so is every tile grid."""
    for workload in [Workload(variant="v1", mode="gundam", batch=1, new_tokens=333, prompt_text_tokens=9),
                     Workload(variant="v1", mode="gundam", tile_grid=(3, 1), batch=7, new_tokens=1),
                     Workload(variant="v2", mode="gundam", batch=1, new_tokens=4096, prompt_text_tokens=200)]:
        assert_same_report(analyze(workload, execution), analyze_traced(workload, execution))


def test_one_frame_serves_its_whole_family_and_no_other():
    a = FamilyKey.of(Workload(variant="v1", mode="base", batch=3), Execution("vllm"))
    assert a == FamilyKey.of(Workload(variant="v1", mode="base", batch=48, new_tokens=7, prompt_text_tokens=200),
                             Execution("vllm"))
    assert a != FamilyKey.of(Workload(variant="v1", mode="base", batch=1), Execution("vllm"))
    assert a != FamilyKey.of(Workload(variant="v1", mode="base", batch=3), Execution("hf-eager"))
    assert a != FamilyKey.of(Workload(variant="v1", mode="large", batch=3), Execution("vllm"))


def test_polynomials_are_exact_rationals():
    poly = Polynomial.through((10, 20, 30, 40), [x * (x + 1) // 2 for x in (10, 20, 30, 40)])
    assert poly.denominator == 2 and poly.numerators == (0, 1, 1)
    assert [poly(x) for x in (0, 1, 7, 8191)] == [x * (x + 1) // 2 for x in (0, 1, 7, 8191)]
    with pytest.raises(NotExactError):
        Polynomial((1,), 2)(3)  # a count that is not a whole number at a point is never rounded


def _fake_trace(value):
    """A prefill trace whose one row's FLOPs are value(prompt tokens)."""
    return lambda tokens: TraceResult(counts={("m", CategoryId.MATMUL): CountVector(op_calls=1,
                                                                                   scaled_flops=value(tokens))},
                                      module_calls={"m": 1}, activation_peak_bytes=tokens)


def test_a_count_that_is_no_polynomial_is_refused():
    """A piecewise count (a data-dependent path) fits the probes but misses a check: no fit, the family traces."""
    fit, check = prefill_probe_tokens(100, 8192)
    fit_prefill(_fake_trace(lambda t: 3 * t * t + 1), 100, 2, fit, check)  # a quadratic fits
    with pytest.raises(NotExactError):
        fit_prefill(_fake_trace(lambda t: t if t < 3000 else 2 * t), 100, 2, fit, check)
    with pytest.raises(NotExactError):
        fit_prefill(_fake_trace(lambda t: t ** 5), 100, 2, fit, check)


def test_a_family_without_a_fit_traces_its_prefills(monkeypatch):
    """When the prefill does not fit, the frame keeps the exact traces and traces each prompt length it meets."""
    import analyzer.frame as frame_module
    from analyzer.tracing import TracingSource

    def refuse(*args, **kwargs):
        raise NotExactError("data-dependent")

    monkeypatch.setattr(frame_module, "fit_prefill", refuse)
    first = Workload(variant="v1", mode="small", batch=7, new_tokens=333, prompt_text_tokens=9)
    frame = build_frame(first, Execution("hf-eager"), TracingSource("v1", Execution("hf-eager")), fit=True)
    assert frame.prefill_fit is None and frame.fit_tried
    frame.fallback = None  # as read back from the cache: it traces through a source of its own
    workload = Workload(variant="v1", mode="small", batch=7, new_tokens=333, prompt_text_tokens=200)
    assert workload.prefill_tokens not in frame.prefill_traces
    assert_same_report(assemble_report(workload, Execution("hf-eager"), frame),
                       analyze_traced(workload, "hf-eager"))
    assert sorted(frame.prefill_traces) == [first.prefill_tokens, workload.prefill_tokens]  # kept, to be stored
