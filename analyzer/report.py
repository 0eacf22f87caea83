"""The `AnalyticModelReport` and its parts (attrs), with exact JSON/YAML round-trips through cattrs.

Every count is an integer (FLOPs, bytes, launches, calls); the floats are expectations (the number of distinct
experts a call touches) and the spec's display fields of `OperatorMetrics`, which are derived from the counts in
one function (`derived_operator_fields`) and checked against them on load. `report_id` is derived from the
content, so the same inputs give the same report, byte for byte.

Schema versions: 2 adds the report's `categories` and the spec's `OperatorMetrics` fields (`category_id`,
`calls`, `flops_tflops`, `io_tb`, `share_of_module_flops`; version 1 named the category `category`); 3 adds the
`execution` the report was traced under (`hf-eager`, `vllm`); 4 adds the bytes of each operator row by tensor role
(`kv_cache_bytes_read`, `kv_cache_bytes_written` next to `weight_bytes_read`; activation bytes are the rest) and the
report's `matmul_weight_bytes`. Older files are still read: the `report_id` is checked against the content of their
own version, then the new fields are filled in memory where they can be derived (version 1 and 2 reports were traced
as `hf-eager`); the KV-cache bytes of a report older than version 4 are unknown (None: they cannot be told from its
counts), and so is its `matmul_weight_bytes` (derivable from its module tree: `matmul_weight_bytes_of`). They keep
their version and id, and are written back in their own layout.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import pathlib
import typing
from typing import Any

import attrs
import cattrs
import yaml
from attrs import validators as v

from analyzer.categories import TARGET_OPERATORS, CategoryId, OperatorCategory
from analyzer.errors import ReportFormatError  # noqa: F401 (published here, defined there for the command line)
from analyzer.execution import EXECUTION_BEFORE_EXECUTIONS, EXECUTION_SPECS, Execution
from analyzer.fileio import (MAX_REPORT_BYTES, InputLimitError, decode_text, document_kind, one_of, parse_document,
                            quote, read_input)

SCHEMA_VERSION = 4
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)
KV_ROLES_SCHEMA_VERSION = 4  # the first version whose operator rows say which bytes are KV cache
TERA = 1e12  # decimal: 1 TFLOP = 1e12 FLOPs, 1 TB = 1e12 bytes


class Stage(str, enum.Enum):
    VISION = "vision"
    PROJECTOR = "projector"
    PREFILL = "prefill"
    DECODE = "decode"


class ViewKind(str, enum.Enum):
    NONE = ""  # decoder stages
    GLOBAL = "global"
    TILE = "tile"


def _count(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportFormatError(f"{attribute.name} must be an integer, got {quote(value)}")
    if value < 0:
        raise ReportFormatError(f"{attribute.name} must be >= 0, got {quote(value)}")


def _finite_nonneg(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ReportFormatError(f"{attribute.name} must be a finite number >= 0, got {quote(value)}")


def _text(instance, attribute, value):
    if not isinstance(value, str):
        raise ReportFormatError(f"{attribute.name} must be a string, got {quote(value)}")


def _doc(description: str | None) -> dict[str, str]:
    """Field metadata: the description the published JSON Schema gives the field."""
    return {"description": description} if description else {}


def count(description: str | None = None):
    return attrs.field(validator=_count, metadata=_doc(description))


def count_since(version: int, description: str):
    """A count that reports of `version` and later carry (required there, an integer >= 0) and older reports do
    not (None in memory, absent from their files)."""
    return attrs.field(default=None, validator=v.optional(_count),
                       metadata={**_doc(description), "since_schema_version": version})


def text(description: str | None = None):
    return attrs.field(validator=_text, metadata=_doc(description))


def _share(instance, attribute, value):
    _finite_nonneg(instance, attribute, value)
    if value > 1:
        raise ReportFormatError(f"{attribute.name} must be within [0, 1], got {quote(value)}")


def _derived_float(description: str):
    return attrs.field(validator=_finite_nonneg, metadata=_doc(description))


DERIVED_OPERATOR_FIELDS = ("calls", "flops_tflops", "io_tb", "share_of_module_flops")
# The exact counts of an operator row (OperatorMetrics) and of a stage (StageSummary), as the analyzer adds them up
# and the registry stores them (operator_metrics columns).
OPERATOR_COUNT_FIELDS = ("op_calls", "kernel_launches", "flops", "bytes_read", "bytes_written", "weight_bytes_read")
# The KV-cache part of an operator row's bytes (schema version 4 on; None in older reports, NULL in their rows).
OPERATOR_KV_FIELDS = ("kv_cache_bytes_read", "kv_cache_bytes_written")


def derived_operator_fields(op_calls: int, flops: int, bytes_read: int, bytes_written: int,
                            module_own_flops: int) -> dict[str, int | float]:
    """The spec's fields of one `OperatorMetrics`, from its exact counts and its module's own FLOPs in the stage.

    The one place they are computed; the view v_operator_metrics repeats the same arithmetic in SQL (a test holds
    the two equal): integers are converted to double first, then divided.
    """
    return {
        "calls": op_calls,
        "flops_tflops": float(flops) / TERA,
        "io_tb": float(bytes_read + bytes_written) / TERA,
        "share_of_module_flops": float(flops) / float(module_own_flops) if module_own_flops else 0.0,
    }


@attrs.frozen(kw_only=True)
class OperatorMetrics:
    """One operator category within one module and stage: the module's own ops (children excluded).

    Exact counts: `op_calls`, `kernel_launches`, `flops`, `bytes_read`, `bytes_written`, and the bytes by tensor
    role: `weight_bytes_read` (read from parameters), `kv_cache_bytes_read` and `kv_cache_bytes_written` (read from
    and written into the KV cache: the context attention reads, the new K/V a cache update writes, and under
    hf-eager the old cache DynamicCache's concatenation reads and the grown one it writes). Activation bytes are the
    rest; weights are never written. The KV fields are None in reports older than schema version 4 (unknown).
    The spec's fields, derived from them (`derived_operator_fields`):
    - `calls`: the spec's call count: aten operator calls of this category issued by the module's own code over the
      whole workload (all calls of the module, all decode steps); equal to `op_calls`.
    - `flops_tflops`: `flops` / 1e12, a count of FLOPs in units of 1e12, not a rate.
    - `io_tb`: (`bytes_read` + `bytes_written`) / 1e12, decimal terabytes of bytes moved. The spec's origin tool
      meant terabits here; this one means terabytes (1 TB = 1e12 bytes).
    - `share_of_module_flops`: this category's share of the module's own FLOPs in the stage (the sum of `flops`
      over the snapshot's operators); 0 where the module has none.
    """

    category_id: CategoryId = attrs.field(validator=v.instance_of(CategoryId), metadata=_doc(
        "the operator category (one of the report's categories)"))
    op_calls: int = count("aten operator calls (exact)")
    kernel_launches: int = count("kernel launches as eager PyTorch dispatches them (exact)")
    flops: int = count("FLOPs, 2 per multiply-accumulate (exact count)")
    bytes_read: int = count("bytes read (exact)")
    bytes_written: int = count("bytes written (exact)")
    weight_bytes_read: int = count("part of bytes_read that comes from parameters (exact)")
    kv_cache_bytes_read: int | None = count_since(4, "part of bytes_read read from the KV cache (exact); "
                                                     "absent before schema version 4")
    kv_cache_bytes_written: int | None = count_since(4, "part of bytes_written written into the KV cache (exact); "
                                                        "absent before schema version 4")
    calls: int = count("the spec's call count: aten operator calls of this category in the module's own code "
                       "over the whole workload; equal to op_calls")
    flops_tflops: float = _derived_float("flops / 1e12: a count of FLOPs in units of 1e12, not a rate")
    io_tb: float = _derived_float("(bytes_read + bytes_written) / 1e12: decimal terabytes moved (1 TB = 1e12 "
                                  "bytes); the spec's origin tool meant terabits, this one does not")
    share_of_module_flops: float = attrs.field(validator=_share, metadata=_doc(
        "this category's share of the module's own FLOPs in the stage (children excluded); 0 where the module "
        "has none"))

    def __attrs_post_init__(self) -> None:
        if (self.kv_cache_bytes_read is None) != (self.kv_cache_bytes_written is None):
            raise ReportFormatError("kv_cache_bytes_read and kv_cache_bytes_written are given together or not at all")
        if self.kv_cache_bytes_read is not None:  # (older reports are read as they were written)
            if self.weight_bytes_read + self.kv_cache_bytes_read > self.bytes_read:
                raise ReportFormatError(f"weight_bytes_read + kv_cache_bytes_read "
                                        f"({self.weight_bytes_read} + {self.kv_cache_bytes_read}) exceeds bytes_read "
                                        f"{self.bytes_read}")
            if self.kv_cache_bytes_written > self.bytes_written:
                raise ReportFormatError(f"kv_cache_bytes_written {self.kv_cache_bytes_written} exceeds bytes_written "
                                        f"{self.bytes_written}")

    @property
    def kv_roles_known(self) -> bool:
        """Whether the row says which of its bytes are KV cache (schema version 4 on)."""
        return self.kv_cache_bytes_read is not None

    @classmethod
    def from_counts(cls, category_id: CategoryId, module_own_flops: int, *, op_calls: int, kernel_launches: int,
                    flops: int, bytes_read: int, bytes_written: int, weight_bytes_read: int,
                    kv_cache_bytes_read: int | None = None,
                    kv_cache_bytes_written: int | None = None) -> "OperatorMetrics":
        return cls(category_id=category_id, op_calls=op_calls, kernel_launches=kernel_launches, flops=flops,
                   bytes_read=bytes_read, bytes_written=bytes_written, weight_bytes_read=weight_bytes_read,
                   kv_cache_bytes_read=kv_cache_bytes_read, kv_cache_bytes_written=kv_cache_bytes_written,
                   **derived_operator_fields(op_calls, flops, bytes_read, bytes_written, module_own_flops))


@attrs.frozen(kw_only=True)
class ModuleMetricsSnapshot:
    """A module's costs in one stage (and view kind), over the whole workload (all calls, all decode steps)."""

    module_path: str = text()
    stage: Stage = attrs.field(validator=v.instance_of(Stage))
    view_kind: ViewKind = attrs.field(validator=v.instance_of(ViewKind))
    forward_calls: int = count()
    operators: tuple[OperatorMetrics, ...] = attrs.field(converter=tuple)
    inclusive_flops: int = count()
    inclusive_bytes: int = count()  # read + written, the module and its descendants
    inclusive_kernel_launches: int = count()

    @property
    def own_flops(self) -> int:
        """FLOPs of the module's own ops in this stage (children excluded)."""
        return sum(op.flops for op in self.operators)

    def __attrs_post_init__(self) -> None:
        own_flops = self.own_flops
        for op in self.operators:
            expected = derived_operator_fields(op.op_calls, op.flops, op.bytes_read, op.bytes_written, own_flops)
            for name, value in expected.items():
                if getattr(op, name) != value:
                    where = "/".join(part for part in (self.stage.value, self.view_kind.value) if part)
                    raise ReportFormatError(
                        f"module {quote(self.module_path)} ({where}), category {op.category_id.value}: "
                        f"{name} {quote(getattr(op, name))} disagrees with its counts "
                        f"(expected {value!r})")


@attrs.frozen(kw_only=True)
class ModuleNode:
    """One entry of the model's `named_modules()` tree."""

    path: str = text()  # "" is the root
    name: str = text()
    class_name: str = text()
    parent_path: str | None = attrs.field(validator=v.optional(v.instance_of(str)))
    children: tuple[str, ...] = attrs.field(converter=tuple)
    depth: int = count()
    parameters: int = count()  # this module and its descendants
    parameters_self: int = count()
    weight_bytes: int = count()
    stages: tuple[Stage, ...] = attrs.field(converter=tuple)  # where it takes part, from its place in the tree


@attrs.frozen(kw_only=True)
class StageSummary:
    """Totals of one stage of the workload.

    vision and projector: one batched call over `items` views of `view_px`; prefill: one call over `items`
    sequences of `tokens_per_item` tokens; decode: `calls` steps over `items` sequences, the KV context growing
    from `context_start` to `context_end` cached tokens.
    """

    stage: Stage = attrs.field(validator=v.instance_of(Stage))
    view_kind: ViewKind = attrs.field(validator=v.instance_of(ViewKind))
    view_px: int = count()
    calls: int = count()
    items: int = count()
    tokens_per_item: int = count()
    context_start: int = count()
    context_end: int = count()
    flops: int = count()
    bytes_read: int = count()
    bytes_written: int = count()
    weight_bytes_read: int = count()
    kernel_launches: int = count()
    op_calls: int = count()
    activation_peak_bytes: int = count()
    kv_cache_bytes: int = count()  # at the end of the stage
    distinct_experts_per_call: float = attrs.field(validator=_finite_nonneg)
    # decode only: one step at batch `items` costs step_flops_base + step_flops_per_context_token x context
    step_flops_base: int = count()
    step_flops_per_context_token: int = count()
    step_bytes_base: int = count()
    step_bytes_per_context_token: int = count()


@attrs.frozen(kw_only=True)
class WorkloadRecord:
    """The workload as analyzed, with its resolved view layout."""

    profile_id: str | None = attrs.field(validator=v.optional(v.instance_of(str)))
    variant: str = text()
    mode: str = text()
    page_width_px: int = count()
    page_height_px: int = count()
    min_tiles: int | None = attrs.field(validator=v.optional(_count))
    max_tiles: int | None = attrs.field(validator=v.optional(_count))
    global_view_px: int = count()
    tile_px: int = count()
    tiles_wide: int = count()
    tiles_high: int = count()
    global_feature_tokens: int = count()
    tile_feature_tokens: int = count()
    image_placeholder_tokens: int = count()
    prompt_text_tokens: int = count()
    prefill_tokens: int = count()
    new_tokens: int = count()
    decode_steps: int = count()
    batch: int = count()
    decoding: str = text()


@attrs.frozen(kw_only=True)
class RoutingAssumption:
    experts: int = count()
    experts_per_token: int = count()
    shared_experts: int = count()
    assumption: str = text()  # "uniform": each token picks k of E experts uniformly at random
    counting_implementation: str = text()


# Module trees found sound, by identity (each held, so that its identity is not reused while it is listed), with
# their paths: the reports of a family share one tree object, checked once.
_CHECKED_TREES: dict[int, tuple[tuple, frozenset]] = {}
CHECKED_TREE_ENTRIES = 16


def _checked_tree_paths(modules: tuple) -> frozenset:
    """The paths of a module tree whose paths are distinct, whose parents exist and whose parent links reach the
    root from every node; ReportFormatError otherwise."""
    held = _CHECKED_TREES.get(id(modules))
    if held is not None and held[0] is modules:
        return held[1]
    paths = frozenset(m.path for m in modules)
    if len(paths) != len(modules):
        raise ReportFormatError("duplicate module paths")
    for node in modules:
        if node.parent_path is not None and node.parent_path not in paths:
            raise ReportFormatError(f"module {quote(node.path)} has parent {quote(node.parent_path)}, which "
                                    f"does not exist")
    # The parent links must form a tree: walking up from any node reaches the root. Each node is walked
    # once (a path already known to reach the root ends the walk), so a long chain costs linear time.
    parent = {m.path: m.parent_path for m in modules}
    rooted: set[str] = set()
    for node in modules:
        seen, current = [], node.path
        while current is not None and current not in rooted:
            if current in seen:
                raise ReportFormatError(f"module tree has a cycle through {quote(current)}")
            seen.append(current)
            current = parent[current]
        rooted.update(seen)
    if len(_CHECKED_TREES) >= CHECKED_TREE_ENTRIES:
        _CHECKED_TREES.clear()
    _CHECKED_TREES[id(modules)] = (modules, paths)
    return paths


@attrs.frozen(kw_only=True)
class AnalyticModelReport:
    schema_version: int = attrs.field(validator=_count, metadata=_doc(
        "4 for reports written by this version; version-3 files (no KV-cache bytes, no matmul_weight_bytes), "
        "version-2 files (no execution) and version-1 files (no categories, OperatorMetrics.category) are still "
        "read"))
    report_id: str = text()
    model_id: str = text()
    variant: str = text()
    transformers_model: str = text()
    analyzer_version: str = text()
    transformers_version: str = text()
    torch_version: str = text()
    dtype: str = text()
    parameters: int = count()  # instantiated module tree
    checkpoint_parameters: int = count()
    parameters_note: str = text()
    weight_bytes: int = count()
    kv_cache_bytes_per_token: int = count()
    matmul_weight_bytes: int | None = count_since(4, (
        "bytes of the parameters that matmul-category operators read as weights: linear layers (weight and bias), "
        "MoE experts, lm_head; not embeddings, norms, convolutions, the router or other parameters"))
    execution: Execution = attrs.field(validator=v.instance_of(Execution), metadata=_doc(
        "what the runtime executes, as traced: "
        + one_of(f"{e.name} ({e.description})" for e in EXECUTION_SPECS.values())))
    routing: RoutingAssumption
    workload: WorkloadRecord
    stages: tuple[StageSummary, ...] = attrs.field(converter=tuple)
    categories: tuple[OperatorCategory, ...] = attrs.field(converter=tuple, metadata=_doc(
        "the operator categories the metrics name, with the module classes and aten ops each covers"))
    modules: tuple[ModuleNode, ...] = attrs.field(converter=tuple)
    module_metrics: tuple[ModuleMetricsSnapshot, ...] = attrs.field(converter=tuple)
    notes: tuple[str, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.schema_version not in READABLE_SCHEMA_VERSIONS:
            raise ReportFormatError(f"schema_version {self.schema_version} is not supported "
                                    f"(this version reads {_readable_versions()})")
        roles = self.schema_version >= KV_ROLES_SCHEMA_VERSION
        operators = [op for snapshot in self.module_metrics for op in snapshot.operators]
        # A quick pass over the rows (a report has thousands), then the slow one that names the value refused.
        absent = [op.kv_cache_bytes_read for op in operators].count(None) + \
            [op.kv_cache_bytes_written for op in operators].count(None) + (self.matmul_weight_bytes is None)
        if absent != (0 if roles else 2 * len(operators) + 1):
            self._refuse_kv_fields(roles)
        if self.schema_version <= 2 and self.execution is not _OLDER_VERSIONS_EXECUTION:
            raise ReportFormatError(f"a schema_version {self.schema_version} report can only record execution "
                                    f"{_OLDER_VERSIONS_EXECUTION.value!r}")
        listed = [c.category_id for c in self.categories]
        if len(set(listed)) != len(listed):
            raise ReportFormatError("duplicate category ids in categories")
        paths = _checked_tree_paths(self.modules)
        unknown = {snapshot.module_path for snapshot in self.module_metrics} - paths
        if unknown:
            first = next(snapshot for snapshot in self.module_metrics if snapshot.module_path in unknown)
            raise ReportFormatError(f"metrics refer to unknown module {quote(first.module_path)}")
        if {op.category_id for op in operators} - set(listed):
            for snapshot in self.module_metrics:
                for op in snapshot.operators:
                    if op.category_id not in listed:
                        raise ReportFormatError(f"category {op.category_id.value!r} of module "
                                                f"{quote(snapshot.module_path)} is not in the report's categories")

    def _refuse_kv_fields(self, roles: bool) -> None:
        """The first KV-role value present where the schema version has none, or absent where it requires one."""
        # (the name is spelled out only for the value refused: a report has thousands of rows)
        for where, name, value in [(None, "matmul_weight_bytes", self.matmul_weight_bytes),
                                   *((snapshot, name, getattr(op, name))
                                     for snapshot in self.module_metrics for op in snapshot.operators
                                     for name in OPERATOR_KV_FIELDS)]:
            if (value is None) == roles:
                if where is not None:
                    name = f"{name} of module {quote(where.module_path)}"
                if roles:
                    raise ReportFormatError(f"missing {name} (required from schema_version "
                                            f"{KV_ROLES_SCHEMA_VERSION})")
                raise ReportFormatError(f"{name} is not part of a schema_version {self.schema_version} report")

    # -- derived ----------------------------------------------------------------------------------------------
    @property
    def total_flops(self) -> int:
        return sum(s.flops for s in self.stages)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes_read + s.bytes_written for s in self.stages)

    @property
    def kv_roles_known(self) -> bool:
        """Whether the operator rows say which bytes are KV cache (schema version 4 on); older reports must be
        analyzed again to price an fp8 KV cache."""
        return self.schema_version >= KV_ROLES_SCHEMA_VERSION


def _is_matmul_weight_module(class_name: str, ancestor_classes: tuple[str, ...]) -> bool:
    if TARGET_OPERATORS.category_for("linear", (*ancestor_classes, class_name)) is not CategoryId.MATMUL:
        return False  # e.g. a projection inside an MoE router is routing work
    return class_name == "Linear" or class_name.endswith("Experts")


def matmul_weight_bytes_of(modules) -> int:
    """Bytes of the parameters matmul-category operators read as weights, from a module tree (ModuleNode records):
    the parameters of `Linear` modules (weight and bias) and of MoE expert modules (class name ending in `Experts`),
    outside modules whose ops another category takes (routers, norms, embeddings). Exact for a report of any
    version, since every report carries its module tree."""
    modules = list(modules)
    by_path = {node.path: node for node in modules}
    total = 0
    for node in modules:
        ancestors = []
        parent = node.parent_path
        while parent is not None and parent in by_path:
            ancestors.append(by_path[parent].class_name)
            parent = by_path[parent].parent_path
        if _is_matmul_weight_module(node.class_name, tuple(reversed(ancestors))):
            total += node.weight_bytes
    return total


# -- serialization ----------------------------------------------------------------------------------------------

def _readable_versions() -> str:
    return " and ".join(str(version) for version in READABLE_SCHEMA_VERSIONS)


def _enum_structure_hook(enum_type: type[enum.Enum], what: str):
    """A cattrs hook that refuses a value outside `enum_type` with one line naming the known ones."""

    def structure(value: Any, _type):
        try:
            return enum_type(value)
        except ValueError:
            known = ", ".join(member.value for member in enum_type)
            raise ReportFormatError(f"unknown {what} {quote(value)} (known: {known})") from None

    return structure


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(tuple, list)
    for enum_type in (Stage, ViewKind, CategoryId, Execution):
        converter.register_unstructure_hook(enum_type, lambda member: member.value)
    converter.register_structure_hook(CategoryId, _enum_structure_hook(CategoryId, "category id"))
    converter.register_structure_hook(Execution, _enum_structure_hook(Execution, "execution"))
    return converter


CONVERTER = make_converter()


def operator_categories() -> tuple[OperatorCategory, ...]:
    """The categories every new report carries, generated from `TargetOperatorList`."""
    return TARGET_OPERATORS.categories()


def report_to_dict(report: AnalyticModelReport) -> dict[str, Any]:
    """The report as a mapping, in the layout of its own schema_version."""
    data = CONVERTER.unstructure(report)
    if report.schema_version < KV_ROLES_SCHEMA_VERSION:
        _to_version_3_layout(data)
    if report.schema_version <= 2:
        for name in _VERSION_3_REPORT_FIELDS:
            data.pop(name)
    if report.schema_version == 1:
        _to_version_1_layout(data)
    return data


# -- schema version 3 -------------------------------------------------------------------------------------------

def _to_version_3_layout(data: dict[str, Any]) -> None:
    """Version 4 -> version 3 layout, in place: without the fields version 4 added."""
    data.pop("matmul_weight_bytes")
    for snapshot in data["module_metrics"]:
        for op in snapshot["operators"]:
            for name in OPERATOR_KV_FIELDS:
                op.pop(name)


# -- schema version 2 -------------------------------------------------------------------------------------------

_VERSION_3_REPORT_FIELDS = ("execution",)
# What version 1 and 2 reports were traced under.
_OLDER_VERSIONS_EXECUTION = EXECUTION_BEFORE_EXECUTIONS


def _upgrade_version_2(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 or -2 mapping with the version-3 fields filled."""
    for name in _VERSION_3_REPORT_FIELDS:
        if name in data:
            raise ReportFormatError(f"field {name!r} is not part of a schema_version {data['schema_version']} report")
    return {**data, "execution": _OLDER_VERSIONS_EXECUTION.value}


# -- schema version 1 -------------------------------------------------------------------------------------------

_VERSION_2_REPORT_FIELDS = ("categories",)


def _to_version_1_layout(data: dict[str, Any]) -> None:
    """Version 2 -> version 1 layout, in place: what a version-1 report's content (and its id) covers."""
    for name in _VERSION_2_REPORT_FIELDS:
        data.pop(name)
    for snapshot in data["module_metrics"]:
        operators = []
        for op in snapshot["operators"]:
            v1 = {"category": op["category_id"]}
            v1.update((k, value) for k, value in op.items() if k != "category_id" and k not in DERIVED_OPERATOR_FIELDS)
            operators.append(v1)
        snapshot["operators"] = operators


def _as_count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _upgrade_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 mapping in the version-2 layout: derived fields computed, today's categories listed.

    Only reshapes: the counts are validated when the result is structured (a bad count derives from 0 here and
    is reported by its own validator).
    """
    for name in _VERSION_2_REPORT_FIELDS:
        if name in data:
            raise ReportFormatError(f"field {name!r} is not part of a schema_version 1 report")
    upgraded = dict(data)
    upgraded["categories"] = [CONVERTER.unstructure(category) for category in operator_categories()]
    snapshots = data.get("module_metrics")
    if not isinstance(snapshots, list):
        return upgraded
    new_snapshots = []
    for snapshot in snapshots:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("operators"), list):
            new_snapshots.append(snapshot)
            continue
        operators = snapshot["operators"]
        if not all(isinstance(op, dict) for op in operators):
            new_snapshots.append(snapshot)
            continue
        own_flops = sum(_as_count(op.get("flops")) for op in operators)
        new_operators = []
        for op in operators:
            for name in ("category_id", *DERIVED_OPERATOR_FIELDS):
                if name in op:
                    raise ReportFormatError(f"field {name!r} is not part of a schema_version 1 report")
            new = {("category_id" if k == "category" else k): value for k, value in op.items()}
            new.update(derived_operator_fields(*(_as_count(op.get(k)) for k in ("op_calls", "flops", "bytes_read",
                                                                                 "bytes_written")), own_flops))
            new_operators.append(new)
        new_snapshots.append({**snapshot, "operators": new_operators})
    upgraded["module_metrics"] = new_snapshots
    return upgraded


def _describe(exc: BaseException) -> str:
    """First concrete reason inside a cattrs exception group."""
    if isinstance(exc, BaseExceptionGroup):
        notes = getattr(exc, "__notes__", [])
        for sub in exc.exceptions:
            inner = _describe(sub)
            sub_notes = getattr(sub, "__notes__", [])
            where = f" ({sub_notes[0]})" if sub_notes else ""
            return inner + where if inner else (notes[0] if notes else str(exc))
        return str(exc)
    if isinstance(exc, KeyError):
        return f"missing required field {exc.args[0]!r}"
    return str(exc)


def report_from_dict(data: Any) -> AnalyticModelReport:
    """Structure and validate a report mapping of any readable schema version; the id must match the content."""
    if not isinstance(data, dict):
        raise ReportFormatError("a report must be a mapping")
    version = data.get("schema_version")
    kind = document_kind(data)
    if "schema_version" not in data and kind is not None and not kind[0].startswith("a report"):
        raise ReportFormatError(f"not a report: this is {kind[0]} (for {kind[1]})")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise ReportFormatError(f"schema_version {quote(version)} is not supported "
                                f"(this version reads {_readable_versions()})")
    if version == 1:
        data = _upgrade_version_1(data)
    if version <= 2:
        data = _upgrade_version_2(data)
    try:
        report = CONVERTER.structure(data, AnalyticModelReport)
    except ReportFormatError:
        raise
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise ReportFormatError(_describe(exc)) from None
    expected = compute_report_id(report)
    if report.report_id != expected:
        raise ReportFormatError(f"report_id {quote(report.report_id)} does not match its content ({expected})")
    return report


def upgrade_report(report: AnalyticModelReport) -> AnalyticModelReport:
    """The same content at the newest schema version its counts can fill, under the id of its new content: the
    current version for a report that says which bytes are KV cache; version 3 for an older report (the KV-cache
    part of its bytes cannot be told from its counts: analyze it again for version 4)."""
    version = SCHEMA_VERSION if report.kv_roles_known else KV_ROLES_SCHEMA_VERSION - 1
    return with_report_id(attrs.evolve(report, schema_version=version))


def _canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def compute_report_id(report: AnalyticModelReport) -> str:
    data = report_to_dict(report)
    data.pop("report_id")
    return "dsocr-" + hashlib.sha256(_canonical_json(data).encode()).hexdigest()[:24]


def with_report_id(report: AnalyticModelReport) -> AnalyticModelReport:
    return attrs.evolve(report, report_id=compute_report_id(report))


def canonical_fragment(value: Any, unstructure_as: Any) -> str:
    """The canonical JSON of one part of a current-version report (a field's value, a list of snapshots) of the
    declared type `unstructure_as`, as the report's canonical JSON writes it."""
    return _canonical_json(CONVERTER.unstructure(value, unstructure_as=unstructure_as))


@functools.cache
def report_field_types() -> dict[str, Any]:
    """The declared type of each field of AnalyticModelReport: what the report's unstructuring goes by."""
    return typing.get_type_hints(AnalyticModelReport)


# The keys of a snapshot and of an operator row in the canonical JSON (sorted, as json.dumps(sort_keys=True) writes
# them); snapshots_json writes them by hand, so that a stage of hundreds of rows is encoded without unstructuring.
_SNAPSHOT_KEYS = ("forward_calls", "inclusive_bytes", "inclusive_flops", "inclusive_kernel_launches", "module_path",
                  "operators", "stage", "view_kind")
_OPERATOR_KEYS = ("bytes_read", "bytes_written", "calls", "category_id", "flops", "flops_tflops", "io_tb",
                  "kernel_launches", "kv_cache_bytes_read", "kv_cache_bytes_written", "op_calls",
                  "share_of_module_flops", "weight_bytes_read")
if (_SNAPSHOT_KEYS != tuple(sorted(f.name for f in attrs.fields(ModuleMetricsSnapshot)))
        or _OPERATOR_KEYS != tuple(sorted(f.name for f in attrs.fields(OperatorMetrics)))):
    raise ImportError("snapshots_json does not write the fields ModuleMetricsSnapshot and OperatorMetrics have")


@functools.lru_cache(maxsize=16384)
def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _operator_json(op: OperatorMetrics) -> str:
    return (f'{{"bytes_read":{op.bytes_read:d},"bytes_written":{op.bytes_written:d},"calls":{op.calls:d},'
            f'"category_id":{_json_string(op.category_id.value)},"flops":{op.flops:d},'
            f'"flops_tflops":{float.__repr__(op.flops_tflops)},"io_tb":{float.__repr__(op.io_tb)},'
            f'"kernel_launches":{op.kernel_launches:d},"kv_cache_bytes_read":{op.kv_cache_bytes_read:d},'
            f'"kv_cache_bytes_written":{op.kv_cache_bytes_written:d},"op_calls":{op.op_calls:d},'
            f'"share_of_module_flops":{float.__repr__(op.share_of_module_flops)},'
            f'"weight_bytes_read":{op.weight_bytes_read:d}}}')


def snapshots_json(snapshots) -> str:
    """canonical_fragment(snapshots, list[ModuleMetricsSnapshot]) of current-version snapshots (every operator row
    with its KV-cache bytes), written directly: integers as int.__repr__ and floats as float.__repr__ write them,
    as json's encoder does; strings through json.dumps. Snapshots of an older version go through
    canonical_fragment."""
    try:
        return "[" + ",".join(
            f'{{"forward_calls":{s.forward_calls:d},"inclusive_bytes":{s.inclusive_bytes:d},'
            f'"inclusive_flops":{s.inclusive_flops:d},"inclusive_kernel_launches":{s.inclusive_kernel_launches:d},'
            f'"module_path":{_json_string(s.module_path)},"operators":[{",".join(map(_operator_json, s.operators))}],'
            f'"stage":{_json_string(s.stage.value)},"view_kind":{_json_string(s.view_kind.value)}}}'
            for s in snapshots) + "]"
    except (TypeError, ValueError):  # a None (older version) where an integer is written, a float that is not one
        return canonical_fragment(list(snapshots), list[ModuleMetricsSnapshot])


def _json_format_text(text: str) -> str:
    """A JSON string as literal text of a %-format."""
    return _json_string(text).replace("%", "%%")


def snapshots_json_format(stage: Stage, view_kind: ViewKind,
                          layout: list[tuple[str, list[CategoryId]]]) -> str:
    """The %-format of snapshots_json of one stage's snapshots whose module paths and operator categories are
    `layout` (in order), the counts left as conversions: per snapshot its forward_calls, inclusive_bytes,
    inclusive_flops and inclusive_kernel_launches, then per operator row its bytes_read, bytes_written, calls,
    flops, flops_tflops, io_tb, kernel_launches, kv_cache_bytes_read, kv_cache_bytes_written, op_calls,
    share_of_module_flops and weight_bytes_read (the keys' order). Integers are written by %d and floats by %r,
    which write what int.__repr__ and float.__repr__ do: the same text as snapshots_json."""
    tail = f',"stage":{_json_format_text(stage.value)},"view_kind":{_json_format_text(view_kind.value)}}}'
    snapshots = []
    for path, categories in layout:
        operators = ",".join(
            '{"bytes_read":%d,"bytes_written":%d,"calls":%d,"category_id":' + _json_format_text(category.value)
            + ',"flops":%d,"flops_tflops":%r,"io_tb":%r,"kernel_launches":%d,"kv_cache_bytes_read":%d,'
              '"kv_cache_bytes_written":%d,"op_calls":%d,"share_of_module_flops":%r,"weight_bytes_read":%d}'
            for category in categories)
        snapshots.append('{"forward_calls":%d,"inclusive_bytes":%d,"inclusive_flops":%d,'
                         '"inclusive_kernel_launches":%d,"module_path":' + _json_format_text(path)
                         + ',"operators":[' + operators + "]" + tail)
    return "[" + ",".join(snapshots) + "]"


def _unchecked_maker(cls: type):
    """A maker of `cls` instances from their field values, positional in declaration order, that runs neither
    validators nor __attrs_post_init__: for rows whose checks the caller made on whole columns at once
    (analyzer/stage_layout.py), a stage of hundreds of rows at a time. Written out field by field, as attrs writes
    its own __init__, so that a row costs one call."""
    names = [field.name for field in attrs.fields(cls)]
    scope = {"new": object.__new__, "cls": cls, **{f"set_{name}": getattr(cls, name).__set__ for name in names}}
    body = "".join(f"    set_{name}(instance, {name})\n" for name in names)
    exec(f"def make({', '.join(names)}):\n    instance = new(cls)\n{body}    return instance\n", scope)
    return scope["make"]


# operator_metrics_unchecked(category_id, op_calls, kernel_launches, flops, bytes_read, bytes_written,
# weight_bytes_read, kv_cache_bytes_read, kv_cache_bytes_written, calls, flops_tflops, io_tb, share_of_module_flops)
operator_metrics_unchecked = _unchecked_maker(OperatorMetrics)
# module_snapshot_unchecked(module_path, stage, view_kind, forward_calls, operators (a tuple), inclusive_flops,
# inclusive_bytes, inclusive_kernel_launches)
module_snapshot_unchecked = _unchecked_maker(ModuleMetricsSnapshot)


def report_id_of_parts(fields: dict[str, Any], encoded: dict[str, list[bytes]]) -> str:
    """The `compute_report_id` of the current-version report whose fields (report_id aside) are `fields` and
    `encoded`: `encoded` holds fields already written as canonical JSON, in pieces (bytes) hashed one after another,
    such as the module tree and the module metrics of stages that many reports share, so that they are neither
    unstructured and encoded again for every report nor joined into one text of megabytes.

    The same text as `compute_report_id` hashes: json.dumps with sort_keys and separators (",", ":") writes a
    mapping as "{" + the "key":value pairs in sorted key order, joined by "," + "}", and a current-version report's
    mapping is its fields, each unstructured as its declared type (report_to_dict changes nothing at
    SCHEMA_VERSION)."""
    types = report_field_types()
    if fields.keys() & encoded.keys() or fields.keys() | encoded.keys() != types.keys() - {"report_id"}:
        raise ValueError("every field but report_id is given, once")
    digest = hashlib.sha256(b"{")
    for index, name in enumerate(sorted(fields.keys() | encoded.keys())):
        digest.update(f'{"," if index else ""}{_canonical_json(name)}:'.encode())
        if name in encoded:
            for piece in encoded[name]:
                digest.update(piece)
        else:
            digest.update(canonical_fragment(fields[name], types[name]).encode())
    digest.update(b"}")
    return "dsocr-" + digest.hexdigest()[:24]


def dumps_json(report: AnalyticModelReport) -> str:
    return json.dumps(report_to_dict(report), indent=1, sort_keys=False, allow_nan=False) + "\n"


def dumps_yaml(report: AnalyticModelReport) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(report_to_dict(report), Dumper=dumper, sort_keys=False, width=120, allow_unicode=False)


def format_for_path(path: str | pathlib.Path) -> str:
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ReportFormatError(f"{path}: unknown report format {suffix or '(none)'}; use .json, .yaml or .yml")


def dumps(report: AnalyticModelReport, fmt: str) -> str:
    return dumps_json(report) if fmt == "json" else dumps_yaml(report)


def write_report(report: AnalyticModelReport, path: str | pathlib.Path) -> None:
    """Write atomically: a partly written report never appears under the target name."""
    from analyzer.fileio import write_text_atomic

    write_text_atomic(path, dumps(report, format_for_path(path)))


def loads(text_content: str, fmt: str) -> AnalyticModelReport:
    """A report from JSON or YAML text, read within the input limits (analyzer.fileio); YAML aliases are
    refused (the analyzer never writes them)."""
    try:
        data = parse_document(text_content, fmt)
    except InputLimitError as exc:
        raise ReportFormatError(exc.located(None)) from None
    return report_from_dict(data)


def load_report(path: str | pathlib.Path | None, fmt: str | None = None) -> AnalyticModelReport:
    """A report file (None: standard input, JSON when it starts with "{" or "[", else YAML), at most
    MAX_REPORT_BYTES."""
    if path is not None:
        path = pathlib.Path(path)
        fmt = fmt or format_for_path(path)
    try:
        raw = read_input(path, MAX_REPORT_BYTES, "file" if path is not None else "input")
        if not raw.strip():
            raise InputLimitError("empty file" if path is not None else "empty input")
        content = decode_text(raw)
    except InputLimitError as exc:
        raise ReportFormatError(str(exc)) from None
    if fmt is None:
        fmt = "json" if content.lstrip()[:1] in ("{", "[") else "yaml"
    return loads(content, fmt)
