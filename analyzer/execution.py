"""What a runtime really executes: the executions a report is traced under, one entry each.

- `hf-eager`: transformers' modules in eager PyTorch on CUDA, as `generate` runs them: a `DynamicCache` that
  concatenates the whole KV cache every decode step, the experts on transformers' CUDA path (`grouped_mm`: sort,
  histc, cumsum and index ops per layer), vision views batched together, every kernel dispatched by the host.
- `vllm`: vLLM-style serving: a paged KV cache (each step writes the new token's K/V; attention reads the
  context's K/V once), the vision tower run one image at a time (its global view, then its tiles as one batch) as
  DeepSeek's vLLM model runs it, logits for the last position only, fused kernels where vLLM fuses them (the
  rules below), and decode replayed from a CUDA graph (no per-kernel host dispatch).

An execution is one `ExecutionSpec` in `EXECUTION_SPECS`: its trace options, fusion rules, kernels per aten op,
whether its profiles replay decode from CUDA graphs, and its memory model. The tracer, the report schema's enum,
the CLI's choices, the runtime catalog, pricing and the serving simulation read the entry, never the name; an
unknown name is refused (`execution_spec`), never read as a default.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from analyzer.categories import CategoryId
from analyzer.errors import AnalyzerInputError


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


@attrs.frozen(kw_only=True)
class MemoryModel:
    """How a runtime's GPU memory is priced (the pricing views' memory columns):

    - `paged-kv` (vLLM): the budget is gpu_memory_utilization x the GPU's memory; the KV pool is the budget less the
      weights and the activation peak of a step at the full token budget (max_num_batched_tokens).
    - `live-set` (transformers eager): weights plus the largest stage's live set (activations and KV cache)."""

    name: str
    profile_keys: tuple[str, ...] = ()  # runtime-profile keys the model needs (and no other model accepts)
    description: str


MEMORY_MODELS: dict[str, MemoryModel] = {m.name: m for m in (
    MemoryModel(name="paged-kv", profile_keys=("gpu_memory_utilization", "max_num_batched_tokens"),
                description="budget = gpu_memory_utilization x memory; KV pool = budget - weights - step peak"),
    MemoryModel(name="live-set", description="weights + the largest stage's live set"),
)}


def _memory_model(instance, attribute, value):
    if value not in MEMORY_MODELS:
        raise ValueError(f"execution {instance.name}: unknown memory model {value!r}; known: "
                         f"{', '.join(MEMORY_MODELS)}")


@attrs.frozen(kw_only=True, eq=False)
class ExecutionSpec:
    """One runtime execution: what the tracer does under it, how its profiles are read, how memory is priced."""

    name: str
    summary: str  # what it runs, in a few words (the CLI's help)
    description: str  # what it runs, as the report schema says
    # trace options
    paged_kv_cache: bool  # True: a paged cache (new K/V written in place); False: transformers' DynamicCache
    vision_image_at_a_time: bool  # True: one page's views per vision call; False: every page's views together
    logits_last_position_only: bool = True  # the prefill's lm_head runs on the last position only
    fusion_rules: tuple[FusionRule, ...] = ()  # first match wins
    kernels_per_op: Mapping[str, int] = attrs.field(factory=dict)  # kernels of an aten call that is not one
    # pricing
    cuda_graph_decode: bool  # its runtime profiles replay decode from CUDA graphs unless they say otherwise
    memory_model: str = attrs.field(validator=_memory_model)
    shipped_runtime: str  # the shipped runtime profile that prices it (registry/data/runtimes.yaml)
    report_notes: tuple[str, ...]  # what a report traced under it says about it

    @property
    def memory(self) -> MemoryModel:
        return MEMORY_MODELS[self.memory_model]


_C = CategoryId

# vLLM's decoder: fused RMSNorm, SiLU-and-mul, rotary, the paged-cache write, the router's top-k softmax and fused
# MoE (align, two grouped GEMMs, SiLU-and-mul, sum); the cos/sin table of the rotary embedding is built at load.
_VLLM_FUSION_RULES = (
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
               category=_C.ELEMENTWISE, description="SiLU of the gate times up, one kernel"),)

