"""Reports of a traced family, derived exactly from a few traces.

A family is the part of a workload that decides which ops run: the variant, the execution, the mode and tile grid
(hence the image views) and whether the batch is a single item (a trace runs at batch 1 for one item and at batch 2
for more, see analyzer/tracing.py). Within a family, the report of any batch, prompt length and output length is an
exact function of a few traces:

- the vision tower and projector calls are the same traces whatever the batch and lengths;
- a decode step is affine in its context, so two steps (contexts 256 and 257) give every step and their sum;
- the prefill's counts are polynomials in the prompt's tokens (attention pairs are quadratic, everything else is
  linear or constant), so each count of each operator row is fitted from probe traces with exact rational
  arithmetic and checked against further probes the fit did not see. A family whose prefill does not fit exactly
  has no fit, and each prompt length it meets is traced (never approximated).

Batch scaling and MoE distinct-expert counts are applied at assembly, with the same formulas a traced report uses.
The assembly here is the analyzer's only one: a traced report is assembled from a source that traces on demand
(analyzer.tracing.TracingSource), a derived report from a `FamilyFrame`. A frame's stages are built from a layout
made once per stage (analyzer/stage_layout.py: the same arithmetic on int64 columns, the rows' structure reused);
a traced report's are built row by row, and the tests hold the two equal. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import operator
from collections import defaultdict
from fractions import Fraction
from math import lcm
from typing import Protocol

import attrs
import numpy as np

from analyzer import __version__
from analyzer.architecture import DTYPE_BYTES, DTYPE_NAME, EXPERTS_COUNTING_IMPLEMENTATION, ArchitectureSpec, load_spec
from analyzer.categories import CATEGORY_POSITION, CategoryId, OperatorCategory
from analyzer.counts import CountVector, TraceResult
from analyzer.execution import Execution, execution_spec
from analyzer.report import (OPERATOR_COUNT_FIELDS, SCHEMA_VERSION, AnalyticModelReport, ModuleMetricsSnapshot,
                             ModuleNode, OperatorMetrics, RoutingAssumption, Stage, StageSummary, ViewKind,
                             canonical_fragment, operator_categories, report_id_of_parts,
                             snapshots_json)
from analyzer.routing import expected_distinct_experts
from analyzer.stage_layout import EXPERT_WEIGHT_BYTES_PER_EXPERT, INT64_SAFE, StageLayout, ancestors
from analyzer.workload import Workload, workload_record

DECODE_PROBE_CONTEXT = 256  # any context works: the step cost is affine in it (tests hold a third point)

VISION_TOWER = "model.vision_tower"
PROJECTOR = "model.multi_modal_projector"
LANGUAGE_MODEL = "model.language_model"
LM_HEAD = "lm_head"
MODEL_ROOT = "model"
ROOT = ""

# Stages a frame keeps built (each about a megabyte of rows): enough for the batches and prompts of a sweep.
STAGE_MEMO_ENTRIES = 256
COUNT_FIELDS = tuple(f.name for f in attrs.fields(CountVector))


@attrs.frozen
class ModelFacts:
    """What a report says of the model itself, read once from the module tree built on the meta device."""

    parameters: int
    modules: tuple[ModuleNode, ...]
    matmul_weight_bytes: int
    transformers_version: str
    torch_version: str


class TraceSource(Protocol):
    """Where the assembly gets its traces: traced on demand, or from a family's frame."""

    def facts(self) -> ModelFacts: ...
    def vision(self, view_px: int, traced_items: int) -> TraceResult: ...
    def projector(self, feature_tokens: int, traced_items: int) -> TraceResult: ...
    def prefill(self, prompt_tokens: int, image_tokens: int, traced_items: int) -> TraceResult: ...
    def decode_step(self, context: int, traced_items: int) -> TraceResult: ...
    def decode_vectors(self, traced_items: int) -> tuple[dict, dict]: ...


def traced_items_for(items: int) -> int:
    return 1 if items == 1 else 2


# -- families ----------------------------------------------------------------------------------------------------

