"""Architecture + workload -> counts -> `AnalyticModelReport`.

Stages are traced separately on the meta device (the full `forward` cannot run on meta):
the vision tower per view size, the projector per view size, the prefill over the whole prompt, and one decode
step at two neighbouring KV contexts. A decode step's cost is affine in its context, so the two steps give
the exact per-step slope, and the sum over all steps has a closed form. Traces are cached per process by shape.

A trace runs at batch 1 for a single item and at batch 2 for any larger batch: eager reshapes copy or alias
depending on whether the batch dimension is 1, so a batch-2 trace is what scales linearly to larger batches.

Each report is traced under one execution (analyzer/execution.py): hf-eager runs transformers' DynamicCache and
batches every page's views of a kind into one vision call; vllm traces a paged KV cache, encodes one page at a
time, and applies its fusion rules.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import attrs

import torch

from analyzer import __version__
from analyzer.architecture import (DTYPE, DTYPE_BYTES, DTYPE_NAME, EXPERTS_COUNTING_IMPLEMENTATION,
                                   ArchitectureSpec, build_model, load_spec)
from analyzer.categories import CategoryId
from analyzer.execution import DEFAULT_EXECUTION, Execution, execution_spec, parse_execution
from analyzer.counting import CountVector, OpCounter, TraceResult
from analyzer.routing import expected_distinct_experts
from analyzer.report import (OPERATOR_COUNT_FIELDS, SCHEMA_VERSION, AnalyticModelReport, ModuleMetricsSnapshot,
                             ModuleNode, OperatorMetrics, RoutingAssumption, Stage, StageSummary, ViewKind,
                             matmul_weight_bytes_of, operator_categories, with_report_id)
from analyzer.workload import Workload, workload_record

DECODE_PROBE_CONTEXT = 256  # any context works: the step cost is affine in it (tests hold a third point)

VISION_TOWER = "model.vision_tower"
PROJECTOR = "model.multi_modal_projector"
LANGUAGE_MODEL = "model.language_model"
LM_HEAD = "lm_head"
MODEL_ROOT = "model"
ROOT = ""


# -- traces (batch 1) --------------------------------------------------------------------------------------------

def _counter(variant: str, execution: Execution = DEFAULT_EXECUTION) -> OpCounter:
    spec = execution_spec(execution)
    return OpCounter(build_model(variant), fusion_rules=spec.fusion_rules, kernels_per_op=dict(spec.kernels_per_op))


@functools.lru_cache(maxsize=64)
def trace_vision(variant: str, view_px: int, traced_items: int = 1) -> TraceResult:
    model = build_model(variant)
    pixels = torch.empty(traced_items, 3, view_px, view_px, device="meta", dtype=DTYPE)
    with torch.no_grad(), _counter(variant) as counter:
        model.model.vision_tower(pixels)
    return counter.result()


@functools.lru_cache(maxsize=64)
def trace_projector(variant: str, feature_tokens: int, traced_items: int = 1) -> TraceResult:
    model = build_model(variant)
    width = model.model.multi_modal_projector.in_features
    features = torch.empty(traced_items, feature_tokens, width, device="meta", dtype=DTYPE)
    with torch.no_grad(), _counter(variant) as counter:
        model.model.multi_modal_projector(features)
    return counter.result()


def _empty_cache(model, context: int, batch: int = 1, execution: Execution = DEFAULT_EXECUTION,
                 new_tokens: int = 1):
    """The KV cache of `execution` holding `context` tokens per layer (filled outside any counting): transformers'
    DynamicCache (each step concatenates the whole cache; hf-eager), or a paged cache (each step writes
    `new_tokens` slots in place; vllm)."""
    from transformers import DynamicCache

    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    if execution_spec(execution).paged_kv_cache:
        return _paged_cache_class()(config=text, batch=batch, heads=text.num_key_value_heads, head_dim=head_dim,
                            context=context, capacity=context + new_tokens)
    cache = DynamicCache(config=text)
    if context:
        for layer in range(text.num_hidden_layers):
            keys = torch.empty(batch, text.num_key_value_heads, context, head_dim, device="meta", dtype=DTYPE)
            cache.update(keys, keys.clone(), layer)
    return cache


@functools.cache
def _paged_cache_class():
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PagedKVLayer(DynamicLayer):
        """One layer of a paged KV cache as the counter sees it: slots for `capacity` tokens exist up front;
        `update` writes the new tokens' K/V into their slots (one copy each) and hands attention the filled
        slots, which it reads once. Nothing is concatenated."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
            super().__init__()
            self.keys_slots, self.values_slots, self.filled = keys, values, filled
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]

        def update(self, key_states, value_states, *args, **kwargs):
            tokens = key_states.shape[-2]
            self.keys_slots.narrow(2, self.filled, tokens).copy_(key_states)
            self.values_slots.narrow(2, self.filled, tokens).copy_(value_states)
            self.filled += tokens
            self.keys = self.keys_slots.narrow(2, 0, self.filled)
            self.values = self.values_slots.narrow(2, 0, self.filled)
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.filled

    class PagedKVCache(DynamicCache):
        def __init__(self, config, batch: int, heads: int, head_dim: int, context: int, capacity: int) -> None:
            super().__init__(config=config)
            self.slot_tensors = []
            layers = []
            for _ in range(config.num_hidden_layers):
                keys = torch.empty(batch, heads, capacity, head_dim, device="meta", dtype=DTYPE)
                values = torch.empty_like(keys)
                self.slot_tensors += [keys, values]
                layers.append(PagedKVLayer(keys, values, context))
            self.layers = layers

    return PagedKVCache


