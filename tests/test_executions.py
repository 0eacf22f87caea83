"""What each runtime executes, traced: hf-eager (transformers on CUDA) and vllm (paged KV, one image at a time,
fused kernels), against hand computations and the H200 profiles in tests/data."""

import json
import pathlib

import pytest
import torch

from analyzer import analysis as A
from analyzer.architecture import build_model, load_spec
from analyzer.categories import CategoryId
from analyzer.counting import OpCounter
from analyzer.execution import FUSION_RULES, Execution
from analyzer.report import Stage, ViewKind
from analyzer.workload import Workload

DATA = pathlib.Path(__file__).parent / "data"
HF, VLLM = Execution.HF_EAGER, Execution.VLLM


def _bytes(vec):
    return vec.fixed_bytes_read + vec.fixed_bytes_written + vec.scaled_bytes_read + vec.scaled_bytes_written


def _profile(variant, kind):
    rows = json.loads((DATA / f"h200-profile-{variant}.json").read_text())["rows"]
    return next(r for r in rows if r["kind"] == kind)


@pytest.mark.parametrize("variant", ["v1", "ocr2"])
def test_vllm_decode_reads_the_kv_once_and_writes_only_the_new_token(variant):
    kv_per_token = load_spec(variant).kv_cache_bytes_per_token
    layers = load_spec(variant).text["num_hidden_layers"]
    base, slope = A.decode_vectors(variant, 1, VLLM)
    # a step's bytes grow by exactly one token's K and V per cached token: read once by attention, never copied
    assert sum(_bytes(v) for v in slope.values()) == kv_per_token
    assert all(c is CategoryId.ATTENTION for (p, c), v in slope.items() if _bytes(v))
    # the new token's K and V: read from the projections and written into their slots, one kernel per layer
    cache_writes = [v for (p, c), v in base.items() if c is CategoryId.DATA_MOVEMENT and p.endswith(".self_attn")]
    assert len(cache_writes) == layers
    assert sum(_bytes(v) for v in cache_writes) == 2 * kv_per_token
    assert sum(v.kernel_launches for v in cache_writes) == layers
    # under hf-eager the DynamicCache concatenates: the old cache is read and written again every step
    hf_slope = sum(_bytes(v) for v in A.decode_vectors(variant, 1, HF)[1].values())
    assert hf_slope >= 3 * kv_per_token


def test_vllm_decode_weight_bytes_are_the_weights_touched():
    model = build_model("v1")
    lm = model.model.language_model
    dense = sum(p.numel() * 2 for n, p in lm.named_parameters() if ".experts." not in n and "embed_tokens" not in n)
    lm_head = sum(p.numel() * 2 for p in model.lm_head.parameters())
    per_expert_all_layers = sum(p.numel() * 2 for n, p in lm.named_parameters() if ".experts." in n) // 64
    base, _ = A.decode_vectors("v1", 1, VLLM)
    assert sum(v.weight_bytes_read for v in base.values()) == dense + lm_head  # the embedding reads one row
    assert sum(v.expert_weight_bytes_per_expert for v in base.values()) == per_expert_all_layers
    report = A.analyze(Workload(variant="v1", mode="base", page_width_px=1024, page_height_px=1024,
                                new_tokens=3, batch=1), VLLM)
    decode = next(s for s in report.stages if s.stage is Stage.DECODE)
    # two steps, each reading the dense weights and the 6 experts one token touches
    assert decode.weight_bytes_read == 2 * (dense + lm_head + 6 * per_expert_all_layers)


@pytest.mark.parametrize("variant", ["v1", "ocr2"])
def test_hf_eager_decode_launches_match_the_h200_profile(variant):
    profile = _profile(variant, "profile_decode")
    measured = profile["kernels"] + profile["copies"]  # copies and memsets are launches too
    ours = sum(v.kernel_launches for v in A.decode_step_counts(variant, profile["context"], 1, HF).values())
    assert abs(ours - measured) <= 0.05 * measured
    if variant == "v1":
        assert abs(ours - 879) <= 0.05 * 879
    # the host issues more aten calls than kernels: views and allocations are calls without kernels
    calls = sum(v.op_calls for v in A.decode_step_counts(variant, profile["context"], 1, HF).values())
    assert calls > 1.5 * ours


@pytest.mark.parametrize("op,ours", [("cumsum", "cumsum"), ("_grouped_mm", "_grouped_mm"),
                                     ("_cudnn_attention_forward", "scaled_dot_product_attention")])
