"""The cost model, declared once: how a priced point's time and memory follow from a report's counts, a GPU and a
runtime profile.

Every term is an expression over named inputs (a report's counts, the device figures of a scenario point, a
runtime profile's numbers). The same declaration is rendered to SQL for the pricing views (queries/views/52, 60, 70
and 95 are generated from it by `python -m registry.pricing.views`, checked by `--check`) and evaluated with numpy by
the code that prices without the views (`calibrate.predict` during a fit, the serving step costs), so the formula
lives here alone: a new term is one edit here, the regenerated views, and a migration if a table gains a column.

Per operator row (host and device overlap: eager PyTorch dispatches kernels asynchronously, so the host runs ahead
while long kernels run, and a kernel shorter than its dispatch costs its dispatch):

    compute_bound_s = FLOPs / (peak x compute efficiency x efficiency_scale); a matmul row of a point with fp8
                      weights: the GPU's dense fp8 peak x the profile's fp8_compute_efficiency
    memory_bound_s  = (bytes read + written) / (bandwidth x bandwidth efficiency x efficiency_scale); fp8 weights
                      take half of a matmul row's weight bytes off, an fp8 KV cache half of every row's KV bytes
    dispatch_s      = op_calls x aten_call_s + kernel_launches x kernel_launch_s; in the decode stage of a runtime
                      with cuda_graph_decode: kernel_launches x graph_kernel_s (a replay issues no host work)
    op_time_s       = the largest of the three; the row's bound names it (ties go to the earlier term)

Per stage, host time outside the operators:

    module_host_s   = nn.Module calls x module_call_s; none in a graph-replayed decode (a replay calls no module)
    call_host_s     = calls x stage_call_overhead_s (decode: steps x decode_step_overhead_s)
    stage_time_s    = op_time_s summed over the stage's rows + the host terms

Memory, by the execution's memory model (analyzer.execution: MEMORY_MODELS):

    paged-kv        budget = FLOOR(gpu_memory_utilization x memory); the KV pool is the budget - weights - one
                    step's activation peak (vLLM's profile run); fp8 weights: the matmul weights take half the
                    memory; an fp8 KV cache: half the bytes per token
    live-set        budget = the GPU's memory; weights + the live set of the largest stage (bf16 only)

GPUs for a target: CEIL(pages per day / (86,400 x pages per second of one GPU)). Money at the GPU's price per hour:
per 1,000 pages = GPU-seconds per page x price / 3.6; per million output tokens = price x 1e6 / (3,600 x output
tokens per second); per month = GPUs x price x 730 hours. Where efficiencies come from: calibrated on the GPU a
profile was fitted on, datasheet-scaled from it on any other, assumed when it was never fitted.
"""

from __future__ import annotations

import operator

import attrs
import numpy as np


# -- expressions --------------------------------------------------------------------------------------------------

class Expr:
    """A term of the cost model: rendered to SQL (`sql`) or evaluated over numpy arrays (`evaluate`)."""

    def __add__(self, other):
        return _chain("+", self, other)

    def __mul__(self, other):
        return _chain("*", self, other)

    def __sub__(self, other):
        return _chain("-", self, other)

    def __truediv__(self, other):
        return Quotient(self, _expr(other))


def _expr(value) -> Expr:
    return value if isinstance(value, Expr) else Const(float(value))


@attrs.frozen
class Input(Expr):
    """A named input: a count of the report, a device figure, a profile number or a flag. `count`: an integer
    column that SQL casts to DOUBLE PRECISION before it enters arithmetic."""

    name: str
    count: bool = False

    def sql(self, bind: dict[str, str]) -> str:
        text = bind[self.name]
        return f"CAST({text} AS DOUBLE PRECISION)" if self.count else text

    def evaluate(self, values: dict):
        return values[self.name]


@attrs.frozen
class Const(Expr):
    value: float

    def sql(self, bind: dict[str, str]) -> str:
        return repr(self.value)

    def evaluate(self, values: dict):
        return self.value


@attrs.frozen
class Chain(Expr):
    """a + b + ..., a x b x ... or a - b - ...: evaluated left to right, as SQL and numpy both do."""

    symbol: str
    parts: tuple

    def sql(self, bind: dict[str, str]) -> str:
        return f" {self.symbol} ".join(_operand(p, bind, self) for p in self.parts)

    def evaluate(self, values: dict):
        total = self.parts[0].evaluate(values)
        for part in self.parts[1:]:
            total = _OPERATIONS[self.symbol](total, part.evaluate(values))
        return total


