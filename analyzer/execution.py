"""What a runtime really executes: the execution a report is traced under.

- `hf-eager`: transformers' modules in eager PyTorch on CUDA, as `generate` runs them: a `DynamicCache` that
  concatenates the whole KV cache every decode step, the experts on transformers' CUDA path (`grouped_mm`: sort,
  histc, cumsum and index ops per layer), vision views batched together, every kernel dispatched by the host.
- `vllm`: vLLM-style serving: a paged KV cache (each step writes the new token's K/V; attention reads the
  context's K/V once), the vision tower run one image at a time (its global view, then its tiles as one batch) as
  DeepSeek's vLLM model runs it, logits for the last position only, fused kernels where vLLM fuses them (the
  rules below), and decode replayed from a CUDA graph (no per-kernel host dispatch).
"""

from __future__ import annotations

import enum

import attrs

from analyzer.categories import CategoryId
from analyzer.errors import AnalyzerInputError


class Execution(str, enum.Enum):
    HF_EAGER = "hf-eager"
    VLLM = "vllm"


DEFAULT_EXECUTION = Execution.HF_EAGER


def parse_execution(name: str) -> Execution:
    try:
        return Execution(str(name).strip().lower())
    except ValueError:
        raise AnalyzerInputError(f"unknown execution {name!r}; expected one of: "
                                 f"{', '.join(e.value for e in Execution)}") from None


@attrs.frozen(kw_only=True)
class FusionRule:
    """One fused kernel of an execution: the ops a module call issues (all of them, or those of some categories
    or aten ops) run as `launches` kernels whose bytes are the region's inputs and outputs (what it reads from
    outside and what outlives it or is read outside it); FLOPs are kept. `elided`: the region does no work per
    call (its result is cached at load)."""

    name: str
    module_suffix: str  # class-name suffix of the module whose calls form the region
    categories: frozenset[CategoryId] | None = None  # None: every op inside the module
    aten_ops: frozenset[str] | None = None  # None: any op (of those categories)
    own_ops_only: bool = False  # only ops the module issues itself, not those of its submodules
    launches: int = 1
    category: CategoryId  # the category the fused kernel is charged to
    elided: bool = False
    description: str


_C = CategoryId

# The one table of fusion rules, per execution, first match wins. vLLM's decoder: fused RMSNorm, SiLU-and-mul,
# rotary, the paged-cache write, the router's top-k softmax and fused MoE (align, two grouped GEMMs, SiLU-and-mul,
# sum); the cos/sin table of the rotary embedding is built at load.
FUSION_RULES: dict[Execution, tuple[FusionRule, ...]] = {
    Execution.HF_EAGER: (),
    Execution.VLLM: (
        FusionRule(name="attention_metadata", module_suffix="TextModel", own_ops_only=True, launches=0,
                   categories=frozenset({_C.ELEMENTWISE, _C.DATA_MOVEMENT, _C.SOFTMAX_REDUCTION, _C.OTHER}),
                   category=_C.DATA_MOVEMENT, elided=True,
                   description="positions and the causal mask: paged attention takes sequence lengths and block "
                               "tables the scheduler prepares on the host (per-step host time)"),
        FusionRule(name="rotary_cos_sin_cache", module_suffix="TextRotaryEmbedding", launches=0,
                   category=_C.ELEMENTWISE, elided=True,
                   description="cos/sin of every position are cached at load; nothing runs per step"),
        FusionRule(name="rms_norm", module_suffix="TextRMSNorm", category=_C.NORM,
                   description="RMSNorm as one kernel (vLLM rms_norm)"),
        FusionRule(name="reshape_and_cache", module_suffix="TextAttention", aten_ops=frozenset({"copy_"}),
                   category=_C.DATA_MOVEMENT,
                   description="the new tokens' K and V written into the paged cache by one kernel"),
        FusionRule(name="rotary_embedding", module_suffix="TextAttention",
                   categories=frozenset({_C.ELEMENTWISE, _C.DATA_MOVEMENT}), category=_C.ELEMENTWISE,
                   description="rotary position embedding of q and k in one kernel"),
        FusionRule(name="topk_softmax", module_suffix="TextTopkRouter", launches=2, category=_C.MOE_ROUTING,
                   description="router: the gate GEMM, then softmax and top-k fused"),
        FusionRule(name="fused_moe", module_suffix="TextExperts", launches=5, category=_C.MATMUL,
                   description="fused MoE: align tokens to experts, grouped GEMM, SiLU-and-mul, grouped GEMM, "
                               "weighted sum; reads the experts its tokens touch"),
        FusionRule(name="silu_and_mul", module_suffix="TextMLP", categories=frozenset({_C.ELEMENTWISE}),
                   category=_C.ELEMENTWISE, description="SiLU of the gate times up, one kernel"),
    ),
}

FUSION_RULE_NAMES = frozenset(rule.name for rules in FUSION_RULES.values() for rule in rules)


# Kernels one aten call launches on CUDA where it is not one (read off torch.profiler on an H200, per aten op:
# tests/data/h200-profile-v1.json). Eager PyTorch: cuDNN attention runs two kernels, a CUB scan two, a grouped GEMM
# two, sort copies its values and fills its indices before sorting, histc zero-fills its bins. vLLM's attention
# and fused kernels are one launch each (its fusion rules say how many).
KERNELS_PER_OP: dict[Execution, dict[str, int]] = {
    Execution.HF_EAGER: {"scaled_dot_product_attention": 2, "cumsum": 2, "_grouped_mm": 2, "grouped_mm": 2,
                         "sort": 3, "histc": 2},
    Execution.VLLM: {},
}
