"""The seed's public contract: request and summary models (attrs), cattrs hooks, and how a summary is priced.

A summary prices a report on one GPU under one runtime profile (default: h200 under the shipped profile of the
report's own execution, `hf-eager` or `vllm`) through the registry's views; measured_total_time_ms and predicted_vs_measured_ratio are filled
when the registry holds an end-to-end measurement of the same workload on that GPU and runtime.
"""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
from attrs import validators as v

from analyzer.architecture import MODEL_IDS, variant_for_model_id
from analyzer.errors import AnalyzerInputError
from analyzer.report import AnalyticModelReport, report_from_dict
from analyzer.workload import profile_names
from registry.pricing.points import DEFAULT_SUMMARY_HARDWARE as DEFAULT_HARDWARE

# A summary's runtime when it names none: None stands for the shipped runtime profile of the report's own
# execution (its entry's shipped_runtime in analyzer/execution.py).
RUNTIME_OF_REPORT_EXECUTION = None


def _known_model(instance, attribute, value):
    if value not in MODEL_IDS:
        raise AnalyzerInputError(f"unknown model id {value!r}; expected one of: {', '.join(sorted(MODEL_IDS))}")


def _known_profile(instance, attribute, value):
    if value not in profile_names():
        raise AnalyzerInputError(f"unknown workload profile {value!r}; known: {', '.join(profile_names())}")