_OPERATIONS = {"+": operator.add, "*": operator.mul, "-": operator.sub}


def _chain(symbol: str, left: Expr, right) -> Chain:
    """left op right, one chain with left's parts when left is a chain of the same operation."""
    parts = left.parts if isinstance(left, Chain) and left.symbol == symbol else (left,)
    return Chain(symbol, (*parts, _expr(right)))


@attrs.frozen
class Floor(Expr):
    """FLOOR of a product, as a whole number of bytes (BIGINT)."""

    inner: Expr

    def sql(self, bind: dict[str, str]) -> str:
        return f"CAST(FLOOR({self.inner.sql(bind)}) AS BIGINT)"

    def evaluate(self, values: dict):
        return np.floor(self.inner.evaluate(values))


@attrs.frozen
class Quotient(Expr):
    numerator: Expr
    denominator: Expr

    def sql(self, bind: dict[str, str]) -> str:
        return f"{_operand(self.numerator, bind, self)} / ({self.denominator.sql(bind)})"

    def evaluate(self, values: dict):
        return self.numerator.evaluate(values) / self.denominator.evaluate(values)


@attrs.frozen
class Flag:
    """A condition: a named boolean input (a flag) or a comparison of a named input with a literal, joined by AND."""

    names: tuple[str, ...]  # flags, each true
    stage: str | None = None  # the row's stage equals this

    def sql(self, bind: dict[str, str]) -> str:
        parts = [f"{bind['stage']} = '{self.stage}'"] if self.stage else []
        return " AND ".join(parts + [bind[n] for n in self.names])

    def evaluate(self, values: dict):
        out = True
        if self.stage:
            out = np.asarray(values["stage"]) == self.stage
        for name in self.names:
            out = np.logical_and(out, values[name])
        return out


@attrs.frozen
class When(Expr):
    """CASE WHEN condition THEN then ELSE otherwise END."""

    condition: Flag
    then: Expr
    otherwise: Expr

    def sql(self, bind: dict[str, str]) -> str:
        return (f"CASE WHEN {self.condition.sql(bind)} THEN {self.then.sql(bind)} "
                f"ELSE {self.otherwise.sql(bind)} END")

    def evaluate(self, values: dict):
        return np.where(self.condition.evaluate(values), self.then.evaluate(values), self.otherwise.evaluate(values))


def _operand(expr: Expr, bind: dict[str, str], within: Expr) -> str:
    """An operand's SQL, in parentheses unless it binds at least as tightly as the expression it sits in: a
    product or quotient inside a sum or difference, the same chain inside itself."""
    text = expr.sql(bind)
    additive = isinstance(within, Chain) and within.symbol in "+-"
    if isinstance(expr, (Input, Const, When, Floor)):
        return text
    if isinstance(expr, Quotient) or (isinstance(expr, Chain) and expr.symbol == "*"):
        if additive or (isinstance(within, Chain) and within.symbol == "*" and isinstance(expr, Chain)):
            return text
    return f"({text})"