# Kernels one aten call launches on CUDA where it is not one (read off torch.profiler on an H200, per aten op:
# tests/data/h200-profile-v1.json). Eager PyTorch: cuDNN attention runs two kernels, a CUB scan two, a grouped GEMM
# two, sort copies its values and fills its indices before sorting, histc zero-fills its bins. vLLM's attention
# and fused kernels are one launch each (its fusion rules say how many).
_EXECUTIONS = (
    ExecutionSpec(
        name="hf-eager", summary="transformers eager on CUDA",
        description="transformers eager on CUDA: DynamicCache, grouped_mm experts, host-dispatched kernels",
        paged_kv_cache=False, vision_image_at_a_time=False,
        kernels_per_op={"scaled_dot_product_attention": 2, "cumsum": 2, "_grouped_mm": 2, "grouped_mm": 2,
                        "sort": 3, "histc": 2},
        cuda_graph_decode=False, memory_model="live-set", shipped_runtime="hf-eager",
        report_notes=(
            "Execution hf-eager: transformers eager on CUDA; the DynamicCache concatenates the whole KV cache every "
            "decode step; experts on grouped_mm; every page's views of a kind in one vision call; bytes as the "
            "unfused kernels move them; kernel launches one per non-view aten op, or as many as CUDA runs it as "
            "(cuDNN attention 2, scan 2, grouped GEMM 2, sort 3, histc 2).",)),
    ExecutionSpec(
        name="vllm",
        summary="paged KV, one image at a time in the vision tower, fused kernels, CUDA-graph decode",
        description="paged KV, one image at a time in the vision tower, fused kernels, CUDA-graph decode",
        paged_kv_cache=True, vision_image_at_a_time=True, fusion_rules=_VLLM_FUSION_RULES,
        cuda_graph_decode=True, memory_model="paged-kv", shipped_runtime="vllm",
        report_notes=(
            "Execution vllm: paged KV cache (a step writes the new tokens' K/V, attention reads the context once); "
            "the vision tower one page at a time (global view, then its tiles); fused kernels per the fusion rules ("
            + ", ".join(rule.name for rule in _VLLM_FUSION_RULES)
            + "), each moving its region's inputs and outputs; decode is replayed from a CUDA graph (priced by the "
            "runtime profile).",)),
)
EXECUTION_SPECS: dict[str, ExecutionSpec] = {spec.name: spec for spec in _EXECUTIONS}

# The enum reports and their schema name executions by: one member per entry (HF_EAGER = "hf-eager", ...).
Execution = enum.Enum("Execution", [(name.upper().replace("-", "_"), name) for name in EXECUTION_SPECS],
                      type=str, module=__name__, qualname="Execution")
Execution.__doc__ = "The executions of EXECUTION_SPECS, by name."

DEFAULT_EXECUTION = Execution.HF_EAGER
# What reports and profiles written before executions existed ran: schema version 1-2 report files, and rows
# stored before revision 0006 (whose NULL execution the SQL reads as this name).
EXECUTION_BEFORE_EXECUTIONS = Execution.HF_EAGER


def execution_names() -> tuple[str, ...]:
    return tuple(EXECUTION_SPECS)


def parse_execution(name: str) -> Execution:
    try:
        return Execution(str(name).strip().lower())
    except ValueError:
        raise AnalyzerInputError(f"unknown execution {name!r}; expected one of: "
                                 f"{', '.join(e.value for e in Execution)}") from None


def execution_spec(execution: Execution | str) -> ExecutionSpec:
    """The entry of an execution (a member or its name); an unknown name (None included) is refused in one line,
    never read as a default."""
    if isinstance(execution, Execution):
        return EXECUTION_SPECS[execution.value]
    return EXECUTION_SPECS[parse_execution(execution).value]


def executions_with_memory_model(memory_model: str) -> tuple[str, ...]:
    """The executions whose memory is priced by `memory_model` ("paged-kv", "live-set"), in declaration order: what
    the pricing views' memory CASEs test `execution IN (...)` against."""
    if memory_model not in MEMORY_MODELS:
        raise ValueError(f"unknown memory model {memory_model!r}; known: {', '.join(MEMORY_MODELS)}")
    return tuple(spec.name for spec in _EXECUTIONS if spec.memory_model == memory_model)


# Per execution, first match wins (the entries' fusion rules and kernels per op, by member).
FUSION_RULES: dict[Execution, tuple[FusionRule, ...]] = {e: EXECUTION_SPECS[e.value].fusion_rules for e in Execution}
FUSION_RULE_NAMES = frozenset(rule.name for rules in FUSION_RULES.values() for rule in rules)
KERNELS_PER_OP: dict[Execution, dict[str, int]] = {e: dict(EXECUTION_SPECS[e.value].kernels_per_op)
                                                  for e in Execution}
