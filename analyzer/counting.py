"""Counting by dispatch: every aten op a module issues on the meta device, attributed to that module.

The counter follows `torch.utils.flop_counter`: a `TorchDispatchMode` sees each aten op with its shapes, the
flop formulas come from torch's own `flop_registry`, and global forward hooks keep the stack of modules being
run. On top of FLOPs it records per op: bytes read and written (as an unfused eager run moves them), one kernel
launch per non-view op (or as many as CUDA runs it as: `kernels_per_op`), one host call per aten call, views
included, and what each byte is: which inputs are weights, and which tensors read or written are KV cache (the
tensors a trace marks with `mark_kv_cache`, views of them, and what a cache's `update` writes while
`writing_kv_cache` is open); the rest are activations. An execution's fusion rules turn the ops of a module call into fused
kernels whose bytes are the region's inputs and outputs.

`scaled_dot_product_attention` is one fused kernel on a GPU. On the meta device torch decomposes it into
bmm + softmax; a `TorchFunctionMode` catches the call, counts it as one attention kernel (q, k, v and mask read,
output written) and lets the decomposition run uncounted. A causal call is counted at causal cost.

Each op's cost is split into a part fixed per call (ops whose inputs are all weights or constants, and the
weight bytes any op reads) and a part that scales with the number of items in the batch (everything that
touches activations), so one trace at batch 1 prices any batch. Expert weights a grouped GEMM reads (or the
`batched_mm` path gathers per token) are recorded per expert, so a stage can charge the distinct experts a batch
touches.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import defaultdict
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from analyzer.categories import TARGET_OPERATORS, CategoryId
from analyzer.counts import CountVector, TraceResult, attention_pairs  # noqa: F401 - the counter's results
from analyzer.execution import FusionRule

_aten = torch.ops.aten

# Ops that move no data and launch no kernel on a GPU (allocation only, or metadata).
_NO_KERNEL_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh",
                  "detach", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "_local_scalar_dense",
                  "set_", "resize_", "is_same_size", "_has_compatible_shallow_copy_type"}


# Grouped matrix products over the experts (transformers' grouped_mm path).
_GROUPED_MM_OPS = {"_grouped_mm", "grouped_mm"}

# Ops that return a view although their schema does not say so.
_VIEW_LIKE_OPS = {"_unsafe_view", "_reshape_alias", "alias", "lift_fresh"}


def _is_view_op(func) -> bool:
    if func._overloadpacket.__name__ in _VIEW_LIKE_OPS:
        return True
    schema = func._schema
    if not schema.returns:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def _is_inplace_or_out(func) -> bool:
    schema = func._schema
    return any(r.alias_info is not None and r.alias_info.is_write for r in schema.returns)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches for `t`: broadcast (stride-0) dims are read once."""
    elements = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            elements *= size
    return elements * t.element_size()


class _AttentionCatcher(TorchFunctionMode):
    def __init__(self, counter: "OpCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            # Counted as one fused kernel; on meta only the output's shape matters, so the math
            # decomposition is not run at all.
            self.counter._record_attention(args, kwargs)
            query, value = args[0], args[2]
            return torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)
        with torch._C.DisableTorchFunction():
            return func(*args, **kwargs)


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, counter: "OpCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.counter._record_op(func, args, kwargs, out)
        return out