def greatest_sql(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"GREATEST({', '.join(names)})"


def greatest(values: list):
    out = values[0]
    for value in values[1:]:
        out = np.maximum(out, value)
    return out


# -- the declaration ----------------------------------------------------------------------------------------------

@attrs.frozen
class Term:
    """One named term: its expression, what it means, and (for an operator row's terms) the bound it names."""

    name: str
    expr: Expr
    description: str
    bound: str | None = None  # an operator row's time is the largest of these terms; its bound names that term
    device: bool = False  # device time (kernel_s is the largest of these), not host time


# Bytes per element of each precision a deployment may choose for its weights and its KV cache.
DTYPE_BYTES = {"bf16": 2, "fp8": 1}
DTYPES = tuple(DTYPE_BYTES)
DEFAULT_DTYPE = "bf16"  # what every report is traced in, and what a profile serves in unless it says otherwise
# The part of a bf16 byte an fp8 byte saves: fp8 weights halve a matmul row's weight bytes, an fp8 KV cache its
# KV bytes.
FP8_BYTE_SAVING = 1.0 - DTYPE_BYTES["fp8"] / DTYPE_BYTES["bf16"]

FLOPS = Input("flops", count=True)
BYTES_MOVED = Input("bytes_moved", count=True)
WEIGHT_BYTES = Input("weight_bytes_read", count=True)
KV_CACHE_BYTES = Input("kv_cache_bytes", count=True)  # read + written
# A matmul row of a point whose weights are fp8 (an FP8 GEMM: the fp8 rate, its own efficiency, half the weight
# bytes); a row of a point whose KV cache is fp8 (half its KV bytes).
FP8_MATMUL = Flag(("fp8_matmul",))
FP8_KV_CACHE = Flag(("fp8_kv_cache",))
OP_CALLS = Input("op_calls", count=True)
KERNEL_LAUNCHES = Input("kernel_launches", count=True)
MODULE_CALLS = Input("module_calls", count=True)
CALLS = Input("calls", count=True)
GRAPH_DECODE = Flag(("cuda_graph_decode",), stage="decode")
EFFICIENCY_SCALE = Input("efficiency_scale")

ROW_TERMS: tuple[Term, ...] = (
    Term("compute_bound_s",
         FLOPS / (When(FP8_MATMUL, Input("peak_fp8_flops_per_s") * Input("fp8_compute_efficiency"),
                       Input("peak_flops_per_s") * Input("compute_efficiency")) * EFFICIENCY_SCALE),
         "seconds if bound by the tensor rate: FLOPs / (peak x compute efficiency x efficiency_scale); an fp8 "
         "matmul: the dense fp8 peak x fp8_compute_efficiency", bound="compute", device=True),
    Term("memory_bound_s",
         (BYTES_MOVED - When(FP8_MATMUL, WEIGHT_BYTES * FP8_BYTE_SAVING, Const(0.0))
          - When(FP8_KV_CACHE, KV_CACHE_BYTES * FP8_BYTE_SAVING, Const(0.0)))
         / (Input("memory_bandwidth_bytes_per_s") * Input("bandwidth_efficiency") * EFFICIENCY_SCALE),
         "seconds if bound by memory: (bytes read + written) / (bandwidth x bandwidth efficiency x "
         "efficiency_scale); fp8 weights halve a matmul row's weight bytes, an fp8 KV cache the KV bytes",
         bound="memory", device=True),
    Term("dispatch_s",
         When(GRAPH_DECODE, KERNEL_LAUNCHES * Input("graph_kernel_s"),
              OP_CALLS * Input("aten_call_s") + KERNEL_LAUNCHES * Input("kernel_launch_s")),
         "seconds of host dispatch: op_calls x aten_call_s + kernel_launches x kernel_launch_s (a graph-replayed "
         "decode: kernel_launches x graph_kernel_s)", bound="dispatch"),
)

STAGE_HOST_TERMS: tuple[Term, ...] = (
    Term("module_host_s", When(GRAPH_DECODE, Const(0.0), MODULE_CALLS * Input("module_call_s")),
         "nn.Module calls x module_call_s (none in a graph-replayed decode)"),
    Term("call_host_s",
         CALLS * When(Flag((), stage="decode"), Input("decode_step_overhead_s"), Input("stage_call_overhead_s")),
         "calls x stage_call_overhead_s (decode: steps x decode_step_overhead_s)"),
)

# The inputs each level of the model reads, by where they come from.
PROFILE_INPUTS = ("aten_call_s", "kernel_launch_s", "graph_kernel_s", "cuda_graph_decode", "module_call_s",
                  "stage_call_overhead_s", "decode_step_overhead_s", "fp8_compute_efficiency")

SECONDS_PER_DAY = 86400.0


def row_terms() -> tuple[Term, ...]:
    return ROW_TERMS


def bound_terms() -> tuple[Term, ...]:
    return tuple(t for t in ROW_TERMS if t.bound)


def device_terms() -> tuple[Term, ...]:
    return tuple(t for t in ROW_TERMS if t.device)


# -- numpy evaluation ---------------------------------------------------------------------------------------------

def row_bounds(values: dict) -> dict[str, np.ndarray]:
    """Each bound term of operator rows (name -> seconds), `values` holding the inputs as arrays or scalars."""
    return {t.name: t.expr.evaluate(values) for t in ROW_TERMS}


def op_time_s(bounds: dict[str, np.ndarray]) -> np.ndarray:
    """An operator row's time: the largest of its bound terms."""
    return greatest([bounds[t.name] for t in bound_terms()])


def stage_host_s(values: dict) -> np.ndarray:
    """The stage's host time outside the operators: the sum of the host terms."""
    total = STAGE_HOST_TERMS[0].expr.evaluate(values)
    for term in STAGE_HOST_TERMS[1:]:
        total = total + term.expr.evaluate(values)
    return total


# -- memory: the paged-KV engine's budget and pool ---------------------------------------------------------------

PAGED_KV_BUDGET_BYTES = Term(
    "memory_budget_bytes", Floor(Input("gpu_memory_utilization") * Input("memory_bytes")),
    "the memory a paged-KV engine may use: FLOOR(gpu_memory_utilization x memory)")
PAGED_KV_POOL_BYTES = Term(
    "kv_pool_bytes", Input("memory_budget_bytes") - Input("weight_bytes") - Input("step_peak_bytes"),
    "the KV pool of a paged-KV engine: its budget - weights - one step's activation peak")


def paged_kv_pool_bytes(gpu_memory_utilization: float, memory_bytes: int, weight_bytes: int,
                        step_peak_bytes: int) -> int:
    """The KV pool of a paged-KV engine at this memory utilization, as the pricing views compute it."""
    budget = PAGED_KV_BUDGET_BYTES.expr.evaluate({"gpu_memory_utilization": gpu_memory_utilization,
                                                   "memory_bytes": memory_bytes})
    return int(PAGED_KV_POOL_BYTES.expr.evaluate({"memory_budget_bytes": int(budget), "weight_bytes": weight_bytes,
                                                   "step_peak_bytes": step_peak_bytes}))


def dtype_bytes_sql(bf16_bytes: str, dtype: str) -> str:
    """Bytes of a bf16 quantity (`bf16_bytes`, an integer column) held in the precision named by the column
    `dtype`, as an integer."""
    cases = " ".join(f"WHEN '{name}' THEN CAST({bf16_bytes} * {size} / {DTYPE_BYTES['bf16']} AS BIGINT)"
                     for name, size in DTYPE_BYTES.items() if name != "bf16")
    return f"CASE {dtype} {cases} ELSE {bf16_bytes} END"


def weight_memory_sql(weight_bytes: str, matmul_weight_bytes: str, weights_dtype: str) -> str:
    """The weights' memory in the precision `weights_dtype`: the matmul weights take its bytes, the rest (embeddings,
    norms, convolutions) stays bf16."""
    cases = " ".join(f"WHEN '{name}' THEN {weight_bytes} - {matmul_weight_bytes} + "
                     f"CAST({matmul_weight_bytes} * {size} / {DTYPE_BYTES['bf16']} AS BIGINT)"
                     for name, size in DTYPE_BYTES.items() if name != "bf16")
    return f"CASE {weights_dtype} {cases} ELSE {weight_bytes} END"


# -- money ----------------------------------------------------------------------------------------------------------

HOURS_PER_MONTH = 730.0  # 8,760 hours a year / 12
MONEY_TERMS: tuple[Term, ...] = (
    Term("usd_per_1000_pages", Input("gpu_seconds_per_page") * Input("usd_per_hour") / Const(3.6),
         "dollars per 1,000 pages: GPU-seconds per page x the GPU's price per hour / 3.6"),
    Term("usd_per_million_output_tokens",
         Input("usd_per_hour") * Const(1e6) / (Const(3600.0) * Input("output_tokens_per_s")),
         "dollars per million output tokens: price per hour x 1e6 / (3,600 x output tokens per second)"),
    Term("monthly_usd", Input("gpus_needed") * Input("usd_per_hour") * Const(HOURS_PER_MONTH),
         "dollars a month for the GPUs needed: GPUs x price per hour x 730 hours"),
)
MONEY = {term.name: term for term in MONEY_TERMS}


def efficiency_source_sql(calibrated_on: str, hardware: str) -> str:
    """Where a priced point's efficiencies come from: fitted on this GPU, fitted on another and scaled by the
    datasheets, or assumed (a profile never fitted)."""
    return (f"CASE WHEN {calibrated_on} IS NULL THEN 'assumed (not calibrated)' "
            f"WHEN {calibrated_on} = {hardware} THEN 'calibrated on ' || {hardware} "
            f"ELSE 'datasheet-scaled from ' || {calibrated_on} END")


def gpus_needed_sql(target_pages_per_day: str, pages_per_s_per_gpu: str) -> str:
    """GPUs for a daily target at one GPU's pages per second: CEIL(target / (86,400 x pages per second))."""
    return f"CEIL({target_pages_per_day} / NULLIF({SECONDS_PER_DAY!r} * {pages_per_s_per_gpu}, 0))"


def gpus_needed(target_pages_per_day: float, pages_per_s_per_gpu: float) -> int:
    """gpus_needed_sql evaluated: the GPUs (replicas of one GPU each) a daily target needs."""
    import math

    return int(math.ceil(target_pages_per_day / (SECONDS_PER_DAY * pages_per_s_per_gpu)))