@attrs.frozen
class FamilyKey:
    """The workloads whose reports one frame derives: all batches (single item or not), prompt and output lengths
    of one variant, execution, mode and tile grid."""

    variant: str
    execution: str
    mode: str
    tiles_wide: int
    tiles_high: int
    single_item: bool

    @classmethod
    def of(cls, workload: Workload, execution: Execution) -> "FamilyKey":
        layout = workload.layout
        return cls(variant=workload.variant, execution=execution.value, mode=workload.mode,
                   tiles_wide=layout.tiles_wide, tiles_high=layout.tiles_high, single_item=workload.batch == 1)


# -- exact polynomial fits ---------------------------------------------------------------------------------------

PREFILL_FIT_DEGREE = 3  # attention pairs are quadratic in the prompt; one degree more shows a fit has room to spare


@attrs.frozen
class Polynomial:
    """sum(numerators[i] * x**i) / denominator, exact; evaluated only where it gives an integer."""

    numerators: tuple[int, ...]
    denominator: int = 1

    def __call__(self, x: int) -> int:
        total = 0
        for coefficient in reversed(self.numerators):
            total = total * x + coefficient
        value, remainder = divmod(total, self.denominator)
        if remainder:
            raise NotExactError(f"the fitted count is not an integer at {x}")
        return value

    @classmethod
    def through(cls, xs: tuple[int, ...], ys: list[int]) -> "Polynomial":
        """The polynomial of degree < len(xs) through the points (Lagrange, exact): sum_i ys[i] * basis_i, with the
        basis polynomials of `xs` over one common denominator, so that a fit of thousands of counts through the
        same probes is integer arithmetic."""
        basis_numerators, basis_denominator = _lagrange_basis(tuple(xs))
        totals = [sum(y * basis[k] for y, basis in zip(ys, basis_numerators) if y) for k in range(len(xs))]
        coefficients = [Fraction(total, basis_denominator) for total in totals]
        while coefficients and coefficients[-1] == 0:
            coefficients.pop()
        denominator = lcm(1, *(c.denominator for c in coefficients))
        return cls(tuple(int(c * denominator) for c in coefficients), denominator)


@functools.lru_cache(maxsize=64)
def _lagrange_basis(xs: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], ...], int]:
    """(numerators of each basis polynomial prod over j != i of (x - xj) / (xi - xj), lowest power first; their
    common denominator), in exact rationals."""
    bases = []
    for i, xi in enumerate(xs):
        basis = [Fraction(1)]
        for j, xj in enumerate(xs):
            if j == i:
                continue
            scale = Fraction(1, xi - xj)
            shifted = [Fraction(0)] + basis
            for k in range(len(basis)):
                shifted[k] -= xj * basis[k]
            basis = [c * scale for c in shifted]
        bases.append(basis)
    denominator = lcm(1, *(c.denominator for basis in bases for c in basis))
    return tuple(tuple(int(c * denominator) for c in basis) for basis in bases), denominator


class NotExactError(ValueError):
    """A fit that does not reproduce a trace exactly: the family's prefills are traced instead."""


@attrs.frozen
class PrefillFit:
    """A prefill trace as exact polynomials in its prompt tokens: every count of every (module, category) row, the
    module calls and the activation peak."""

    image_tokens: int
    traced_items: int
    counts: dict[tuple[str, CategoryId], tuple[Polynomial, ...]]
    module_calls: dict[str, Polynomial]
    activation_peak_bytes: Polynomial

    def at(self, prompt_tokens: int) -> TraceResult:
        return TraceResult(
            counts={key: CountVector(*(p(prompt_tokens) for p in polys)) for key, polys in self.counts.items()},
            module_calls={path: p(prompt_tokens) for path, p in self.module_calls.items()},
            activation_peak_bytes=self.activation_peak_bytes(prompt_tokens))