def test_cuda_kernels_per_op_are_the_profiled_ones(op, ours):
    from analyzer.execution import KERNELS_PER_OP

    own = _profile("v1", "profile_decode")["by_aten_op"][op]
    assert (own["kernels"] + own["copies"]) / own["calls"] == KERNELS_PER_OP[HF][ours]


def test_a_view_is_a_host_call_without_a_kernel():
    linear = torch.nn.Linear(8, 4, device="meta")
    x = torch.empty(2, 3, 8, device="meta")
    with torch.no_grad(), OpCounter(linear) as counter:
        linear(x)
    counts = counter.result().counts
    assert sum(v.kernel_launches for v in counts.values()) == 1  # addmm
    assert sum(v.op_calls for v in counts.values()) == 4  # view, t, addmm, view
    assert sum(_bytes(v) for (p, c), v in counts.items() if c is CategoryId.DATA_MOVEMENT) == 0


def test_vllm_runs_the_vision_tower_one_image_at_a_time():
    workload = Workload(variant="v1", mode="gundam", page_width_px=1654, page_height_px=2339, new_tokens=2, batch=4)
    hf, vllm = A.analyze(workload, HF), A.analyze(workload, VLLM)
    tiles = hf.workload.tiles_wide * hf.workload.tiles_high

    def vision(report, view):
        return next(s for s in report.stages if s.stage is Stage.VISION and s.view_kind is view)

    assert (vision(hf, ViewKind.GLOBAL).calls, vision(hf, ViewKind.GLOBAL).items) == (1, 4)
    assert (vision(vllm, ViewKind.GLOBAL).calls, vision(vllm, ViewKind.GLOBAL).items) == (4, 1)
    assert (vision(hf, ViewKind.TILE).calls, vision(hf, ViewKind.TILE).items) == (1, 4 * tiles)
    assert (vision(vllm, ViewKind.TILE).calls, vision(vllm, ViewKind.TILE).items) == (4, tiles)
    for view in (ViewKind.GLOBAL, ViewKind.TILE):
        assert vision(vllm, view).flops == vision(hf, view).flops  # the same work, in smaller calls
        assert vision(vllm, view).kernel_launches == 4 * vision(hf, view).kernel_launches
        # one image's views are live at a time, not the batch's
        assert vision(vllm, view).activation_peak_bytes * 4 == pytest.approx(
            vision(hf, view).activation_peak_bytes, rel=0.02)


def test_vllm_fusion_rules_launch_one_kernel_per_fused_region():
    base, _ = A.decode_vectors("v1", 1, VLLM)
    hf_base, _ = A.decode_vectors("v1", 1, HF)

    def launches(suffix, category=None):
        return [v.kernel_launches for (p, c), v in base.items()
                if p.endswith(suffix) and (category is None or c is category)]

    assert launches("norm", CategoryId.NORM) == [1] * 25  # 2 per layer + the final norm
    assert launches(".mlp.experts") == [5] * 11  # fused MoE
    assert sorted(launches(".mlp.gate")) == [2] * 11  # gate GEMM + top-k softmax
    # SiLU-and-mul: the dense MLP of layer 0 and the 11 shared experts
    assert launches(".shared_experts", CategoryId.ELEMENTWISE) == [1] * 11
    assert base[("model.language_model.layers.0.mlp", CategoryId.ELEMENTWISE)].kernel_launches == 1
    assert not any(v.kernel_launches for (p, c), v in base.items() if p.endswith("rotary_emb"))
    # fusion keeps the arithmetic: the GEMMs and attention do the same FLOPs
    for category in (CategoryId.MATMUL, CategoryId.ATTENTION):
        def flops(counts):
            return sum(v.fixed_flops + v.scaled_flops for (p, c), v in counts.items()
                       if c is category and ".mlp.gate" not in p)
        assert flops(base) == flops(hf_base)
    # and moves fewer bytes in fewer launches
    assert sum(_bytes(v) for v in base.values()) < sum(_bytes(v) for v in hf_base.values())
    assert sum(v.kernel_launches for v in base.values()) < 0.4 * sum(v.kernel_launches for v in hf_base.values())


def test_every_fusion_rule_matches_modules_of_both_variants():
    classes = {type(m).__name__ for v in ("v1", "ocr2") for m in build_model(v).modules()}
    for rule in FUSION_RULES[VLLM]:
        assert any(c.endswith(rule.module_suffix) for c in classes), rule.name
