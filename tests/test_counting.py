"""Counts against torch's FlopCounterMode, the causal correction, decode integration and MoE rules."""

import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from analyzer import analysis as A
from analyzer import frame, routing, tracing
from analyzer.architecture import DTYPE, build_model, instantiate, load_spec
from analyzer.execution import FUSION_RULES, KERNELS_PER_OP, Execution
from analyzer.categories import CategoryId
from analyzer.counting import OpCounter
from analyzer.report import Stage
from analyzer.workload import Workload


def _total_flops(trace):
    return sum(v.fixed_flops + v.scaled_flops for v in trace.counts.values())


def _flop_counter(fn):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@functools.cache
def _reference_model(variant):
    """The same network on transformers' batched_mm experts path: torch's counter has a formula for its bmm
    (top-k experts per token) and none for the grouped GEMM the traces run."""
    model = instantiate(variant, "meta")
    model.set_experts_implementation("batched_mm")
    return model


@pytest.mark.parametrize("variant,px,reference_gflops", [
    ("v1", 512, 268.0), ("v1", 640, 387.6), ("v1", 1024, 1138.6), ("v1", 1280, 1941.1),
    ("ocr2", 1024, 1365.6), ("ocr2", 768, 727.7)])
def test_vision_flops_per_view_equal_flop_counter_mode(variant, px, reference_gflops):
    model = build_model(variant)
    pixels = torch.empty(1, 3, px, px, device="meta", dtype=DTYPE)
    torch_flops = _flop_counter(lambda: model.model.vision_tower(pixels))
    ours = _total_flops(A.trace_vision(variant, px))
    assert abs(ours - torch_flops) <= 0.001 * torch_flops
    assert round(ours / 1e9, 1) == reference_gflops


def test_v1_vision_split_sam_and_clip():
    trace = A.trace_vision("v1", 1024)
    sam = sum(v.scaled_flops + v.fixed_flops for (p, _), v in trace.counts.items() if ".sam_encoder" in p)
    clip = sum(v.scaled_flops + v.fixed_flops for (p, _), v in trace.counts.items() if ".vision_encoder" in p)
    assert round(sam / 1e9, 1) == 976.9
    assert round(clip / 1e9, 1) == 161.7