def prefill_probe_tokens(image_tokens: int, context_tokens: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prompt tokens the fit goes through, prompt tokens that check it): spread over the prompts the family admits
    (the image's tokens plus 0 .. the rest of the context, one position left for a new token); empty when the
    room is too small to fit and check a cubic."""
    room = context_tokens - 1 - image_tokens
    if room < 16:
        return (), ()
    fit = (0, room // 3, (2 * room) // 3, room)
    check = (1, room // 2 + 1)
    return tuple(image_tokens + t for t in fit), tuple(image_tokens + t for t in check)


def fit_prefill(trace, image_tokens: int, traced_items: int, fit_tokens: tuple[int, ...],
                check_tokens: tuple[int, ...]) -> PrefillFit:
    """The exact fit of `trace(prompt_tokens)` through `fit_tokens`; NotExactError unless it reproduces every count
    of the traces at `check_tokens`."""
    if not fit_tokens:
        raise NotExactError("the family's prompts leave no room for probes")
    probes = [trace(t) for t in fit_tokens]
    keys = sorted({key for p in probes for key in p.counts}, key=lambda k: (k[0], CATEGORY_POSITION[k[1]]))
    paths = sorted({path for p in probes for path in p.module_calls})
    empty = CountVector()
    counts = {}
    for key in keys:
        vectors = [p.counts.get(key, empty) for p in probes]
        counts[key] = tuple(Polynomial.through(fit_tokens, [getattr(v, f) for v in vectors]) for f in COUNT_FIELDS)
    fit = PrefillFit(
        image_tokens=image_tokens, traced_items=traced_items, counts=counts,
        module_calls={path: Polynomial.through(fit_tokens, [p.module_calls.get(path, 0) for p in probes])
                      for path in paths},
        activation_peak_bytes=Polynomial.through(fit_tokens, [p.activation_peak_bytes for p in probes]))
    for tokens in check_tokens:
        if not same_trace(fit.at(tokens), trace(tokens)):
            raise NotExactError(f"the prefill fit misses the trace at {tokens} prompt tokens")
    return fit


def same_trace(derived: TraceResult, traced: TraceResult) -> bool:
    """Equal counts row for row (rows of all-zero counts are the same as absent rows), calls and peak."""
    empty = CountVector()
    keys = set(derived.counts) | set(traced.counts)
    if any(derived.counts.get(k, empty) != traced.counts.get(k, empty) for k in keys):
        return False
    paths = set(derived.module_calls) | set(traced.module_calls)
    if any(derived.module_calls.get(p, 0) != traced.module_calls.get(p, 0) for p in paths):
        return False
    return derived.activation_peak_bytes == traced.activation_peak_bytes


# -- a family's frame --------------------------------------------------------------------------------------------

@attrs.define
class FamilyFrame:
    """Everything a family's reports are assembled from: the traces that do not depend on the batch or lengths, the
    prefills traced so far (by prompt tokens), the prefill fit, and the model's facts.

    The fit is made when the family is traced (analyzer.analysis.family_frame), or else when the family first meets
    a prompt length it has no trace of; a family whose prefill does not fit exactly (`fit_tried` and no fit) has
    each new prompt length traced. `dirty` says the frame gained a trace or a fit since it was stored."""

    key: FamilyKey
    model: ModelFacts
    image_tokens: int
    traced_items: int  # of the prefill and decode traces
    vision_traces: dict[tuple[int, int], TraceResult]  # (view px, traced items)
    projector_traces: dict[tuple[int, int], TraceResult]  # (feature tokens, traced items)
    decode_traces: dict[tuple[int, int], TraceResult]  # (context, traced items)
    prefill_traces: dict[int, TraceResult]  # prompt tokens -> the prefill traced at them
    prefill_fit: PrefillFit | None = None
    fit_tried: bool = False
    fallback: TraceSource | None = attrs.field(default=None, eq=False)
    dirty: bool = attrs.field(default=False, eq=False)
    _prefills: dict = attrs.field(factory=dict, eq=False)
    _decode_vectors: dict = attrs.field(factory=dict, eq=False)
    stage_memo: dict = attrs.field(factory=dict, eq=False)  # see assemble_report

    def facts(self) -> ModelFacts:
        return self.model

    def vision(self, view_px: int, traced_items: int) -> TraceResult:
        return self.vision_traces[(view_px, traced_items)]

    def projector(self, feature_tokens: int, traced_items: int) -> TraceResult:
        return self.projector_traces[(feature_tokens, traced_items)]

    def decode_step(self, context: int, traced_items: int) -> TraceResult:
        return self.decode_traces[(context, traced_items)]

    def decode_vectors(self, traced_items: int) -> tuple[dict, dict]:
        if traced_items not in self._decode_vectors:
            self._decode_vectors[traced_items] = decode_vectors_of(
                self.decode_step(DECODE_PROBE_CONTEXT, traced_items),
                self.decode_step(DECODE_PROBE_CONTEXT + 1, traced_items))
        return self._decode_vectors[traced_items]

    def tracer(self) -> TraceSource:
        """What traces for this frame: torch and transformers load only when a frame needs a new trace."""
        if self.fallback is None:
            from analyzer.tracing import TracingSource

            self.fallback = TracingSource(self.key.variant, Execution(self.key.execution))
        return self.fallback

    def fit(self) -> PrefillFit | None:
        """Fit the family's prefill once (see fit_prefill); None when it does not fit exactly."""
        if not self.fit_tried:
            fit_tokens, check_tokens = prefill_probe_tokens(self.image_tokens, load_spec(self.key.variant).text[
                "max_position_embeddings"])
            tracer = self.tracer()
            try:
                self.prefill_fit = fit_prefill(lambda t: tracer.prefill(t, self.image_tokens, self.traced_items),
                                               self.image_tokens, self.traced_items, fit_tokens, check_tokens)
            except NotExactError:
                self.prefill_fit = None
            self.fit_tried = self.dirty = True
        return self.prefill_fit

    def prefill(self, prompt_tokens: int, image_tokens: int, traced_items: int) -> TraceResult:
        if (image_tokens, traced_items) != (self.image_tokens, self.traced_items):  # not this family's prefill
            return self.tracer().prefill(prompt_tokens, image_tokens, traced_items)
        traced = self.prefill_traces.get(prompt_tokens)
        if traced is not None:
            return traced
        fit = self.fit()
        if fit is not None:
            if prompt_tokens not in self._prefills:
                try:
                    self._prefills[prompt_tokens] = fit.at(prompt_tokens)
                except NotExactError:
                    self._prefills[prompt_tokens] = None
            if self._prefills[prompt_tokens] is not None:
                return self._prefills[prompt_tokens]
        traced = self.prefill_traces[prompt_tokens] = self.tracer().prefill(prompt_tokens, image_tokens,
                                                                            traced_items)
        self.dirty = True
        return traced


class RecordingSource:
    """A source that passes every request to `source` and remembers the traces it handed out."""

    def __init__(self, source: TraceSource) -> None:
        self.source = source
        self.vision_traces: dict = {}
        self.projector_traces: dict = {}
        self.decode_traces: dict = {}

    def facts(self) -> ModelFacts:
        return self.source.facts()

    def vision(self, view_px: int, traced_items: int) -> TraceResult:
        result = self.vision_traces[(view_px, traced_items)] = self.source.vision(view_px, traced_items)
        return result

    def projector(self, feature_tokens: int, traced_items: int) -> TraceResult:
        result = self.projector_traces[(feature_tokens, traced_items)] = self.source.projector(feature_tokens,
                                                                                                traced_items)
        return result

    def decode_step(self, context: int, traced_items: int) -> TraceResult:
        result = self.decode_traces[(context, traced_items)] = self.source.decode_step(context, traced_items)
        return result

    def decode_vectors(self, traced_items: int) -> tuple[dict, dict]:
        return decode_vectors_of(self.decode_step(DECODE_PROBE_CONTEXT, traced_items),
                                 self.decode_step(DECODE_PROBE_CONTEXT + 1, traced_items))

    def prefill(self, prompt_tokens: int, image_tokens: int, traced_items: int) -> TraceResult:
        return self.source.prefill(prompt_tokens, image_tokens, traced_items)


def build_frame(workload: Workload, execution: Execution, source: TraceSource, fit: bool = False) -> FamilyFrame:
    """The frame of `workload`'s family, from traces `source` makes: those any report of the family reads, and
    (`fit`) the prefill fit, or else (no fit asked for, or none exact) the prefill at the workload's prompt."""
    recording = RecordingSource(source)
    layout = workload.layout
    batch = workload.batch
    for view_kind, px, per_page, feature_tokens in _views(layout):
        calls, items = _vision_calls(execution, batch, per_page)
        recording.vision(px, traced_items_for(items))
        recording.projector(feature_tokens, traced_items_for(items))
    traced = traced_items_for(batch)
    for context in (DECODE_PROBE_CONTEXT, DECODE_PROBE_CONTEXT + 1):
        recording.decode_step(context, traced)
    image_tokens = layout.image_placeholder_tokens
    frame = FamilyFrame(key=FamilyKey.of(workload, execution), model=source.facts(), image_tokens=image_tokens,
                        traced_items=traced, vision_traces=recording.vision_traces,
                        projector_traces=recording.projector_traces, decode_traces=recording.decode_traces,
                        prefill_traces={}, fallback=source, dirty=True)
    if fit:
        frame.fit()
    if frame.prefill_fit is None:  # (a fit gives the workload's prefill exactly: no trace of it is needed)
        frame.prefill_traces[workload.prefill_tokens] = source.prefill(workload.prefill_tokens, image_tokens, traced)
    return frame


# -- assembly ----------------------------------------------------------------------------------------------------

class _StageCounts:
    """Counts of one stage over the whole workload, per (module, category), already scaled."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[str, CategoryId], dict[str, int]] = {}
        self.module_calls: dict[str, int] = {}


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


def decode_vectors_of(at_probe: TraceResult, at_next: TraceResult) -> tuple[dict, dict]:
    """Per (module, category): a step's counts at context 0 and their slope per context token, from the steps at
    DECODE_PROBE_CONTEXT and the next context."""
    slope: dict = {}
    base: dict = {}
    for key in set(at_probe.counts) | set(at_next.counts):
        v1 = at_probe.counts.get(key, CountVector())
        v2 = at_next.counts.get(key, CountVector())
        slope[key] = v2.minus(v1)
        base[key] = v1.affine(slope[key], -DECODE_PROBE_CONTEXT)
    return base, slope


def _decode_stage(base: dict, slope: dict, module_calls: dict[str, int], steps: int, context_start: int,
                  items: int, distinct: float, traced: int) -> _StageCounts:
    """Exact sum over `steps` steps with contexts context_start .. context_start + steps - 1."""
    context_sum = steps * context_start + steps * (steps - 1) // 2
    stage = _StageCounts()
    for key in base:
        summed = CountVector(**{f: getattr(base[key], f) * steps + getattr(slope[key], f) * context_sum
                                for f in COUNT_FIELDS})
        stage.metrics[key] = _scale(summed, items, 0.0, traced)
        # Expert weights: every step reads the distinct experts its batch touches.
        expert_bytes = round(distinct * base[key].expert_weight_bytes_per_expert) * steps
        stage.metrics[key]["bytes_read"] += expert_bytes
        stage.metrics[key]["weight_bytes_read"] += expert_bytes
    stage.module_calls = {path: calls * steps for path, calls in module_calls.items()}
    return stage


def decode_step_totals(base: dict, slope: dict) -> tuple[CountVector, CountVector]:
    """A decode step's counts summed over its rows: (at context 0, per context token)."""
    keys = list(base)
    return tuple(CountVector(*(sum(column) for column in zip(*([getattr(vectors[key], f) for f in COUNT_FIELDS]
                                                                 for key in keys))))
                 if keys else CountVector() for vectors in (base, slope))


def _decode_step_affine(totals: tuple[CountVector, CountVector], items: int, distinct: float, traced: int
                        ) -> tuple[int, int, int, int]:
    """(FLOPs at context 0, FLOPs per context token, bytes at 0, bytes per token) of one step at `items`, from the
    step's totals (decode_step_totals)."""
    base_total, slope_total = totals
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


def _snapshots(stage: Stage, view_kind: ViewKind, counts: _StageCounts) -> list[ModuleMetricsSnapshot]:
    inclusive: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    own_counts: dict[str, list[tuple[CategoryId, dict[str, int]]]] = defaultdict(list)
    for (path, category), m in counts.metrics.items():
        if not any(m.values()):
            continue
        own_counts[path].append((category, m))
        for ancestor in ancestors(path):
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
        ops = sorted(own.get(path, []), key=lambda o: CATEGORY_POSITION[o.category_id])
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


def _views(layout) -> list[tuple[ViewKind, int, int, int]]:
    """(view kind, px, views per page, feature tokens per view) of a page."""
    views = [(ViewKind.GLOBAL, layout.global_view_px, 1, layout.global_feature_tokens)]
    if layout.tiles:
        views.append((ViewKind.TILE, layout.tile_px, layout.tiles, layout.tile_feature_tokens))
    return views


def _vision_calls(execution: Execution, batch: int, per_page: int) -> tuple[int, int]:
    """(calls, items per call) of one view kind's encoder stage: hf-eager encodes every page's views of a kind in
    one batched call; vllm (vision_image_at_a_time) one page at a time (its global view, then its tiles as one
    batch)."""
    return (batch, per_page) if execution_spec(execution).vision_image_at_a_time else (1, batch * per_page)


def assemble_report(workload: Workload, execution: Execution, source: TraceSource) -> AnalyticModelReport:
    """The report of `workload` under `execution` from the traces `source` gives."""
    spec: ArchitectureSpec = load_spec(workload.variant)
    layout = workload.layout
    batch = workload.batch
    experts, top_k = spec.num_experts, spec.experts_per_token

    # A stage's summary and rows depend on a few numbers only (the vision stages on the batch, the prefill on the
    # batch and prompt): a frame keeps them, so that the points of a sweep that share a stage build it once.
    memo = getattr(source, "stage_memo", None)
    stage_entries: list[StageEntry] = []

    def add(stage: Stage, view_kind: ViewKind, memo_key, stage_counts, laid_out=None, **fields) -> None:
        """Add a stage: from the memo, else laid out (`laid_out()`, a frame's points: see
        analyzer/stage_layout.py), else row by row (`stage_counts()`)."""
        if memo is not None and memo_key is not None and memo_key in memo:
            stage_entries.append(memo[memo_key])
            return
        defaults = dict(view_px=0, calls=1, context_start=0, context_end=0, activation_peak_bytes=0,
                        kv_cache_bytes=0, distinct_experts_per_call=0.0, step_flops_base=0,
                        step_flops_per_context_token=0, step_bytes_base=0, step_bytes_per_context_token=0)
        defaults.update(fields)
        built = laid_out() if memo is not None and laid_out is not None else None
        if built is not None:
            totals, snapshots, fragment = built
            totals = dict(zip(OPERATOR_COUNT_FIELDS, totals))  # (the first columns; the KV bytes are not totalled)
            fragment = fragment[1:-1].encode()
        else:
            counts = stage_counts()
            totals = _totals(counts)
            snapshots = _snapshots(stage, view_kind, counts)
            fragment = snapshots_json(snapshots)[1:-1].encode()
        entry = StageEntry(StageSummary(stage=stage, view_kind=view_kind, **totals, **defaults), tuple(snapshots),
                           fragment)
        if memo is not None and memo_key is not None:
            if len(memo) >= STAGE_MEMO_ENTRIES:
                memo.clear()  # a long-lived process meets many batches and prompts: keep the recent ones only
            memo[memo_key] = entry
        stage_entries.append(entry)

    views = _views(layout)
    encoder_stages = ((Stage.VISION, lambda px, tokens, traced: source.vision(px, traced)),
                      (Stage.PROJECTOR, lambda px, tokens, traced: source.projector(tokens, traced)))
    for stage, trace in encoder_stages:  # every view of the vision tower, then every view of the projector
        for view_kind, px, per_page, feature_tokens in views:
            calls, items = _vision_calls(execution, batch, per_page)
            traced = traced_items_for(items)
            result = trace(px, feature_tokens, traced)
            add(stage, view_kind, (stage, view_kind, px, feature_tokens, calls, items),
                lambda: _stage_from_trace(result, items, 0.0, traced, calls),
                lambda: _laid_out_trace(memo, stage, view_kind, result, items, 0.0, traced, calls),
                view_px=px, calls=calls, items=items, tokens_per_item=feature_tokens,
                activation_peak_bytes=result.activation_peak_bytes * items // traced)

    prefill_tokens = workload.prefill_tokens
    traced = traced_items_for(batch)
    prefill = source.prefill(prefill_tokens, layout.image_placeholder_tokens, traced)
    prefill_distinct = expected_distinct_experts(batch * prefill_tokens, experts, top_k)
    add(Stage.PREFILL, ViewKind.NONE, (Stage.PREFILL, prefill_tokens, batch),
        lambda: _stage_from_trace(prefill, batch, prefill_distinct, traced),
        lambda: _laid_out_trace(memo, Stage.PREFILL, ViewKind.NONE, prefill, batch, prefill_distinct, traced, 1),
        items=batch, tokens_per_item=prefill_tokens, context_start=0, context_end=prefill_tokens,
        activation_peak_bytes=prefill.activation_peak_bytes * batch // traced,
        kv_cache_bytes=spec.kv_cache_bytes_per_token * prefill_tokens * batch,
        distinct_experts_per_call=prefill_distinct)

    steps = workload.decode_steps
    if steps:
        decode_distinct = expected_distinct_experts(batch, experts, top_k)
        context_end = prefill_tokens + steps - 1
        at_probe = source.decode_step(DECODE_PROBE_CONTEXT, traced)
        at_next = source.decode_step(DECODE_PROBE_CONTEXT + 1, traced)
        probe, probe_next = at_probe.activation_peak_bytes, at_next.activation_peak_bytes
        peak_at_end = probe + (probe_next - probe) * (context_end - DECODE_PROBE_CONTEXT)
        base, slope = source.decode_vectors(traced)
        totals_key = ("decode step totals", traced)  # the same for every point of the family
        totals = memo.get(totals_key) if memo is not None else None
        if totals is None:
            totals = decode_step_totals(base, slope)
            if memo is not None:
                memo[totals_key] = totals
        flops_base, flops_slope, bytes_base, bytes_slope = _decode_step_affine(totals, batch, decode_distinct, traced)
        add(Stage.DECODE, ViewKind.NONE, None,  # every point of a sweep has its own decode
            lambda: _decode_stage(base, slope, at_probe.module_calls, steps, prefill_tokens, batch, decode_distinct,
                                  traced),
            lambda: _laid_out_decode(memo, base, slope, at_probe.module_calls, steps, prefill_tokens, batch,
                                     decode_distinct, traced),
            calls=steps, items=batch, tokens_per_item=1, context_start=prefill_tokens, context_end=context_end,
            activation_peak_bytes=max(peak_at_end, 0) * batch // traced,
            kv_cache_bytes=spec.kv_cache_bytes_per_token * (context_end + 1) * batch,
            distinct_experts_per_call=decode_distinct, step_flops_base=flops_base,
            step_flops_per_context_token=flops_slope, step_bytes_base=bytes_base,
            step_bytes_per_context_token=bytes_slope)

    facts = source.facts()
    text = spec.text
    fields = dict(
        schema_version=SCHEMA_VERSION, model_id=spec.model_id, variant=spec.variant,
        transformers_model=spec.transformers_model, analyzer_version=__version__,
        transformers_version=facts.transformers_version, torch_version=facts.torch_version,
        dtype=DTYPE_NAME, parameters=facts.parameters, checkpoint_parameters=spec.checkpoint_parameters,
        parameters_note=_parameters_note(spec, facts.parameters), weight_bytes=facts.parameters * DTYPE_BYTES,
        kv_cache_bytes_per_token=spec.kv_cache_bytes_per_token, matmul_weight_bytes=facts.matmul_weight_bytes,
        execution=execution,
        routing=RoutingAssumption(experts=experts, experts_per_token=top_k,
                                  shared_experts=text["n_shared_experts"], assumption="uniform",
                                  counting_implementation=EXPERTS_COUNTING_IMPLEMENTATION),
        workload=workload_record(workload),
        stages=tuple(entry.summary for entry in stage_entries),
        notes=REPORT_NOTES + execution_spec(execution).report_notes,
    )
    categories = operator_categories()
    # The id hashes the report's canonical JSON; its big parts (the module tree, the categories, the module metrics
    # of stages shared by many points) are encoded once and hashed piece by piece (see report_id_of_parts).
    metrics = [entry.fragment for entry in stage_entries if entry.fragment]
    encoded = {"categories": [_categories_fragment(categories)], "modules": [_modules_fragment(facts.modules)],
               "module_metrics": [b"[", *(piece for index, fragment in enumerate(metrics)
                                          for piece in ((b",", fragment) if index else (fragment,))), b"]"]}
    return AnalyticModelReport(
        report_id=report_id_of_parts(fields, encoded), categories=categories, modules=facts.modules,
        module_metrics=tuple(snapshot for entry in stage_entries for snapshot in entry.snapshots), **fields)


_COUNT_VECTOR_VALUES = operator.attrgetter(*COUNT_FIELDS)


def _count_matrix(vectors) -> np.ndarray | None:
    """The count vectors as rows of an int64 matrix (CountVector's fields as columns); None past int64."""
    try:
        matrix = np.array([_COUNT_VECTOR_VALUES(vector) for vector in vectors], dtype=np.int64)
    except OverflowError:
        return None
    return matrix.reshape(-1, len(COUNT_FIELDS))


def _laid_out_trace(memo: dict, stage: Stage, view_kind: ViewKind, trace: TraceResult, items: int,
                    distinct: float, traced: int, calls: int):
    """_stage_from_trace and _snapshots of a frame's trace, column-wise (analyzer/stage_layout.py); None where
    the stage is built row by row."""
    vectors = _count_matrix(trace.counts.values())
    if vectors is None:
        return None
    # a family's prefills at any prompt have the same rows and calls: one layout serves them all
    key = ("stage layout", stage, tuple(trace.counts), tuple(trace.module_calls.items()))
    layout = memo.get(key)
    if layout is None:
        layout = memo[key] = StageLayout(list(trace.counts), trace.module_calls)
    return layout.entry(stage, view_kind, vectors, items, traced, calls, distinct, calls)


def _laid_out_decode(memo: dict, base: dict, slope: dict, module_calls: dict[str, int], steps: int,
                     context_start: int, items: int, distinct: float, traced: int):
    """_decode_stage and _snapshots of a frame's decode, column-wise: the steps' counts summed as base x steps +
    slope x the contexts' sum, in int64 where they fit; None where the stage is built row by row."""
    key = ("decode layout", traced)
    held = memo.get(key)
    if held is None:
        keys = list(base)
        base_counts, slope_counts = _count_matrix(base[k] for k in keys), _count_matrix(slope[k] for k in keys)
        if base_counts is None or slope_counts is None:
            return None
        held = memo[key] = (StageLayout(keys, module_calls), base_counts, slope_counts,
                            int(np.abs(base_counts).max(initial=0)), int(np.abs(slope_counts).max(initial=0)))
    layout, base_counts, slope_counts, base_largest, slope_largest = held
    context_sum = steps * context_start + steps * (steps - 1) // 2
    if base_largest * steps + slope_largest * context_sum >= INT64_SAFE:
        return None
    vectors = base_counts * steps + slope_counts * context_sum
    return layout.entry(Stage.DECODE, ViewKind.NONE, vectors, items, traced, 1, distinct, steps,
                        expert_weights=base_counts[:, EXPERT_WEIGHT_BYTES_PER_EXPERT], calls_multiple=steps)


@attrs.frozen
class StageEntry:
    """One stage of a report as assembled: its summary, its module metrics, and their canonical JSON (the
    snapshots' objects joined by ",", without brackets, ASCII; empty when the stage has no snapshot)."""

    summary: StageSummary
    snapshots: tuple[ModuleMetricsSnapshot, ...]
    fragment: bytes


@functools.lru_cache(maxsize=4)
def _categories_fragment(categories: tuple) -> bytes:
    return canonical_fragment(categories, tuple[OperatorCategory, ...]).encode()


# The canonical JSON of each module tree met, by the tree's identity: a frame's reports share one tree object, and
# hashing a tree of hundreds of nodes as a dictionary key would cost more than it saves. The tree is held with its
# JSON, so its identity is not reused while the entry lives.
_MODULE_FRAGMENTS: dict[int, tuple[tuple, bytes]] = {}
MODULE_FRAGMENT_ENTRIES = 16


def _modules_fragment(modules: tuple) -> bytes:
    held = _MODULE_FRAGMENTS.get(id(modules))
    if held is not None and held[0] is modules:
        return held[1]
    if len(_MODULE_FRAGMENTS) >= MODULE_FRAGMENT_ENTRIES:
        _MODULE_FRAGMENTS.clear()
    fragment = canonical_fragment(modules, tuple[ModuleNode, ...]).encode()
    _MODULE_FRAGMENTS[id(modules)] = (modules, fragment)
    return fragment


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
