"""Architecture + workload -> counts -> `AnalyticModelReport`.

A report is assembled (analyzer/frame.py) from traces of the model's stages on the meta device
(analyzer/tracing.py). The traces of a family of workloads (variant, execution, mode, tile grid, single item or
not) give the report of any batch, prompt and output length of that family exactly, so a family is traced once:
its frame is kept in the process and in the persistent trace cache (analyzer/trace_cache.py), and a report of a
cached family imports neither torch nor transformers.
"""

from __future__ import annotations

from analyzer.execution import DEFAULT_EXECUTION, Execution, execution_spec, parse_execution
from analyzer.frame import (DECODE_PROBE_CONTEXT, LANGUAGE_MODEL, LM_HEAD, MODEL_ROOT, PROJECTOR,  # noqa: F401
                            REPORT_NOTES, ROOT, VISION_TOWER, FamilyFrame, FamilyKey, assemble_report,
                            build_frame, module_stages, traced_items_for)
from analyzer.report import AnalyticModelReport
from analyzer.workload import Workload

# The traces themselves need torch: their names are found in analyzer.tracing when first asked for.
_TRACING_NAMES = {"trace_vision", "trace_projector", "trace_prefill", "trace_decode_step", "decode_vectors",
                  "decode_step_counts", "model_facts", "TracingSource"}

# Frames used in this process, by family: a sweep reads each family's entry once.
_FRAMES: dict[FamilyKey, FamilyFrame] = {}


def __getattr__(name: str):
    if name in _TRACING_NAMES:
        from analyzer import tracing

        return getattr(tracing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _execution(execution: Execution | str) -> Execution:
    return parse_execution(execution.value if isinstance(execution, Execution) else execution)


def family_frame(workload: Workload, execution: Execution | str = DEFAULT_EXECUTION,
                 cache: bool = True) -> FamilyFrame:
    """The frame of `workload`'s family: from this process, from the trace cache (`cache`), or traced (and then
    stored in the cache when `cache`)."""
    execution = _execution(execution)
    key = FamilyKey.of(workload, execution)
    frame = _FRAMES.get(key)
    if frame is not None:
        return frame
    if cache:
        from analyzer import trace_cache

        frame = trace_cache.load_frame(key)
    if frame is None:
        from analyzer.tracing import TracingSource

        # fitted now, while the model is built: every later prompt length of the family then needs no torch
        frame = build_frame(workload, execution, TracingSource(workload.variant, execution), fit=True)
    _FRAMES[key] = frame
    return frame


def _store(frame: FamilyFrame) -> None:
    """Write a frame that gained traces or a fit (or was just traced) to the trace cache."""
    from analyzer import trace_cache

    trace_cache.store_frame(frame)
    frame.dirty = False


def analyze(workload: Workload, execution: Execution | str = DEFAULT_EXECUTION,
            cache: bool = True) -> AnalyticModelReport:
    """The analytic model of `workload` as `execution` runs it: same inputs, same report. Derived from its family's
    frame (see family_frame; `cache=False` neither reads nor writes the persistent trace cache)."""
    execution = _execution(execution)
    frame = family_frame(workload, execution, cache)
    report = assemble_report(workload, execution, frame)
    if cache and frame.dirty:
        _store(frame)
    return report


def analyze_traced(workload: Workload, execution: Execution | str = DEFAULT_EXECUTION) -> AnalyticModelReport:
    """The same report from traces of this very workload (no frame, no cache): what a derived report must equal."""
    from analyzer.tracing import TracingSource

    execution = _execution(execution)
    return assemble_report(workload, execution, TracingSource(workload.variant, execution))


# The notes of each execution live in its entry (analyzer/execution.py).
EXECUTION_NOTES = {execution: execution_spec(execution).report_notes for execution in Execution}