@pytest.mark.parametrize("variant,prompt_tokens", [("v1", 912), ("ocr2", 300)])
def test_prefill_flops_equal_flop_counter_mode_after_causal_correction(variant, prompt_tokens):
    model = _reference_model(variant)
    text = load_spec(variant).text
    image_tokens = prompt_tokens - 9
    input_ids = torch.empty(1, prompt_tokens, device="meta", dtype=torch.long)

    def prefill():
        cache = tracing._empty_cache(model, 0)
        embeds = model.model.language_model.embed_tokens(input_ids)
        hidden = model.model.language_model(inputs_embeds=embeds, past_key_values=cache,
                                            use_cache=True).last_hidden_state
        model.lm_head(hidden[:, -1:, :])

    torch_flops = _flop_counter(prefill)  # counts attention over the full S x S square
    heads, head_dim, layers = text["num_attention_heads"], 128, text["num_hidden_layers"]
    s = prompt_tokens
    full_square = layers * 4 * heads * head_dim * s * s
    causal = layers * 4 * heads * head_dim * (s * (s + 1) // 2)
    expected = torch_flops - full_square + causal
    ours = _total_flops(A.trace_prefill(variant, prompt_tokens, image_tokens))
    assert abs(ours - expected) <= 0.001 * expected
    attention = sum(v.scaled_flops for (p, c), v in A.trace_prefill(variant, prompt_tokens, image_tokens).counts.items()
                    if c is CategoryId.ATTENTION)
    assert attention == causal


def test_decode_step_is_affine_in_context():
    for context in (1, 700, 3000):
        direct = A.trace_decode_step("v1", context).counts
        modelled = A.decode_step_counts("v1", context)
        assert set(direct) == set(modelled)
        for key, vec in direct.items():
            assert vec == modelled[key], key


def test_decode_step_flops_are_two_per_activated_parameter_plus_attention():
    text = load_spec("v1").text
    context = 1000
    counts = A.decode_step_counts("v1", context)
    flops = sum(v.fixed_flops + v.scaled_flops for v in counts.values())
    attention = sum(v.scaled_flops for (p, c), v in counts.items() if c is CategoryId.ATTENTION)
    assert attention == 12 * 4 * text["num_attention_heads"] * 128 * (context + 1)
    norm_params = 12 * 2 * 1280 + 1280  # RMSNorm weights multiply, they do not accumulate
    assert flops - attention == 2 * (574_127_360 - norm_params)
    # ~2 x 574M + attention
    assert abs(flops - (2 * 574_127_360 + attention)) / flops < 0.001


def test_moe_flops_use_top_k_not_all_experts():
    counts = A.decode_step_counts("v1", 512)
    experts = sum(v.fixed_flops + v.scaled_flops for (p, c), v in counts.items() if p.endswith(".mlp.experts"))
    assert experts == 11 * 6 * 2 * 3 * 1280 * 896
    prefill = A.trace_prefill("v1", 400, 391)
    experts = sum(v.scaled_flops for (p, c), v in prefill.counts.items() if p.endswith(".mlp.experts"))
    assert experts == 400 * 11 * 6 * 2 * 3 * 1280 * 896


def test_distinct_experts_formula():
    assert routing.expected_distinct_experts(1, 64, 6) == pytest.approx(6.0)
    assert routing.expected_distinct_experts(8, 64, 6) == pytest.approx(64 * (1 - (58 / 64) ** 8))
    assert 34.5 < routing.expected_distinct_experts(8, 64, 6) < 35.5
    assert routing.expected_distinct_experts(64, 64, 6) > 63.7
    assert routing.expected_distinct_experts(0, 64, 6) == 0.0


def _workload(**kw):
    base = dict(variant="v1", mode="base", page_width_px=1654, page_height_px=2339, prompt_text_tokens=9,
                new_tokens=6, batch=1)
    base.update(kw)
    return Workload(**base)


@pytest.mark.parametrize("batch", [1, 8])
def test_decode_stage_is_the_exact_sum_of_its_steps(batch):
    report = A.analyze(_workload(new_tokens=6, batch=batch))
    decode = next(s for s in report.stages if s.stage is Stage.DECODE)
    prefill_tokens = report.workload.prefill_tokens
    assert (decode.calls, decode.context_start, decode.context_end) == (5, prefill_tokens, prefill_tokens + 4)
    distinct = routing.expected_distinct_experts(batch, 64, 6)
    traced = A.traced_items_for(batch)
    step_sum = {"flops": 0, "bytes": 0, "launches": 0}
    for context in range(prefill_tokens, prefill_tokens + 5):
        for vec in A.trace_decode_step("v1", context, traced).counts.values():
            priced = frame._scale(vec, batch, distinct, traced)
            step_sum["flops"] += priced["flops"]
            step_sum["bytes"] += priced["bytes_read"] + priced["bytes_written"]
            step_sum["launches"] += priced["kernel_launches"]
    assert decode.flops == step_sum["flops"]
    assert abs(decode.bytes_read + decode.bytes_written - step_sum["bytes"]) <= 5  # expert bytes rounded per step
    assert decode.kernel_launches == step_sum["launches"]
    # the stage's affine step model reproduces the first and last step
    first = decode.step_flops_base + decode.step_flops_per_context_token * prefill_tokens
    last = decode.step_flops_base + decode.step_flops_per_context_token * (prefill_tokens + 4)
    assert first + last == 2 * decode.flops // 5


def test_decode_weight_bytes_charge_distinct_experts():
    one = A.analyze(_workload(new_tokens=2, batch=1))
    eight = A.analyze(_workload(new_tokens=2, batch=8))
    per_expert = 3 * 1280 * 896 * 2

    def experts_weight_bytes(report):
        return sum(op.weight_bytes_read for snap in report.module_metrics
                   if snap.stage is Stage.DECODE and snap.module_path.endswith(".mlp.experts")
                   for op in snap.operators)

    assert experts_weight_bytes(one) == 11 * round(6 * per_expert)
    assert experts_weight_bytes(eight) == 11 * round(routing.expected_distinct_experts(8, 64, 6) * per_expert)


def _priced_total(counts, items, traced):
    totals = {"flops": 0, "bytes": 0, "kernel_launches": 0}
    for vec in counts.values():
        priced = frame._scale(vec, items, 0.0, traced)
        totals["flops"] += priced["flops"]
        totals["bytes"] += priced["bytes_read"] + priced["bytes_written"]
        totals["kernel_launches"] += priced["kernel_launches"]
    return totals


@pytest.mark.parametrize("batch", [3, 4, 8])
def test_batch_scaling_equals_a_batched_trace(batch):
    """A batch-2 trace scales linearly to larger batches (batch 1 aliases some reshapes that copy at >= 2)."""
    model = build_model("v1")
    pixels = torch.empty(batch, 3, 640, 640, device="meta", dtype=DTYPE)
    with torch.no_grad(), OpCounter(model, kernels_per_op=KERNELS_PER_OP[Execution.HF_EAGER]) as counter:
        model.model.vision_tower(pixels)
    direct = _priced_total(counter.result().counts, 1, 1)
    scaled = _priced_total(A.trace_vision("v1", 640, 2).counts, batch, 2)
    assert scaled == direct
    decode_direct = _priced_total(A.trace_decode_step("v1", 300, batch).counts, 1, 1)
    decode_scaled = _priced_total(A.trace_decode_step("v1", 300, 2).counts, batch, 2)
    assert decode_scaled["flops"] == decode_direct["flops"]
    assert decode_scaled["kernel_launches"] == decode_direct["kernel_launches"]
    assert abs(decode_scaled["bytes"] - decode_direct["bytes"]) <= 0.001 * decode_direct["bytes"]


@pytest.mark.parametrize("variant,builder", [("v1", lambda: A.trace_vision("v1", 1024)),
                                             ("v1", lambda: A.trace_prefill("v1", 500, 491)),
                                             ("v1", lambda: A.trace_decode_step("v1", 300)),
                                             ("ocr2", lambda: A.trace_vision("ocr2", 768)),
                                             ("ocr2", lambda: A.trace_prefill("ocr2", 300, 291)),
                                             ("v1", lambda: A.trace_decode_step("v1", 300, 2, Execution.VLLM)),
                                             ("ocr2", lambda: A.trace_prefill("ocr2", 300, 291, 1, Execution.VLLM))])
def test_repeated_blocks_replay_exactly(variant, builder):
    """Layers replayed from their first twin give the same counts as running every layer."""
    replayed = builder()
    original = tracing._counter
    tracing._counter = lambda v, execution=Execution.HF_EAGER: OpCounter(
        build_model(v), memoize_blocks=False, fusion_rules=FUSION_RULES[execution],
        kernels_per_op=KERNELS_PER_OP[execution])
    try:
        for fn in (A.trace_vision, A.trace_prefill, A.trace_decode_step):
            fn.cache_clear()
        full = builder()
    finally:
        tracing._counter = original
        for fn in (A.trace_vision, A.trace_prefill, A.trace_decode_step):
            fn.cache_clear()
    assert replayed.counts == full.counts
    assert replayed.module_calls == full.module_calls
    assert replayed.activation_peak_bytes == full.activation_peak_bytes


def test_other_category_is_under_five_percent(standard_v1_report, standard_ocr2_report):
    for report in (standard_v1_report, standard_ocr2_report):
        flops = {c: 0 for c in CategoryId}
        nbytes = {c: 0 for c in CategoryId}
        for snap in report.module_metrics:
            for op in snap.operators:
                flops[op.category_id] += op.flops
                nbytes[op.category_id] += op.bytes_read + op.bytes_written
        assert flops[CategoryId.OTHER] < 0.05 * sum(flops.values())
        assert nbytes[CategoryId.OTHER] < 0.05 * sum(nbytes.values())
        # categories sum to the stage totals
        assert sum(flops.values()) == report.total_flops
        assert sum(nbytes.values()) == report.total_bytes


def test_attention_is_one_call_and_masked_attention_is_told_apart():
    trace = A.trace_vision("v1", 1024)
    flash = [v for (p, c), v in trace.counts.items() if c is CategoryId.ATTENTION]
    masked = [v for (p, c), v in trace.counts.items() if c is CategoryId.ATTENTION_MASKED]
    # SAM's 12 blocks add a relative-position bias; CLIP's 24 layers take none. cuDNN runs each call as 2 kernels.
    assert sum(v.op_calls for v in masked) == 12 and sum(v.op_calls for v in flash) == 24
    assert sum(v.kernel_launches for v in masked + flash) == 2 * 36
    assert all(".sam_encoder" in p for (p, c) in trace.counts if c is CategoryId.ATTENTION_MASKED)