def _watch_kv_writes(cache, counter: OpCounter) -> None:
    """What each layer's `update` writes is KV cache (the grown cache DynamicCache concatenates, the slots a paged
    cache fills); the counter records those bytes as KV-cache bytes written."""
    for layer in cache.layers:
        update = layer.update

        def watched(*args, _update=update, **kwargs):
            with counter.writing_kv_cache():
                return _update(*args, **kwargs)

        layer.update = watched


def _kv_tensors(cache) -> list[torch.Tensor]:
    """The tensors that hold the cache's KV (not activations)."""
    slots = getattr(cache, "slot_tensors", None)
    if slots is not None:
        return list(slots)
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


@functools.lru_cache(maxsize=256)
def trace_prefill(variant: str, prompt_tokens: int, image_tokens: int, traced_items: int = 1,
                  execution: Execution = DEFAULT_EXECUTION) -> TraceResult:
    """Embed the prompt, scatter the image features into it, run the decoder, and pick the first token."""
    model = build_model(variant)
    text = model.config.text_config
    input_ids = torch.empty(traced_items, prompt_tokens, device="meta", dtype=torch.long)
    features = torch.empty(traced_items * image_tokens, text.hidden_size, device="meta", dtype=DTYPE)
    mask = torch.empty(traced_items, prompt_tokens, 1, device="meta", dtype=torch.bool)
    cache = _empty_cache(model, 0, traced_items, execution, new_tokens=prompt_tokens)
    with torch.no_grad(), _counter(variant, execution) as counter:
        counter.mark_kv_cache(_kv_tensors(cache))
        _watch_kv_writes(cache, counter)
        with counter.attribute_to(MODEL_ROOT):
            embeds = model.model.language_model.embed_tokens(input_ids)
            embeds = embeds.masked_scatter(mask.expand_as(embeds), features)
            hidden = model.model.language_model(inputs_embeds=embeds, past_key_values=cache,
                                                use_cache=True).last_hidden_state
        logits = model.lm_head(hidden[:, -1:, :] if execution_spec(execution).logits_last_position_only else hidden)
        torch.argmax(logits, dim=-1)
    return counter.result()


@functools.lru_cache(maxsize=256)
def trace_decode_step(variant: str, context: int, traced_items: int = 1,
                      execution: Execution = DEFAULT_EXECUTION) -> TraceResult:
    """One greedy decode step: embed the last token, run the decoder over the cache, pick the next token."""
    model = build_model(variant)
    input_ids = torch.empty(traced_items, 1, device="meta", dtype=torch.long)
    cache = _empty_cache(model, context, traced_items, execution)
    with torch.no_grad(), _counter(variant, execution) as counter:
        counter.mark_kv_cache(_kv_tensors(cache))
        _watch_kv_writes(cache, counter)
        with counter.attribute_to(MODEL_ROOT):
            embeds = model.model.language_model.embed_tokens(input_ids)
            hidden = model.model.language_model(inputs_embeds=embeds, past_key_values=cache,
                                                use_cache=True).last_hidden_state
        logits = model.lm_head(hidden)
        torch.argmax(logits, dim=-1)
    return counter.result()