class _TensorMap:
    """Tensor -> value by identity, holding no tensor alive: an entry of a tensor that died (whose id() another
    tensor may now have) is not found."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, Any]] = {}

    def put(self, t: torch.Tensor, value: Any) -> None:
        self._entries[id(t)] = (weakref.ref(t), value)

    def get(self, t: torch.Tensor) -> Any:
        entry = self._entries.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def holds(self, t: torch.Tensor) -> bool:
        entry = self._entries.get(id(t))
        return entry is not None and entry[0]() is t

    def alive(self):
        for ref, value in self._entries.values():
            t = ref()
            if t is not None:
                yield t, value


@attrs.define(eq=False)
class _Region:
    """An open fused region: one call of a module a fusion rule names."""

    rule: FusionRule
    path: str
    module: Any
    vec: CountVector = attrs.Factory(CountVector)
    inputs_seen: "_TensorMap" = attrs.Factory(lambda: _TensorMap())
    # base tensor -> (bytes written, all-static, into the KV cache)
    produced: "_TensorMap" = attrs.Factory(lambda: _TensorMap())
    outputs_counted: "_TensorMap" = attrs.Factory(lambda: _TensorMap())

    def write(self, nbytes: int, static: bool, kv: bool = False) -> None:
        if static:
            self.vec.fixed_bytes_written += nbytes
        else:
            self.vec.scaled_bytes_written += nbytes
            if kv:
                self.vec.kv_bytes_written += nbytes


@attrs.define
class _BlockRecord:
    counts: dict[tuple[str, CategoryId], CountVector]  # relative module path
    module_calls: dict[str, int]
    peak_above_start_bytes: int
    retained_bytes: int  # still live after the block, besides its output (e.g. KV written to a cache)
    outputs: Any  # (shape, stride, dtype) per output tensor, or None when the output cannot be rebuilt


def _structure_key(module: torch.nn.Module) -> tuple:
    """What decides a block's counts: classes, parameter shapes and plain attributes (not its index)."""
    parts = []
    for name, sub in module.named_modules():
        attributes = tuple(sorted((k, v) for k, v in vars(sub).items()
                                  if not k.startswith("_") and k != "layer_idx"
                                  and isinstance(v, (int, float, str, bool, tuple))))
        params = tuple((n, tuple(p.shape), p.dtype) for n, p in sub.named_parameters(recurse=False))
        parts.append((name, type(sub).__name__, attributes, params))
    return tuple(parts)


def _layer_index(module: torch.nn.Module) -> int | None:
    for sub in module.modules():
        index = getattr(sub, "layer_idx", None)
        if isinstance(index, int):
            return index
    return None


# (structure key, layer index) of each block met, by the block: a model is traced many times (every probe of every
# family), and its blocks' structure does not change between traces.
_BLOCK_IDENTITIES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _block_identity(module: torch.nn.Module) -> tuple:
    found = _BLOCK_IDENTITIES.get(module)
    if found is None:
        found = _BLOCK_IDENTITIES[module] = (_structure_key(module), _layer_index(module))
    return found


