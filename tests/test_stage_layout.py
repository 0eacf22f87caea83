"""A stage laid out once and evaluated column-wise (analyzer/stage_layout.py) is the stage the row-by-row assembly
builds: the same snapshots, rows, totals and JSON; counts that could leave int64, and rows that break a rule the
report's classes check, are built row by row, where the checks name the value."""

import json

import numpy as np
import pytest

from analyzer.analysis import family_frame
from analyzer.categories import CategoryId
from analyzer.counts import CountVector, TraceResult
from analyzer.errors import ReportFormatError
from analyzer.execution import Execution
from analyzer.frame import assemble_report
from analyzer.report import (ModuleMetricsSnapshot, OperatorMetrics, Stage, ViewKind, dumps_json,
                             module_snapshot_unchecked, operator_metrics_unchecked, snapshots_json)
from analyzer import stage_layout
from analyzer.stage_layout import INT64_SAFE, StageLayout

# Families with MoE rows at many distinct experts (batch 48, long prompts), single items, tiles and both variants.
CASES = [("v1", "gundam", "hf-eager", [(48, 4096, 200), (3, 333, 9), (7, 1, 0)]),
         ("v1", "tiny", "vllm", [(1, 333, 9), (1, 2, 200)]),
         ("ocr2", "base", "vllm", [(5, 2049, 17), (48, 3, 0)])]


class RowByRow:
    """The frame's traces without its memo: assemble_report builds every stage row by row."""

    def __init__(self, frame):
        self._frame = frame

    def __getattr__(self, name):
        if name == "stage_memo":
            raise AttributeError(name)
        return getattr(self._frame, name)


@pytest.fixture
def laid_out_entries(monkeypatch):
    """The entries StageLayout.entry answered (None: built row by row)."""
    answered = []
    entry = StageLayout.entry

    def counted(self, *args, **kwargs):
        result = entry(self, *args, **kwargs)
        answered.append(result is not None)
        return result

    monkeypatch.setattr(StageLayout, "entry", counted)
    return answered


@pytest.mark.parametrize("variant, mode, execution, points", CASES)
def test_a_laid_out_stage_is_the_row_by_row_stage(variant, mode, execution, points, laid_out_entries):
    from analyzer.workload import Workload

    for batch, new_tokens, prompt in points:
        workload = Workload(variant=variant, mode=mode, batch=batch, new_tokens=new_tokens,
                            prompt_text_tokens=prompt)
        frame = family_frame(workload, execution)
        frame.stage_memo.clear()  # every stage laid out afresh, not read from the memo
        del laid_out_entries[:]
        laid_out = assemble_report(workload, Execution(execution), frame)
        assert laid_out_entries and all(laid_out_entries)  # every stage of it went through the layout
        row_by_row = assemble_report(workload, Execution(execution), RowByRow(frame))
        assert laid_out == row_by_row
        assert laid_out.report_id == row_by_row.report_id
        assert dumps_json(laid_out) == dumps_json(row_by_row)


def _layout_of_one_row(**counts):
    return StageLayout([("model.m", CategoryId.MATMUL)], {"model.m": 1}), np.array(
        [[counts.get(name, 0) for name in (
            "op_calls", "kernel_launches", "fixed_flops", "scaled_flops", "fixed_bytes_read", "scaled_bytes_read",
            "fixed_bytes_written", "scaled_bytes_written", "weight_bytes_read", "kv_bytes_read", "kv_bytes_written",
            "expert_weight_bytes_per_expert")]], dtype=np.int64)


def test_one_row_laid_out_gives_its_counts_sums_and_json():
    layout, vectors = _layout_of_one_row(op_calls=2, kernel_launches=2, fixed_flops=10, scaled_flops=6,
                                         fixed_bytes_read=100, scaled_bytes_read=40, scaled_bytes_written=8,
                                         weight_bytes_read=100, kv_bytes_read=20, expert_weight_bytes_per_expert=7)
    totals, snapshots, fragment = layout.entry(Stage.PREFILL, ViewKind.NONE, vectors, items=3, traced=2, multiple=5,
                                               distinct_experts=1.5, expert_multiple=5)
    # flops 5 x (10 + 3 x 6 // 2); bytes read 5 x (100 + 3 x 40 // 2) + round(1.5 x 7) x 5; KV read 5 x (3 x 20 // 2)
    assert totals == [10, 10, 5 * 19, 5 * 160 + 10 * 5, 5 * 12, 5 * 100 + 50, 5 * 30, 0]
    assert [s.module_path for s in snapshots] == ["", "model", "model.m"]  # the row's module and its ancestors
    assert [s.inclusive_flops for s in snapshots] == [95, 95, 95]
    assert snapshots[-1].operators[0].share_of_module_flops == 1.0
    assert [s.operators for s in snapshots[:2]] == [(), ()]
    assert json.loads(fragment) == json.loads(snapshots_json(snapshots))
    assert fragment == snapshots_json(snapshots)


