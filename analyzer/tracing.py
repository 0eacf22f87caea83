"""Traces on the meta device: each stage of the model run under the op counter (analyzer/counting.py).

Stages are traced separately on the meta device (the full `forward` cannot run on meta):
the vision tower per view size, the projector per view size, the prefill over the whole prompt, and one decode
step at two neighbouring KV contexts. A decode step's cost is affine in its context, so the two steps give
the exact per-step slope, and the sum over all steps has a closed form. Traces are cached per process by shape.

A trace runs at batch 1 for a single item and at batch 2 for any larger batch: eager reshapes copy or alias
depending on whether the batch dimension is 1, so a batch-2 trace is what scales linearly to larger batches.

Each trace runs under one execution (analyzer/execution.py): hf-eager runs transformers' DynamicCache and
batches every page's views of a kind into one vision call; vllm traces a paged KV cache, encodes one page at a
time, and applies its fusion rules.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch

from analyzer.architecture import DTYPE, DTYPE_BYTES, build_model
from analyzer.counting import OpCounter, TraceResult
from analyzer.execution import DEFAULT_EXECUTION, Execution, execution_spec
from analyzer.frame import DECODE_PROBE_CONTEXT, MODEL_ROOT, ModelFacts, decode_vectors_of, module_stages
from analyzer.report import ModuleNode, matmul_weight_bytes_of


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


def decode_vectors(variant: str, traced_items: int = 1,
                   execution: Execution = DEFAULT_EXECUTION) -> tuple[dict, dict]:
    """Per (module, category): a step's counts at context 0 and their slope per context token."""
    return decode_vectors_of(trace_decode_step(variant, DECODE_PROBE_CONTEXT, traced_items, execution),
                             trace_decode_step(variant, DECODE_PROBE_CONTEXT + 1, traced_items, execution))


def decode_step_counts(variant: str, context: int, traced_items: int = 1,
                       execution: Execution = DEFAULT_EXECUTION) -> dict:
    """One decode step's counts at `context` cached tokens, from the affine model."""
    base, slope = decode_vectors(variant, traced_items, execution)
    return {key: base[key].affine(slope[key], context) for key in base}


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


@functools.cache
def model_facts(variant: str) -> ModelFacts:
    """The parameters and module tree of `variant` as built on the meta device, and the versions that built it."""
    import transformers

    model = build_model(variant)
    modules = tuple(_module_tree(model))
    return ModelFacts(parameters=sum(p.numel() for p in model.parameters()), modules=modules,
                      matmul_weight_bytes=matmul_weight_bytes_of(modules),
                      transformers_version=transformers.__version__,
                      torch_version=torch.__version__.split("+")[0])


class TracingSource:
    """Traces on demand (each cached per process by its shape): the source of a traced report and of a frame."""

    def __init__(self, variant: str, execution: Execution) -> None:
        self.variant, self.execution = variant, execution

    def facts(self) -> ModelFacts:
        return model_facts(self.variant)

    def vision(self, view_px: int, traced_items: int) -> TraceResult:
        return trace_vision(self.variant, view_px, traced_items)

    def projector(self, feature_tokens: int, traced_items: int) -> TraceResult:
        return trace_projector(self.variant, feature_tokens, traced_items)

    def prefill(self, prompt_tokens: int, image_tokens: int, traced_items: int) -> TraceResult:
        return trace_prefill(self.variant, prompt_tokens, image_tokens, traced_items, self.execution)

    def decode_step(self, context: int, traced_items: int) -> TraceResult:
        return trace_decode_step(self.variant, context, traced_items, self.execution)

    def decode_vectors(self, traced_items: int) -> tuple[dict, dict]:
        return decode_vectors(self.variant, traced_items, self.execution)