class OpCounter:
    """Context manager that counts the aten ops run inside it on `model`'s modules.

    `memoize_blocks`: run the first of each group of identical ModuleList layers and replay its counts for the
    others (the tests hold replayed and fully run traces equal).
    """

    def __init__(self, model: torch.nn.Module, root_path: str = "", memoize_blocks: bool = True,
                 fusion_rules: tuple[FusionRule, ...] = (), kernels_per_op: dict[str, int] | None = None) -> None:
        self.model = model
        self.fusion_rules = fusion_rules
        self.kernels_per_op = kernels_per_op or {}
        self._regions: list[_Region] = []  # open fused regions, innermost last
        self._alias: dict[int, tuple[Any, Any]] = {}  # id(view) -> (weakref to the view, weakref to its base)
        self._replaying = False
        self.memoize_blocks = memoize_blocks
        self._memo: dict[tuple, _BlockRecord] = {}
        self._patched: list[torch.nn.Module] = []
        self.module_paths = {module: path for path, module in model.named_modules()}
        self.module_class = {path: type(module).__name__ for module, path in self.module_paths.items()}
        self.static_ids: set[int] = set()  # id() of weight/constant tensors alive in the trace
        self.weight_ids: set[int] = set()  # the subset derived from parameters
        self.expert_gather: dict[int, int] = {}  # id(gathered weight) -> bytes of one expert's slice
        self._keepalive: list[torch.Tensor] = []
        for param in model.parameters():
            self.static_ids.add(id(param))
            self.weight_ids.add(id(param))
        for buf in model.buffers():
            self.static_ids.add(id(buf))
        self.stack: list[str] = [root_path]
        self.counts: dict[tuple[str, CategoryId], CountVector] = defaultdict(CountVector)
        self.module_calls: dict[str, int] = defaultdict(int)
        self.kv_ids: set[int] = set()  # KV-cache tensors: neither weights nor activations
        # Tensors whose bytes are KV cache (the role of a byte read or written): kv_ids, views of them, and what a
        # cache update writes. kv_ids alone decides the memory accounting, as before roles were counted.
        self.kv_role_ids: set[int] = set()
        self._kv_writing = 0  # > 0 while a KV cache's update runs: what it writes is KV cache
        self._live_bytes = 0
        self.peak_bytes = 0
        self._hooks: list[Any] = []

    # -- module stack -------------------------------------------------------------------------------------
    def _pre_hook(self, module, args):
        path = self.module_paths.get(module)
        if path is not None:
            self.stack.append(path)
            self.module_calls[path] += 1
            if self.fusion_rules:
                class_name = type(module).__name__
                # Pushed last-rule first: the innermost-first search then meets one module's rules in table order.
                for rule in reversed(self.fusion_rules):
                    if class_name.endswith(rule.module_suffix):
                        self._regions.append(_Region(rule=rule, path=path, module=module))

    def _post_hook(self, module, args, output):
        path = self.module_paths.get(module)
        while self._regions and self._regions[-1].module is module:
            self._close_region(self._regions.pop())
        if path is not None and self.stack and self.stack[-1] == path:
            self.stack.pop()

    def attribute_to(self, path: str):
        """Context manager: ops issued outside any module forward are charged to `path`."""
        counter = self

        class _Attr:
            def __enter__(self):
                counter.stack.append(path)
                counter.module_calls[path] += 1

            def __exit__(self, *exc):
                counter.stack.pop()

        return _Attr()

    def __enter__(self) -> "OpCounter":
        reg = torch.nn.modules.module
        self._hooks = [reg.register_module_forward_pre_hook(self._pre_hook),
                       reg.register_module_forward_hook(self._post_hook, always_call=True)]
        if self.memoize_blocks:
            self._patch_blocks()
        self._fn_mode = _AttentionCatcher(self)
        self._dispatch_mode = _DispatchCounter(self)
        self._fn_mode.__enter__()
        self._dispatch_mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._dispatch_mode.__exit__(*exc)
        self._fn_mode.__exit__(*exc)
        for hook in self._hooks:
            hook.remove()
        for module in self._patched:
            del module.forward
        self._patched.clear()
        self._keepalive.clear()

    def result(self) -> TraceResult:
        return TraceResult(counts=dict(self.counts), module_calls=dict(self.module_calls),
                           activation_peak_bytes=self.peak_bytes)

    # -- repeated blocks -----------------------------------------------------------------------------------
    # The N layers of a ModuleList that share structure and input shapes issue the same ops (meta execution
    # depends on shapes only). The first one runs; the others replay its counts under their own paths.
    def _patch_blocks(self) -> None:
        for module in self.model.modules():
            if not isinstance(module, torch.nn.ModuleList):
                continue
            for child in module.children():
                if "forward" in vars(child):
                    continue
                key, layer_index = _block_identity(child)
                child.forward = functools.partial(self._block_forward, child, child.forward, key, layer_index)
                self._patched.append(child)

    def _signature(self, args, kwargs, layer_index) -> tuple | None:
        leaves, _ = tree_flatten((args, kwargs))
        sig = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                sig.append(("T", tuple(leaf.shape), leaf.stride(), leaf.dtype, id(leaf) in self.static_ids,
                            id(leaf) in self.kv_ids))
            elif leaf is None or isinstance(leaf, (int, float, bool, str)):
                sig.append(leaf)
            elif hasattr(leaf, "get_seq_length") and layer_index is not None:
                sig.append(("cache", type(leaf).__name__, leaf.get_seq_length(layer_index)))
            else:
                return None
        return tuple(sig)

    def _block_forward(self, module, forward, structure_key, layer_index, *args, **kwargs):
        signature = self._signature(args, kwargs, layer_index)
        if signature is None:
            return forward(*args, **kwargs)
        key = (structure_key, signature)
        path = self.module_paths[module]
        record = self._memo.get(key)
        if record is not None and record.outputs is not None:
            return self._replay(path, record)
        counts_before = {k: attrs.evolve(v) for k, v in self.counts.items()}
        calls_before = dict(self.module_calls)
        live_before, peak_before = self._live_bytes, self.peak_bytes
        self.peak_bytes = live_before
        out = forward(*args, **kwargs)
        peak_above = self.peak_bytes - live_before
        self.peak_bytes = max(peak_before, self.peak_bytes)
        prefix = path + "."
        rel_counts = {}
        for (p, category), vec in self.counts.items():
            if p == path or p.startswith(prefix):
                delta = vec.minus(counts_before.get((p, category), CountVector()))
                if any(attrs.astuple(delta)):
                    rel_counts[(p[len(path):].lstrip("."), category)] = delta
        rel_calls = {p[len(path):].lstrip("."): n - calls_before.get(p, 0) for p, n in self.module_calls.items()
                     if p.startswith(prefix) and n != calls_before.get(p, 0)}
        outputs = None
        retained = self._live_bytes - live_before
        if isinstance(out, torch.Tensor):
            outputs = (tuple(out.shape), out.stride(), out.dtype)
            retained -= tensor_bytes(out)
        self._memo[key] = _BlockRecord(counts=rel_counts, module_calls=rel_calls,
                                       peak_above_start_bytes=peak_above, retained_bytes=retained,
                                       outputs=outputs)
        return out

    def _replay(self, path: str, record: _BlockRecord) -> torch.Tensor:
        for (rel, category), vec in record.counts.items():
            self.counts[(f"{path}.{rel}" if rel else path, category)].add(vec)
        for rel, calls in record.module_calls.items():
            self.module_calls[f"{path}.{rel}" if rel else path] += calls
        self.peak_bytes = max(self.peak_bytes, self._live_bytes + record.peak_above_start_bytes)
        self._live_bytes += record.retained_bytes
        shape, stride, dtype = record.outputs
        self._replaying = True  # the stand-in output is no op of the model's
        try:
            with torch._C.DisableTorchFunction():
                out = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
        finally:
            self._replaying = False
        self._allocate(out)
        return out

    # -- recording ----------------------------------------------------------------------------------------
    def _category(self, op_name: str) -> CategoryId:
        classes = tuple(self.module_class.get(p, "") for p in self.stack)
        return TARGET_OPERATORS.category_for(op_name, classes)

    def _mark_static(self, t: torch.Tensor, is_weight: bool) -> None:
        self.static_ids.add(id(t))
        if is_weight:
            self.weight_ids.add(id(t))
        self._keepalive.append(t)  # keep ids unique while the trace runs

    def _allocate(self, t: torch.Tensor) -> None:
        nbytes = tensor_bytes(t)
        self._live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self._live_bytes)

        def _free(counter_ref=weakref.ref(self), nbytes=nbytes):
            counter = counter_ref()
            if counter is not None:
                counter._live_bytes -= nbytes

        weakref.finalize(t, _free)

    def _record_attention(self, args, kwargs) -> None:
        query, key, value = args[:3]
        attn_mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        is_causal = bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False))
        *batch_dims, query_len, head_dim = query.shape
        key_len = key.shape[-2]
        value_dim = value.shape[-1]
        batch_heads = math.prod(batch_dims)
        pairs = attention_pairs(query_len, key_len, is_causal)
        vec = CountVector(op_calls=1, kernel_launches=self.kernels_per_op.get("scaled_dot_product_attention", 1))
        vec.scaled_flops = 2 * batch_heads * pairs * (head_dim + value_dim)
        read = tensor_bytes(query) + tensor_bytes(key) + tensor_bytes(value)
        if isinstance(attn_mask, torch.Tensor):
            read += tensor_bytes(attn_mask)
        vec.scaled_bytes_read = read
        vec.kv_bytes_read = sum(tensor_bytes(t) for t in (key, value) if self._is_kv(t))
        vec.scaled_bytes_written = batch_heads * query_len * value_dim * query.element_size()
        # An explicit mask or additive bias rules out the flash kernel: the masked kernel reads it whole.
        category = CategoryId.ATTENTION_MASKED if isinstance(attn_mask, torch.Tensor) else CategoryId.ATTENTION
        self._add_attention(category, vec, [t for t in (query, key, value, attn_mask)
                                            if isinstance(t, torch.Tensor)])
        self._live_bytes += vec.scaled_bytes_written
        self.peak_bytes = max(self.peak_bytes, self._live_bytes)
        self._live_bytes -= vec.scaled_bytes_written

    def _add(self, op_name: str, vec: CountVector, in_tensors, out_tensors, inplace: bool = False,
             uncounted_inputs: tuple = ()) -> None:
        category = self._category(op_name)
        region = self._region_for(op_name, category) if self._regions else None
        if self._regions:
            self._note_reads(in_tensors, region)
        if region is None:
            self.counts[(self.stack[-1], category)].add(vec)
        elif vec.kernel_launches:  # views and allocations inside a fused kernel cost nothing of their own
            self._absorb(region, vec, in_tensors, out_tensors, inplace, uncounted_inputs)

    def _add_attention(self, category: CategoryId, vec: CountVector, in_tensors) -> None:
        if self._regions:
            self._note_reads(in_tensors, None)
        self.counts[(self.stack[-1], category)].add(vec)

    # -- fused regions (an execution's fusion rules) ---------------------------------------------------------
    # A region is one module call's ops that a runtime runs as one fused kernel: FLOPs are kept, bytes are what
    # the region reads from outside and what it writes that outlives it or is read outside it.
    def _base(self, t: torch.Tensor) -> torch.Tensor:
        """The tensor whose memory `t` views (`t` itself when it is no view)."""
        entry = self._alias.get(id(t))
        if entry is not None and entry[0]() is t:  # t's own entry, not a dead tensor's with the same id
            base = entry[1]()
            if base is not None:
                return base
        return t

    def _note_alias(self, view: torch.Tensor, base: torch.Tensor) -> None:
        self._alias[id(view)] = (weakref.ref(view), weakref.ref(self._base(base)))

    def _region_for(self, op_name: str, category: CategoryId) -> "_Region | None":
        for region in reversed(self._regions):
            rule = region.rule
            if ((rule.categories is None or category in rule.categories)
                    and (rule.aten_ops is None or op_name in rule.aten_ops)
                    and (not rule.own_ops_only or self.stack[-1] == region.path)):
                return region
        return None

    def _note_reads(self, in_tensors, absorbing: "_Region | None") -> None:
        """Tensors a region produced and an op outside it reads are that region's outputs."""
        for t in in_tensors:
            base = self._base(t)
            for region in self._regions:
                if region is absorbing or region.outputs_counted.holds(base):
                    continue
                produced = region.produced.get(base)
                if produced is not None:
                    region.write(*produced)
                    region.outputs_counted.put(base, True)

    def _absorb(self, region: "_Region", vec: CountVector, in_tensors, out_tensors, inplace: bool,
                uncounted_inputs: tuple) -> None:
        acc = region.vec
        acc.fixed_flops += vec.fixed_flops
        acc.scaled_flops += vec.scaled_flops
        acc.expert_weight_bytes_per_expert += vec.expert_weight_bytes_per_expert
        for t in in_tensors:
            if any(t is skip for skip in uncounted_inputs):
                continue
            base = self._base(t)
            if region.produced.holds(base) or region.inputs_seen.holds(base):
                continue
            region.inputs_seen.put(base, True)
            self._charge_read(acc, t)
        all_static = all(id(t) in self.static_ids for t in in_tensors)
        for t in out_tensors:
            base = self._base(t)
            kv = self._is_kv(t) or self._is_kv(base)
            region.produced.put(base, (tensor_bytes(t), all_static, kv))
            if inplace and not region.outputs_counted.holds(base):
                region.write(tensor_bytes(t), all_static, kv)  # written in place: memory that outlives the kernel
                region.outputs_counted.put(base, True)

    def _charge_read(self, vec: CountVector, t: torch.Tensor) -> None:
        """Charge reading `t`: per expert for gathered expert weights, per call for weights and constants, per
        item for activations."""
        nbytes = tensor_bytes(t)
        if id(t) in self.expert_gather:
            vec.expert_weight_bytes_per_expert += self.expert_gather[id(t)]
        elif id(t) in self.static_ids:
            vec.fixed_bytes_read += nbytes
            if id(t) in self.weight_ids:
                vec.weight_bytes_read += nbytes
        else:
            vec.scaled_bytes_read += nbytes
            if self._is_kv(t):
                vec.kv_bytes_read += nbytes

    def _is_kv(self, t: torch.Tensor) -> bool:
        return id(t) in self.kv_role_ids

    def _mark_kv_role(self, t: torch.Tensor) -> None:
        if id(t) not in self.kv_role_ids:
            self.kv_role_ids.add(id(t))
            self._keepalive.append(t)  # keep ids unique while the trace runs

    def writing_kv_cache(self):
        """Context manager: what the ops inside write is KV cache (a cache's `update`: the grown cache a
        concatenation writes, the slots a paged cache fills)."""
        counter = self

        class _Writing:
            def __enter__(self):
                counter._kv_writing += 1

            def __exit__(self, *exc):
                counter._kv_writing -= 1

        return _Writing()

    def _close_region(self, region: "_Region") -> None:
        for base, (nbytes, static, kv) in region.produced.alive():
            if not region.outputs_counted.holds(base):
                region.write(nbytes, static, kv)
        if region.rule.elided:
            return
        region.vec.op_calls = 1 if region.rule.launches else 0
        region.vec.kernel_launches = region.rule.launches
        self.counts[(region.path, region.rule.category)].add(region.vec)

    def mark_kv_cache(self, tensors) -> None:
        for t in tensors:
            self.kv_ids.add(id(t))
            self._keepalive.append(t)
            if isinstance(t, torch.Tensor):
                self._mark_kv_role(t)

    def _record_op(self, func, args, kwargs, out) -> None:
        if self._replaying:
            return
        op_name = func._overloadpacket.__name__
        flat_in, _ = tree_flatten((args, kwargs))
        in_tensors = [t for t in flat_in if isinstance(t, torch.Tensor)]
        flat_out, _ = tree_flatten(out)
        out_tensors = [t for t in flat_out if isinstance(t, torch.Tensor)]
        all_static = all(id(t) in self.static_ids for t in in_tensors)

        if _is_view_op(func):
            # Views alias their input: no kernel, no bytes, one host call; a view of a weight is a weight.
            if in_tensors and id(in_tensors[0]) in self.static_ids:
                for t in out_tensors:
                    self._mark_static(t, id(in_tensors[0]) in self.weight_ids)
            if in_tensors and id(in_tensors[0]) in self.expert_gather:
                for t in out_tensors:
                    self.expert_gather[id(t)] = self.expert_gather[id(in_tensors[0])]
                    self._keepalive.append(t)
            if in_tensors and self._is_kv(in_tensors[0]):
                for t in out_tensors:
                    self._mark_kv_role(t)  # a view of the KV cache is KV cache
            if in_tensors and self.fusion_rules:
                for t in out_tensors:
                    self._note_alias(t, in_tensors[0])
            self._add(op_name, CountVector(op_calls=1), [], out_tensors)
            return
        if op_name in _NO_KERNEL_OPS:
            self._add(op_name, CountVector(op_calls=1), [], out_tensors)
            return

        # Expert weights gathered per (token, expert) pair are an artefact of the counting path: the real
        # grouped kernel reads each distinct expert once. Record the slice size and charge nothing here.
        if (op_name == "index" and in_tensors and id(in_tensors[0]) in self.static_ids
                and in_tensors[0].dim() == 3 and any(id(t) not in self.static_ids for t in in_tensors[1:])):
            per_expert = tensor_bytes(in_tensors[0]) // in_tensors[0].shape[0]
            for t in out_tensors:
                self.expert_gather[id(t)] = per_expert
                self._keepalive.append(t)
            self._add(op_name, CountVector(op_calls=1), [], out_tensors)
            return

        vec = CountVector(op_calls=1, kernel_launches=self.kernels_per_op.get(op_name, 1))
        if op_name in _GROUPED_MM_OPS:
            # (S, K) x (E, K, N) grouped by expert: every row meets one expert's (K, N) slice. The kernel reads
            # the experts that have rows: charged per distinct expert touched, like the gathered weights above.
            rows_in, weight = in_tensors[0], in_tensors[1]
            vec.scaled_flops = 2 * rows_in.shape[0] * weight.shape[-2] * weight.shape[-1]
            vec.expert_weight_bytes_per_expert = tensor_bytes(weight) // weight.shape[0]
            vec.scaled_bytes_read = sum(tensor_bytes(t) for t in in_tensors if t is not weight)
            vec.scaled_bytes_written = sum(tensor_bytes(t) for t in out_tensors)
            self._add(op_name, vec, in_tensors, out_tensors, uncounted_inputs=(weight,))
            for t in out_tensors:
                self._allocate(t)
            return
        if op_name == "copy_" and in_tensors:
            in_tensors = in_tensors[1:]  # the destination is written, not read
        if func._overloadpacket in flop_registry:
            flops = int(flop_registry[func._overloadpacket](*args, **kwargs, out_val=out))
            if all_static:
                vec.fixed_flops = flops
            else:
                vec.scaled_flops = flops
        if op_name == "embedding":
            # A lookup reads the gathered rows, not the whole table; the rows scale with the tokens looked up.
            weight, indices = in_tensors[0], in_tensors[1]
            vec.scaled_bytes_read += indices.numel() * weight.shape[-1] * weight.element_size()
            in_tensors = [indices]
        for t in in_tensors:
            self._charge_read(vec, t)
        if self._kv_writing:
            for t in out_tensors:
                self._mark_kv_role(t)
        written = sum(tensor_bytes(t) for t in out_tensors)
        if all_static:
            vec.fixed_bytes_written += written
        else:
            vec.scaled_bytes_written += written
            vec.kv_bytes_written += sum(tensor_bytes(t) for t in out_tensors if self._is_kv(t))
        self._add(op_name, vec, in_tensors, out_tensors, inplace=_is_inplace_or_out(func))

        if all_static:
            from_weight = any(id(t) in self.weight_ids for t in in_tensors)
            for t in out_tensors:
                self._mark_static(t, from_weight)
        elif op_name == "cat" and any(id(t) in self.kv_ids for t in in_tensors):
            self.mark_kv_cache(out_tensors)  # the grown KV cache is counted as KV memory
        elif not _is_inplace_or_out(func):
            for t in out_tensors:
                self._allocate(t)