def test_counts_that_could_leave_int64_are_built_row_by_row():
    layout, vectors = _layout_of_one_row(op_calls=1, fixed_flops=INT64_SAFE // 32)
    assert layout.entry(Stage.PREFILL, ViewKind.NONE, vectors, 1, 1, 1, 0.0, 1) is not None
    # the same row at 4 items times 2 calls could pass 2**63 in a sum: not laid out
    assert layout.entry(Stage.PREFILL, ViewKind.NONE, vectors, 4, 1, 2, 0.0, 2) is None


@pytest.mark.parametrize("counts", [dict(op_calls=1, fixed_bytes_read=-5),  # a negative count
                                    dict(op_calls=1, fixed_bytes_read=10, weight_bytes_read=11),  # weights > read
                                    dict(op_calls=1, scaled_bytes_written=1, kv_bytes_written=2)])  # KV > written
def test_a_row_that_breaks_a_rule_is_left_to_the_checked_constructors(counts):
    layout, vectors = _layout_of_one_row(**counts)
    assert layout.entry(Stage.PREFILL, ViewKind.NONE, vectors, 1, 1, 1, 0.0, 1) is None


def test_a_frame_trace_that_breaks_a_rule_is_refused_by_name():
    """The layout declines the row, the row-by-row build refuses it naming the field (as a traced report would)."""
    from analyzer.workload import Workload

    workload = Workload(variant="v1", mode="tiny", batch=3, new_tokens=1, prompt_text_tokens=9)
    frame = family_frame(workload, "hf-eager")
    broken = frame.prefill(workload.prefill_tokens, frame.image_tokens, frame.traced_items)
    key = next(key for key, vector in broken.counts.items() if vector.fixed_bytes_read)
    counts = dict(broken.counts)
    vector = counts[key]
    counts[key] = CountVector(**{**{name: getattr(vector, name) for name in (
        "op_calls", "kernel_launches", "fixed_flops", "scaled_flops", "fixed_bytes_read", "scaled_bytes_read",
        "fixed_bytes_written", "scaled_bytes_written", "kv_bytes_read", "kv_bytes_written",
        "expert_weight_bytes_per_expert")}, "weight_bytes_read": 10 ** 15})

    class Broken(RowByRow):
        stage_memo = {}

        def prefill(self, *args):
            return TraceResult(counts=counts, module_calls=broken.module_calls,
                               activation_peak_bytes=broken.activation_peak_bytes)

    with pytest.raises(ReportFormatError, match="weight_bytes_read .* exceeds bytes_read"):
        assemble_report(workload, Execution("hf-eager"), Broken(frame))


def test_the_unchecked_makers_make_what_the_checked_constructors_make():
    checked = OperatorMetrics.from_counts(CategoryId.ATTENTION, 40, op_calls=3, kernel_launches=2, flops=30,
                                          bytes_read=500, bytes_written=70, weight_bytes_read=100,
                                          kv_cache_bytes_read=200, kv_cache_bytes_written=9)
    unchecked = operator_metrics_unchecked(CategoryId.ATTENTION, 3, 2, 30, 500, 70, 100, 200, 9, 3, 30 / 1e12,
                                           570 / 1e12, 0.75)
    assert unchecked == checked and type(unchecked) is OperatorMetrics
    other = OperatorMetrics.from_counts(CategoryId.MATMUL, 40, op_calls=1, kernel_launches=1, flops=10,
                                        bytes_read=0, bytes_written=0, weight_bytes_read=0, kv_cache_bytes_read=0,
                                        kv_cache_bytes_written=0)
    snapshot = ModuleMetricsSnapshot(module_path="model", stage=Stage.DECODE, view_kind=ViewKind.NONE,
                                     forward_calls=4, operators=(checked, other), inclusive_flops=40,
                                     inclusive_bytes=570, inclusive_kernel_launches=3)
    assert module_snapshot_unchecked("model", Stage.DECODE, ViewKind.NONE, 4, (unchecked, other), 40, 570,
                                     3) == snapshot
    # the makers take the fields in declaration order: a field added or moved breaks them here, not silently
    import attrs

    assert operator_metrics_unchecked.__code__.co_varnames[:13] == tuple(f.name for f in attrs.fields(OperatorMetrics))
    assert module_snapshot_unchecked.__code__.co_varnames[:8] == tuple(
        f.name for f in attrs.fields(ModuleMetricsSnapshot))


def test_a_layout_keeps_a_few_structures(monkeypatch):
    monkeypatch.setattr(stage_layout, "STRUCTURE_ENTRIES", 2)
    layout = StageLayout([("a", CategoryId.MATMUL), ("b", CategoryId.MATMUL), ("c", CategoryId.MATMUL)], {})
    for kept in ([0], [1], [2], [0, 1]):
        layout.structure(np.array(kept), Stage.PREFILL, ViewKind.NONE)
        assert len(layout._structures) <= 2
