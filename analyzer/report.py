"""The `AnalyticModelReport` and its parts (attrs), with exact JSON/YAML round-trips through cattrs.

Every count is an integer (FLOPs, bytes, launches, calls); the only floats are expectations such as the number
of distinct experts a call touches. `report_id` is derived from the content, so the same inputs give the same
report, byte for byte.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import pathlib
from typing import Any

import attrs
import cattrs
import yaml
from attrs import validators as v

from analyzer.categories import OperatorCategory

SCHEMA_VERSION = 1


class ReportFormatError(ValueError):
    """A report file or mapping that is not a valid AnalyticModelReport."""


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
        raise ReportFormatError(f"{attribute.name} must be an integer, got {value!r}")
    if value < 0:
        raise ReportFormatError(f"{attribute.name} must be >= 0, got {value}")


def _finite_nonneg(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ReportFormatError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _text(instance, attribute, value):
    if not isinstance(value, str):
        raise ReportFormatError(f"{attribute.name} must be a string, got {value!r}")


count = lambda: attrs.field(validator=_count)  # noqa: E731
text = lambda: attrs.field(validator=_text)  # noqa: E731


@attrs.frozen(kw_only=True)
class OperatorMetrics:
    """One operator category within one module and stage: the module's own ops (children excluded)."""

    category: OperatorCategory = attrs.field(validator=v.instance_of(OperatorCategory))
    op_calls: int = count()
    kernel_launches: int = count()
    flops: int = count()
    bytes_read: int = count()
    bytes_written: int = count()
    weight_bytes_read: int = count()  # part of bytes_read that comes from parameters


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


@attrs.frozen(kw_only=True)
class AnalyticModelReport:
    schema_version: int = attrs.field(validator=_count)
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
    routing: RoutingAssumption
    workload: WorkloadRecord
    stages: tuple[StageSummary, ...] = attrs.field(converter=tuple)
    modules: tuple[ModuleNode, ...] = attrs.field(converter=tuple)
    module_metrics: tuple[ModuleMetricsSnapshot, ...] = attrs.field(converter=tuple)
    notes: tuple[str, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ReportFormatError(
                f"schema_version {self.schema_version} is not supported (this version reads {SCHEMA_VERSION})")
        paths = {m.path for m in self.modules}
        if len(paths) != len(self.modules):
            raise ReportFormatError("duplicate module paths")
        for node in self.modules:
            if node.parent_path is not None and node.parent_path not in paths:
                raise ReportFormatError(f"module {node.path!r} has parent {node.parent_path!r}, which does not exist")
        # The parent links must form a tree: walking up from any node reaches the root.
        parent = {m.path: m.parent_path for m in self.modules}
        for node in self.modules:
            seen, current = set(), node.path
            while current is not None:
                if current in seen:
                    raise ReportFormatError(f"module tree has a cycle through {current!r}")
                seen.add(current)
                current = parent[current]
        for snapshot in self.module_metrics:
            if snapshot.module_path not in paths:
                raise ReportFormatError(f"metrics refer to unknown module {snapshot.module_path!r}")

    # -- derived ----------------------------------------------------------------------------------------------
    @property
    def total_flops(self) -> int:
        return sum(s.flops for s in self.stages)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes_read + s.bytes_written for s in self.stages)


# -- serialization ----------------------------------------------------------------------------------------------

def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(tuple, list)
    for enum_type in (Stage, ViewKind, OperatorCategory):
        converter.register_unstructure_hook(enum_type, lambda member: member.value)
    return converter


CONVERTER = make_converter()


def report_to_dict(report: AnalyticModelReport) -> dict[str, Any]:
    return CONVERTER.unstructure(report)


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
    if not isinstance(data, dict):
        raise ReportFormatError("a report must be a mapping")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportFormatError(f"schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})")
    try:
        report = CONVERTER.structure(data, AnalyticModelReport)
    except ReportFormatError:
        raise
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise ReportFormatError(_describe(exc)) from None
    expected = compute_report_id(report)
    if report.report_id != expected:
        raise ReportFormatError(f"report_id {report.report_id!r} does not match its content ({expected})")
    return report


def _canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def compute_report_id(report: AnalyticModelReport) -> str:
    data = report_to_dict(report)
    data.pop("report_id")
    return "dsocr-" + hashlib.sha256(_canonical_json(data).encode()).hexdigest()[:24]


def with_report_id(report: AnalyticModelReport) -> AnalyticModelReport:
    return attrs.evolve(report, report_id=compute_report_id(report))


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
    try:
        if fmt == "json":
            data = json.loads(text_content, parse_constant=_reject_constant)
        else:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            data = yaml.load(text_content, Loader=loader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ReportFormatError(f"malformed {fmt.upper()}: {str(exc).splitlines()[0]}") from None
    _reject_non_finite(data)
    return report_from_dict(data)


def _reject_constant(name: str):
    raise ReportFormatError(f"non-finite number {name} in report")


def _reject_non_finite(data: Any) -> None:
    if isinstance(data, float) and not math.isfinite(data):
        raise ReportFormatError(f"non-finite number {data} in report")
    if isinstance(data, dict):
        for value in data.values():
            _reject_non_finite(value)
    elif isinstance(data, list):
        for value in data:
            _reject_non_finite(value)


def load_report(path: str | pathlib.Path) -> AnalyticModelReport:
    path = pathlib.Path(path)
    fmt = format_for_path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise ReportFormatError("empty file")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ReportFormatError("not UTF-8 text") from None
    return loads(content, fmt)