# -- assembly ----------------------------------------------------------------------------------------------------

_COUNT_FIELDS = tuple(f.name for f in attrs.fields(CountVector))


class _StageCounts:
    """Counts of one stage over the whole workload, per (module, category), already scaled."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[str, CategoryId], dict[str, int]] = {}
        self.module_calls: dict[str, int] = {}


def traced_items_for(items: int) -> int:
    return 1 if items == 1 else 2


def _scale(vec: CountVector, items: int, distinct_experts: float, traced_items: int = 1) -> dict[str, int]:
    """Price a call at `items` batch items from a trace of `traced_items` items."""
    expert_bytes = round(distinct_experts * vec.expert_weight_bytes_per_expert)
    return {
        "op_calls": vec.op_calls,
        "kernel_launches": vec.kernel_launches,
        "flops": vec.fixed_flops + items * vec.scaled_flops // traced_items,
        "bytes_read": vec.fixed_bytes_read + items * vec.scaled_bytes_read // traced_items + expert_bytes,
        "bytes_written": vec.fixed_bytes_written + items * vec.scaled_bytes_written // traced_items,
        "weight_bytes_read": vec.weight_bytes_read + expert_bytes,
        "kv_cache_bytes_read": items * vec.kv_bytes_read // traced_items,
        "kv_cache_bytes_written": items * vec.kv_bytes_written // traced_items,
    }


def _stage_from_trace(trace: TraceResult, items: int, distinct_experts: float, traced_items: int,
                      calls: int = 1) -> _StageCounts:
    """`calls` calls of a stage at `items` items each."""
    stage = _StageCounts()
    for key, vec in trace.counts.items():
        stage.metrics[key] = {k: value * calls for k, value in _scale(vec, items, distinct_experts,
                                                                        traced_items).items()}
    stage.module_calls = {path: n * calls for path, n in trace.module_calls.items()}
    return stage


def decode_vectors(variant: str, traced_items: int = 1,
                   execution: Execution = DEFAULT_EXECUTION) -> tuple[dict, dict]:
    """Per (module, category): a step's counts at context 0 and their slope per context token."""
    at_probe = trace_decode_step(variant, DECODE_PROBE_CONTEXT, traced_items, execution).counts
    at_next = trace_decode_step(variant, DECODE_PROBE_CONTEXT + 1, traced_items, execution).counts
    slope: dict = {}
    base: dict = {}
    for key in set(at_probe) | set(at_next):
        v1 = at_probe.get(key, CountVector())
        v2 = at_next.get(key, CountVector())
        slope[key] = v2.minus(v1)
        base[key] = v1.affine(slope[key], -DECODE_PROBE_CONTEXT)
    return base, slope


def decode_step_counts(variant: str, context: int, traced_items: int = 1,
                       execution: Execution = DEFAULT_EXECUTION) -> dict:
    """One decode step's counts at `context` cached tokens, from the affine model."""
    base, slope = decode_vectors(variant, traced_items, execution)
    return {key: base[key].affine(slope[key], context) for key in base}


def _decode_stage(variant: str, steps: int, context_start: int, items: int, distinct: float,
                  execution: Execution) -> _StageCounts:
    """Exact sum over `steps` steps with contexts context_start .. context_start + steps - 1."""
    traced = traced_items_for(items)
    base, slope = decode_vectors(variant, traced, execution)
    context_sum = steps * context_start + steps * (steps - 1) // 2
    stage = _StageCounts()
    for key in base:
        summed = CountVector(**{f: getattr(base[key], f) * steps + getattr(slope[key], f) * context_sum
                                for f in _COUNT_FIELDS})
        stage.metrics[key] = _scale(summed, items, 0.0, traced)
        # Expert weights: every step reads the distinct experts its batch touches.
        expert_bytes = round(distinct * base[key].expert_weight_bytes_per_expert) * steps
        stage.metrics[key]["bytes_read"] += expert_bytes
        stage.metrics[key]["weight_bytes_read"] += expert_bytes
    trace = trace_decode_step(variant, DECODE_PROBE_CONTEXT, traced, execution)
    stage.module_calls = {path: calls * steps for path, calls in trace.module_calls.items()}
    return stage