@attrs.frozen(kw_only=True)
class DeepSeekOCRAnalyticRequest:
    model_id: str = attrs.field(validator=_known_model)
    # None: derived from model_id
    model_variant: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    workload_profile_id: str = attrs.field(validator=_known_profile)
    profile_run_id: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    force_rebuild: bool = attrs.field(default=False, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        variant = variant_for_model_id(self.model_id)
        if self.model_variant is None:
            object.__setattr__(self, "model_variant", variant)
        elif self.model_variant != variant:
            raise AnalyzerInputError(f"model_variant {self.model_variant!r} does not match {self.model_id} ({variant})")


@attrs.frozen(kw_only=True)
class TopModule:
    module_id: str  # the module's path in named_modules() ("" is the root)
    name: str
    stage: str
    share_of_model_time: float  # of the summed predicted kernel + launch time of every module
    total_time_ms: float
    total_flops_tflops: float  # a count: 1 TFLOP = 1e12 FLOPs
    memory_activations_gb: float  # activation bytes the module writes, 1 GB = 1e9 bytes


@attrs.frozen(kw_only=True)
class DeepSeekOCRAnalyticReportSummary:
    report_id: str
    model_variant: str
    workload_profile_id: str | None
    predicted_total_time_ms: float
    measured_total_time_ms: float | None = None
    predicted_vs_measured_ratio: float | None = None
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    top_modules: tuple[TopModule, ...] = attrs.field(default=(), converter=tuple)


def summarize(registry, report_id: str, hardware: str = DEFAULT_HARDWARE,
              runtime: str | None = RUNTIME_OF_REPORT_EXECUTION, top: int = 5) -> DeepSeekOCRAnalyticReportSummary:
    """Price a stored report through the views and shape the answer as the summary contract. `runtime` None: the
    shipped profile of the report's execution (hf-eager or vllm); a runtime of another execution is refused."""
    from analyzer.execution import execution_spec
    from registry.store.measurements import resolve
    from registry.pricing.points import (SCRATCH_SCENARIO_ID, PointKey, ScenarioRecord, measured_end_to_end_ms,
                                         read_module_times, read_points, record_scenario, scratch_pricing)
    from registry.store.analyzed import stored_report_key

    # priced in temporary copies of the scenario tables, rolled back: a summary reads, it records nothing
    with scratch_pricing(registry) as conn:
        report_key, variant, profile_id, execution = stored_report_key(conn, report_id)
        hardware_id, runtime_id, runtime_label = resolve(conn, hardware,
                                                         runtime or execution_spec(execution).shipped_runtime)
        scenario_id = record_scenario(
            conn, ScenarioRecord(name=f"summary:{report_id}", kind="summary",
                                 definition={"summary": report_id, "hardware": hardware, "runtime": runtime_label}),
            [PointKey(report_key, hardware_id, runtime_id)], scenario_id=SCRATCH_SCENARIO_ID).scenario_id
        point = read_points(conn, scenario_id)[0]
        predicted_s = point["page_latency_s"]
        modules = read_module_times(conn, scenario_id)
    measured = measured_end_to_end_ms(registry, report_key, hardware_id, runtime_id)
    # SQL sums of floats may differ in their last bits from run to run (parallel aggregation): round to 1 ns so
    # that the same report gives the same summary, ties included.
    modules = [(path, name, stage, round(float(seconds), 12), flops, written)
               for path, name, stage, seconds, flops, written in modules]
    total_module_s = sum(m[3] for m in modules) or 1.0
    ranked = sorted(modules, key=lambda m: (-m[3], m[0], m[2]))[:top]
    predicted_ms = round(1000.0 * float(predicted_s), 6)
    cost = (f"; ${point['usd_per_1000_pages']:.4f} per 1,000 pages at ${point['usd_per_hour']:g} per GPU-hour"
            if point["usd_per_1000_pages"] is not None else "")
    notes = [f"priced on {hardware} under {runtime_label} by the registry views (v_point_summary_all, kind summary)",
             f"efficiencies {point['efficiency_source']}; {point['weights_dtype']} weights, "
             f"{point['kv_cache_dtype']} KV cache{cost}",
             "share_of_model_time: of the summed operator time of every module (each operator's largest of "
             "compute, memory and dispatch time; host time outside operators excluded)"]
    if measured is None:
        notes.append(f"no end-to-end measurement of this workload on {hardware} under {runtime_label}")
    return DeepSeekOCRAnalyticReportSummary(
        report_id=report_id, model_variant=variant, workload_profile_id=profile_id,
        predicted_total_time_ms=predicted_ms, measured_total_time_ms=measured,
        predicted_vs_measured_ratio=round(predicted_ms / measured, 9) if measured else None,
        notes=tuple(notes),
        top_modules=tuple(TopModule(module_id=path, name=name or "(root)", stage=stage,
                                    share_of_model_time=round(seconds / total_module_s, 9),
                                    total_time_ms=round(1000.0 * seconds, 6), total_flops_tflops=float(flops) / 1e12,
                                    memory_activations_gb=float(written) / 1e9)
                          for path, name, stage, seconds, flops, written in ranked))


def summarize_report(report: AnalyticModelReport, hardware: str = DEFAULT_HARDWARE,
                     runtime: str | None = RUNTIME_OF_REPORT_EXECUTION) -> DeepSeekOCRAnalyticReportSummary:
    """The summary of a report that is not in any registry: priced in a private in-memory registry."""
    from registry.store.analyzed import private_registry

    with private_registry(report, "summary") as (registry, _):
        return summarize(registry, report.report_id, hardware, runtime)


def summarize_reference(registry, reference: str, hardware: str = DEFAULT_HARDWARE,
                        runtime: str | None = RUNTIME_OF_REPORT_EXECUTION,
                        top: int = 5) -> DeepSeekOCRAnalyticReportSummary:
    """The summary of a stored report (by id) or of a report file, which is stored first (idempotent)."""
    import pathlib

    from analyzer.fileio import source_name, unreadable
    from analyzer.report import ReportFormatError, load_report
    from registry.store.db import RegistryError
    from registry.store.ingest import write_report
    from registry.store.stored import report_is_stored

    path = pathlib.Path(reference)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
        try:
            report = load_report(path)
        except OSError as exc:
            raise RegistryError(unreadable(source_name(reference), exc)) from None
        except ReportFormatError as exc:  # named with its file, as ingest names it
            raise ReportFormatError(f"{source_name(reference)}: {exc}") from None
        stored = report_is_stored(registry, report.report_id)
        if not stored and registry.read_only():
            raise RegistryError(f"{reference}: report {report.report_id} is not in the registry, which this "
                                "connection may only read: ingest it first with a role "
                                "that can write")
        if not stored:
            write_report(registry, report, str(path))
        reference = report.report_id
    return summarize(registry, reference, hardware, runtime, top=top)


def request_workload(request: DeepSeekOCRAnalyticRequest):
    """The workload a request names: its profile, for its model variant."""
    from analyzer.workload import load_profile

    return load_profile(request.workload_profile_id, variant=request.model_variant)


def request_key(request: DeepSeekOCRAnalyticRequest) -> str:
    """What makes two requests ask for the same report: the workload (every field of the resolved profile) and the
    analyzer's version. `force_rebuild` and the free-form `profile_run_id` are not part of it."""
    import hashlib
    import json

    from analyzer import __version__
    from analyzer.workload import workload_record  # not analyzer.analysis: keying a request imports no torch

    identity = {"model_id": request.model_id, "workload": plain(workload_record(request_workload(request))),
                "analyzer_version": __version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def stored_report_id(registry, request: DeepSeekOCRAnalyticRequest) -> str | None:
    """The id of the report the registry already holds for this request (None: none stored)."""
    from registry.store.analyzed import find_report, report_id_of

    workload = request_workload(request)
    with registry.begin() as conn:
        key = find_report(conn, workload)
        return report_id_of(conn, key) if key is not None else None


def analyze_request(request: DeepSeekOCRAnalyticRequest) -> AnalyticModelReport:
    """The analysis a request asks for (no registry: this is the part that takes seconds)."""
    from analyzer.analysis import analyze

    return analyze(request_workload(request))


def store_request_report(registry, request: DeepSeekOCRAnalyticRequest, report: AnalyticModelReport) -> None:
    """Store the report of a request (one transaction; rows replaced when `force_rebuild`)."""
    from registry.store.ingest import write_report

    write_report(registry, report, f"python -m analyzer {request.workload_profile_id}", force=request.force_rebuild)


def run_request(request: DeepSeekOCRAnalyticRequest, registry=None) -> tuple[AnalyticModelReport, bool]:
    """The report a request asks for, and whether it was reused: with a registry, a report already stored for the
    same workload is rebuilt from its rows unless `force_rebuild`; a new report is stored there."""
    if registry is None:
        return analyze_request(request), False
    from registry.store.stored import load_stored_report

    if not request.force_rebuild:
        stored_id = stored_report_id(registry, request)
        if stored_id is not None:
            return load_stored_report(registry, stored_id), True
    report = analyze_request(request)
    store_request_report(registry, request, report)
    return report, False


def register_deepseek_ocr_hooks(converter: cattrs.Converter) -> cattrs.Converter:
    """Hooks for the contract types. A summary structures from a summary mapping, or from a full report (object or
    mapping), which it prices with the default GPU and runtime. No hook touches how a full report serializes."""

    def unstructure_plain(obj) -> dict[str, Any]:
        return {f.name: plain(getattr(obj, f.name)) for f in attrs.fields(type(obj))}

    def structure_summary(data, _type) -> DeepSeekOCRAnalyticReportSummary:
        if isinstance(data, AnalyticModelReport):
            return summarize_report(data)
        if isinstance(data, dict) and "schema_version" in data and "module_metrics" in data:
            return summarize_report(report_from_dict(data))
        if not isinstance(data, dict):
            raise AnalyzerInputError("a summary must be a mapping")
        fields = dict(data)
        fields["top_modules"] = tuple(TopModule(**m) for m in fields.get("top_modules", ()))
        fields["notes"] = tuple(fields.get("notes", ()))
        return DeepSeekOCRAnalyticReportSummary(**fields)

    def structure_request(data, _type) -> DeepSeekOCRAnalyticRequest:
        if not isinstance(data, dict):
            raise AnalyzerInputError("a request must be a mapping")
        unknown = set(data) - {f.name for f in attrs.fields(DeepSeekOCRAnalyticRequest)}
        if unknown:
            raise AnalyzerInputError(f"unknown request field(s): {', '.join(sorted(unknown))}")
        return DeepSeekOCRAnalyticRequest(**data)

    converter.register_unstructure_hook(DeepSeekOCRAnalyticRequest, unstructure_plain)
    converter.register_unstructure_hook(DeepSeekOCRAnalyticReportSummary, unstructure_plain)
    converter.register_structure_hook(DeepSeekOCRAnalyticReportSummary, structure_summary)
    converter.register_structure_hook(DeepSeekOCRAnalyticRequest, structure_request)
    return converter


def plain(value):
    """attrs objects as mappings, tuples as lists: the JSON and YAML shape of the contract types."""
    if attrs.has(type(value)):
        return {f.name: plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value