def _decode_step_affine(variant: str, items: int, distinct: float,
                        execution: Execution) -> tuple[int, int, int, int]:
    """(FLOPs at context 0, FLOPs per context token, bytes at 0, bytes per token) of one step at `items`."""
    traced = traced_items_for(items)
    base, slope = decode_vectors(variant, traced, execution)
    base_total, slope_total = CountVector(), CountVector()
    for key in base:
        base_total.add(base[key])
        slope_total.add(slope[key])
    base_scaled = _scale(base_total, items, distinct, traced)
    slope_scaled = _scale(slope_total, items, 0.0, traced)
    return (base_scaled["flops"], slope_scaled["flops"],
            base_scaled["bytes_read"] + base_scaled["bytes_written"],
            slope_scaled["bytes_read"] + slope_scaled["bytes_written"])


def module_stages(path: str) -> tuple[Stage, ...]:
    """The stages a module takes part in, from its place in the tree (the same for every workload)."""
    if path in (ROOT, MODEL_ROOT):
        return tuple(Stage)
    if path == VISION_TOWER or path.startswith(VISION_TOWER + "."):
        return (Stage.VISION,)
    if path == PROJECTOR or path.startswith(PROJECTOR + "."):
        return (Stage.PROJECTOR,)
    if path in (LANGUAGE_MODEL, LM_HEAD) or path.startswith(LANGUAGE_MODEL + "."):
        return (Stage.PREFILL, Stage.DECODE)
    return ()


def _module_tree(model: torch.nn.Module) -> list[ModuleNode]:
    nodes = []
    children: dict[str, list[str]] = defaultdict(list)
    named = list(model.named_modules())
    for path, _ in named:
        if path:
            children[path.rpartition(".")[0]].append(path)
    for path, module in named:
        own = sum(p.numel() for p in module.parameters(recurse=False))
        total = sum(p.numel() for p in module.parameters())
        nodes.append(ModuleNode(
            path=path, name=path.rpartition(".")[2] if path else type(module).__name__,
            class_name=type(module).__name__, parent_path=path.rpartition(".")[0] if path else None,
            children=tuple(children.get(path, ())), depth=path.count(".") + 1 if path else 0,
            parameters=total, parameters_self=own, weight_bytes=total * DTYPE_BYTES, stages=module_stages(path)))
    return nodes


def _ancestors(path: str) -> list[str]:
    """The path itself and every ancestor up to the root ""."""
    out = [path]
    while path:
        path = path.rpartition(".")[0]
        out.append(path)
    return out


def _snapshots(stage: Stage, view_kind: ViewKind, counts: _StageCounts) -> list[ModuleMetricsSnapshot]:
    inclusive: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    own_counts: dict[str, list[tuple[CategoryId, dict[str, int]]]] = defaultdict(list)
    for (path, category), m in counts.metrics.items():
        if not any(m.values()):
            continue
        own_counts[path].append((category, m))
        for ancestor in _ancestors(path):
            acc = inclusive[ancestor]
            acc[0] += m["flops"]
            acc[1] += m["bytes_read"] + m["bytes_written"]
            acc[2] += m["kernel_launches"]
    own: dict[str, list[OperatorMetrics]] = {}
    for path, entries in own_counts.items():
        own_flops = sum(m["flops"] for _, m in entries)
        own[path] = [OperatorMetrics.from_counts(category, own_flops, **m) for category, m in entries]
    paths = set(inclusive) | set(counts.module_calls)
    out = []
    for path in sorted(paths):
        flops, nbytes, launches = inclusive.get(path, (0, 0, 0))
        ops = sorted(own.get(path, []), key=lambda o: list(CategoryId).index(o.category_id))
        out.append(ModuleMetricsSnapshot(
            module_path=path, stage=stage, view_kind=view_kind, forward_calls=counts.module_calls.get(path, 0),
            operators=tuple(ops), inclusive_flops=flops, inclusive_bytes=nbytes,
            inclusive_kernel_launches=launches))
    return out


def _totals(counts: _StageCounts) -> dict[str, int]:
    totals = dict.fromkeys(OPERATOR_COUNT_FIELDS, 0)
    for m in counts.metrics.values():
        for k in OPERATOR_COUNT_FIELDS:
            totals[k] += m[k]
    return totals


def analyze(workload: Workload, execution: Execution | str = DEFAULT_EXECUTION) -> AnalyticModelReport:
    """The analytic model of `workload` as `execution` runs it: same inputs, same report."""
    import transformers

    execution = parse_execution(execution.value if isinstance(execution, Execution) else execution)
    spec: ArchitectureSpec = load_spec(workload.variant)
    model = build_model(workload.variant)
    layout = workload.layout
    batch = workload.batch
    experts, top_k = spec.num_experts, spec.experts_per_token

    stage_entries: list[tuple[StageSummary, _StageCounts]] = []

    def add(stage: Stage, view_kind: ViewKind, counts: _StageCounts, **fields) -> None:
        totals = _totals(counts)
        defaults = dict(view_px=0, calls=1, context_start=0, context_end=0, activation_peak_bytes=0,
                        kv_cache_bytes=0, distinct_experts_per_call=0.0, step_flops_base=0,
                        step_flops_per_context_token=0, step_bytes_base=0, step_bytes_per_context_token=0)
        defaults.update(fields)
        stage_entries.append((StageSummary(stage=stage, view_kind=view_kind, **totals, **defaults), counts))

    # (view kind, px, views per page, feature tokens per view). hf-eager encodes every page's views of a kind in
    # one batched call; vllm (vision_image_at_a_time) one page at a time (its global view, then its tiles as one
    # batch).
    views = [(ViewKind.GLOBAL, layout.global_view_px, 1, layout.global_feature_tokens)]
    if layout.tiles:
        views.append((ViewKind.TILE, layout.tile_px, layout.tiles, layout.tile_feature_tokens))

    def vision_calls(per_page: int) -> tuple[int, int]:
        """(calls, items per call) of one view kind's encoder stage."""
        return (batch, per_page) if execution_spec(execution).vision_image_at_a_time else (1, batch * per_page)

    encoder_stages = ((Stage.VISION, lambda px, tokens, traced: trace_vision(workload.variant, px, traced)),
                      (Stage.PROJECTOR, lambda px, tokens, traced: trace_projector(workload.variant, tokens, traced)))
    for stage, trace in encoder_stages:  # every view of the vision tower, then every view of the projector
        for view_kind, px, per_page, feature_tokens in views:
            calls, items = vision_calls(per_page)
            traced = traced_items_for(items)
            result = trace(px, feature_tokens, traced)
            add(stage, view_kind, _stage_from_trace(result, items, 0.0, traced, calls), view_px=px, calls=calls,
                items=items, tokens_per_item=feature_tokens,
                activation_peak_bytes=result.activation_peak_bytes * items // traced)

    prefill_tokens = workload.prefill_tokens
    traced = traced_items_for(batch)
    prefill = trace_prefill(workload.variant, prefill_tokens, layout.image_placeholder_tokens, traced, execution)
    prefill_distinct = expected_distinct_experts(batch * prefill_tokens, experts, top_k)
    add(Stage.PREFILL, ViewKind.NONE, _stage_from_trace(prefill, batch, prefill_distinct, traced), items=batch,
        tokens_per_item=prefill_tokens, context_start=0, context_end=prefill_tokens,
        activation_peak_bytes=prefill.activation_peak_bytes * batch // traced,
        kv_cache_bytes=spec.kv_cache_bytes_per_token * prefill_tokens * batch,
        distinct_experts_per_call=prefill_distinct)

    steps = workload.decode_steps
    if steps:
        decode_distinct = expected_distinct_experts(batch, experts, top_k)
        context_end = prefill_tokens + steps - 1
        probe = trace_decode_step(workload.variant, DECODE_PROBE_CONTEXT, traced, execution).activation_peak_bytes
        probe_next = trace_decode_step(workload.variant, DECODE_PROBE_CONTEXT + 1, traced,
                                       execution).activation_peak_bytes
        peak_at_end = probe + (probe_next - probe) * (context_end - DECODE_PROBE_CONTEXT)
        flops_base, flops_slope, bytes_base, bytes_slope = _decode_step_affine(workload.variant, batch,
                                                                               decode_distinct, execution)
        add(Stage.DECODE, ViewKind.NONE,
            _decode_stage(workload.variant, steps, prefill_tokens, batch, decode_distinct, execution),
            calls=steps, items=batch, tokens_per_item=1, context_start=prefill_tokens, context_end=context_end,
            activation_peak_bytes=max(peak_at_end, 0) * batch // traced,
            kv_cache_bytes=spec.kv_cache_bytes_per_token * (context_end + 1) * batch,
            distinct_experts_per_call=decode_distinct, step_flops_base=flops_base,
            step_flops_per_context_token=flops_slope, step_bytes_base=bytes_base,
            step_bytes_per_context_token=bytes_slope)

    snapshots: list[ModuleMetricsSnapshot] = []
    for summary, counts in stage_entries:
        snapshots.extend(_snapshots(summary.stage, summary.view_kind, counts))

    parameters = sum(p.numel() for p in model.parameters())
    modules = tuple(_module_tree(model))
    text = spec.text
    report = AnalyticModelReport(
        schema_version=SCHEMA_VERSION, report_id="", model_id=spec.model_id, variant=spec.variant,
        transformers_model=spec.transformers_model, analyzer_version=__version__,
        transformers_version=transformers.__version__, torch_version=torch.__version__.split("+")[0],
        dtype=DTYPE_NAME, parameters=parameters, checkpoint_parameters=spec.checkpoint_parameters,
        parameters_note=_parameters_note(spec, parameters), weight_bytes=parameters * DTYPE_BYTES,
        kv_cache_bytes_per_token=spec.kv_cache_bytes_per_token, matmul_weight_bytes=matmul_weight_bytes_of(modules),
        execution=execution,
        routing=RoutingAssumption(experts=experts, experts_per_token=top_k,
                                  shared_experts=text["n_shared_experts"], assumption="uniform",
                                  counting_implementation=EXPERTS_COUNTING_IMPLEMENTATION),
        workload=workload_record(workload),
        stages=tuple(summary for summary, _ in stage_entries),
        categories=operator_categories(),
        modules=modules,
        module_metrics=tuple(snapshots),
        notes=REPORT_NOTES + execution_spec(execution).report_notes,
    )
    return with_report_id(report)


def _parameters_note(spec: ArchitectureSpec, parameters: int) -> str:
    if spec.checkpoint_parameters == parameters:
        return "parameters = the instantiated module tree = the released checkpoint"
    return (f"parameters = the instantiated module tree; the released checkpoint holds "
            f"{spec.checkpoint_parameters:,} ({spec.checkpoint_parameters - parameters:,} more: the CLIP "
            f"patch-embedding conv, which the model never runs)")


REPORT_NOTES = (
    "FLOPs: 2 per multiply-accumulate, from torch's flop formulas (matmul, conv, attention, grouped GEMMs); "
    "elementwise, norm and softmax ops carry bytes and launches but no FLOPs.",
    "Bytes: per kernel, tensors read plus written; weights read once per call.",
    "Attention: one scaled_dot_product_attention call each; causal calls at causal cost (the prefill), calls with "
    "an explicit mask or bias at full cost and as attention_masked (SAM relative positions, the OCR-2 encoder).",
    "MoE: FLOPs of the top-k experts per token plus shared experts and router; expert weight bytes of the expected "
    "distinct experts per call, E(1-(1-k/E)^T) under uniform routing.",
    "Host calls (op_calls): every aten call as the dispatcher reaches it, views and allocations included.",
    "Decode: the first new token comes from the prefill; each further token is one step whose KV context grows "
    "by one; stage totals are the exact sum over steps.",
    "Activation peak: live activation bytes at the peak of one call (weights and KV cache excluded).",
)

# The notes of each execution live in its entry (analyzer/execution.py).
EXECUTION_NOTES = {execution: execution_spec(execution).report_notes for execution in Execution}
