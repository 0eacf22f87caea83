"""A stage's rows laid out once and evaluated for each point of a sweep in numpy, exactly.

Within a family, a stage's module metrics have the same rows at every point: the same (module, category) keys, the
same snapshots (every module with rows or calls, and their ancestors), in the same order. Only the counts change,
and they are integer-valued functions of a few numbers (the batch, the calls, the decode steps and their context).
A `StageLayout` holds that structure (which row goes into which snapshot, which snapshots each row adds to, the
report JSON's text around the numbers), so that a point's stage is its counts in int64 columns, its inclusive sums
and shares column-wise, and one %-format for its JSON. The arithmetic is the assembly's own (analyzer/frame.py,
`_scale` and `_snapshots`), column by column: the same integers, the same float divisions. Where a count could
leave int64, or a row breaks a rule the report's classes check, `entry` answers None and the stage is built row by
row instead, whose checks name the value.
"""

from __future__ import annotations

import functools
import operator
from itertools import repeat

import numpy as np

from analyzer.categories import CATEGORY_POSITION, CategoryId
from analyzer.report import (TERA, ModuleMetricsSnapshot, Stage, ViewKind, module_snapshot_unchecked,
                             operator_metrics_unchecked, snapshots_json_format)

# the columns of a count vector (analyzer.counts.CountVector), in its fields' order
(OP_CALLS, KERNEL_LAUNCHES, FIXED_FLOPS, SCALED_FLOPS, FIXED_BYTES_READ, SCALED_BYTES_READ, FIXED_BYTES_WRITTEN,
 SCALED_BYTES_WRITTEN, WEIGHT_BYTES_READ, KV_BYTES_READ, KV_BYTES_WRITTEN, EXPERT_WEIGHT_BYTES_PER_EXPERT) = range(12)
# the columns of a stage's metrics (the keys of frame._scale, OperatorMetrics' counts)
(M_OP_CALLS, M_KERNEL_LAUNCHES, M_FLOPS, M_BYTES_READ, M_BYTES_WRITTEN, M_WEIGHT_BYTES_READ, M_KV_BYTES_READ,
 M_KV_BYTES_WRITTEN) = range(8)
# A point whose counts could reach this (summed over a stage's rows, with room for the sums of the inclusive
# columns) is built row by row in Python integers.
INT64_SAFE = 2**62
STRUCTURE_ENTRIES = 16  # the sets of non-zero rows a layout keeps laid out (one or two in practice)


@functools.lru_cache(maxsize=8192)
def ancestors(path: str) -> tuple[str, ...]:
    """The path itself and every ancestor up to the root "" (the same few thousand paths in every report)."""
    out = [path]
    while path:
        path = path.rpartition(".")[0]
        out.append(path)
    return tuple(out)


class _Structure:
    """The snapshots of one set of non-zero rows: their paths, their operator rows, what adds to what, and the
    JSON's format."""

    def __init__(self, layout: "StageLayout", kept: np.ndarray, stage: Stage, view_kind: ViewKind) -> None:
        keys = layout.keys
        rows_of_path: dict[str, list[int]] = {}
        for row in kept.tolist():
            rows_of_path.setdefault(keys[row][0], []).append(row)
        paths = set(layout.call_paths)
        for path in rows_of_path:
            paths.update(ancestors(path))
        self.paths = sorted(paths)
        index_of = {path: index for index, path in enumerate(self.paths)}
        op_rows, op_snapshot, bounds, json_layout = [], [], [], []
        for index, path in enumerate(self.paths):
            rows = sorted(rows_of_path.get(path, ()), key=lambda row: CATEGORY_POSITION[keys[row][1]])
            bounds.append((len(op_rows), len(op_rows) + len(rows)))
            op_rows.extend(rows)
            op_snapshot.extend([index] * len(rows))
            json_layout.append((path, [keys[row][1] for row in rows]))
        self.op_rows = np.array(op_rows, dtype=np.intp)
        self.op_snapshot = np.array(op_snapshot, dtype=np.intp)
        self.op_categories: list[CategoryId] = [keys[row][1] for row in op_rows]
        self.bounds = bounds
        pairs = [(row, index_of[ancestor]) for row in kept.tolist() for ancestor in ancestors(keys[row][0])]
        self.pair_rows = np.array([row for row, _ in pairs], dtype=np.intp)
        self.pair_snapshot = np.array([snapshot for _, snapshot in pairs], dtype=np.intp)
        self.calls_per_multiple = np.array([layout.call_counts.get(path, 0) for path in self.paths], dtype=np.int64)
        self.json_format = snapshots_json_format(stage, view_kind, json_layout)
        # the format's values in order, as positions in the concatenation of the value lists `entry` makes: 4
        # snapshot columns of len(paths), then 12 operator columns of len(op_rows), each in its keys' sorted order
        snapshots, operators = len(self.paths), len(op_rows)
        order = []
        for index, (start, end) in enumerate(bounds):
            order.extend(column * snapshots + index for column in range(4))
            for op in range(start, end):
                order.extend(4 * snapshots + column * operators + op for column in range(12))
        self.json_values = operator.itemgetter(*order) if len(order) > 1 else (lambda values: tuple(
            values[i] for i in order))


class StageLayout:
    """The rows of one stage of a family: its (module, category) keys in order and its modules' calls per
    multiple (per call of the stage, or per decode step)."""

    def __init__(self, keys: list, call_counts: dict[str, int]) -> None:
        self.keys = list(keys)
        self.call_counts = dict(call_counts)
        self.call_paths = list(call_counts)
        self._structures: dict[tuple, _Structure] = {}

    def structure(self, kept: np.ndarray, stage: Stage, view_kind: ViewKind) -> _Structure:
        key = (kept.tobytes(), stage, view_kind)
        found = self._structures.get(key)
        if found is None:
            if len(self._structures) >= STRUCTURE_ENTRIES:
                self._structures.clear()
            found = self._structures[key] = _Structure(self, kept, stage, view_kind)
        return found

    def entry(self, stage: Stage, view_kind: ViewKind, vectors: np.ndarray, items: int, traced: int,
              multiple: int, distinct_experts: float, expert_multiple: int, expert_weights: np.ndarray | None = None,
              calls_multiple: int | None = None):
        """(totals by metric, snapshots, snapshots' JSON) of the stage whose rows' count vectors (summed over
        calls or steps where the caller sums them) are `vectors`: each row priced as frame._scale prices it at
        `items` items from a trace of `traced`, times `multiple`, plus round(distinct_experts x the row's expert
        weight bytes per expert (`expert_weights`, else the vectors' own)) x `expert_multiple` read as weights;
        every module's calls times `calls_multiple` (else `multiple`). None where a count could leave int64 or a
        row breaks a rule of the report's classes (the caller builds it row by row)."""
        rows = len(self.keys)
        calls_multiple = multiple if calls_multiple is None else calls_multiple
        if rows == 0:
            return None
        largest = int(np.abs(vectors).max())
        if expert_weights is None:
            expert_weights = vectors[:, EXPERT_WEIGHT_BYTES_PER_EXPERT]
        expert_rows = np.flatnonzero(expert_weights).tolist()
        expert_bytes = [round(distinct_experts * int(expert_weights[row])) * expert_multiple for row in expert_rows]
        per_row_bound = largest * (1 + items) * max(multiple, 1) + max(expert_bytes, default=0)
        if (per_row_bound * 2 + max(self.call_counts.values(), default=0) * max(calls_multiple, 1)) * (rows + 1) \
                >= INT64_SAFE:
            return None
        metrics = np.empty((rows, 8), dtype=np.int64)
        metrics[:, M_OP_CALLS] = vectors[:, OP_CALLS]
        metrics[:, M_KERNEL_LAUNCHES] = vectors[:, KERNEL_LAUNCHES]
        metrics[:, M_FLOPS] = vectors[:, FIXED_FLOPS] + items * vectors[:, SCALED_FLOPS] // traced
        metrics[:, M_BYTES_READ] = vectors[:, FIXED_BYTES_READ] + items * vectors[:, SCALED_BYTES_READ] // traced
        metrics[:, M_BYTES_WRITTEN] = (vectors[:, FIXED_BYTES_WRITTEN]
                                       + items * vectors[:, SCALED_BYTES_WRITTEN] // traced)
        metrics[:, M_WEIGHT_BYTES_READ] = vectors[:, WEIGHT_BYTES_READ]
        metrics[:, M_KV_BYTES_READ] = items * vectors[:, KV_BYTES_READ] // traced
        metrics[:, M_KV_BYTES_WRITTEN] = items * vectors[:, KV_BYTES_WRITTEN] // traced
        if multiple != 1:
            metrics *= multiple
        for row, extra in zip(expert_rows, expert_bytes):
            metrics[row, M_BYTES_READ] += extra
            metrics[row, M_WEIGHT_BYTES_READ] += extra
        if ((metrics < 0).any()
                or (metrics[:, M_WEIGHT_BYTES_READ] + metrics[:, M_KV_BYTES_READ] > metrics[:, M_BYTES_READ]).any()
                or (metrics[:, M_KV_BYTES_WRITTEN] > metrics[:, M_BYTES_WRITTEN]).any()):
            return None
        totals = metrics.sum(axis=0).tolist()
        structure = self.structure(np.flatnonzero(metrics.any(axis=1)), stage, view_kind)

        snapshots = len(structure.paths)
        operators = metrics[structure.op_rows]
        own_flops = np.zeros(snapshots, dtype=np.int64)
        np.add.at(own_flops, structure.op_snapshot, operators[:, M_FLOPS])
        inclusive = np.zeros((snapshots, 3), dtype=np.int64)
        paired = metrics[structure.pair_rows]
        np.add.at(inclusive, structure.pair_snapshot, np.stack(
            [paired[:, M_FLOPS], paired[:, M_BYTES_READ] + paired[:, M_BYTES_WRITTEN], paired[:, M_KERNEL_LAUNCHES]],
            axis=1))
        flops = operators[:, M_FLOPS].astype(np.float64)
        own_of_row = own_flops[structure.op_snapshot].astype(np.float64)
        share = np.zeros(len(flops))
        np.divide(flops, own_of_row, out=share, where=own_of_row != 0)
        tflops = flops / TERA
        io_tb = (operators[:, M_BYTES_READ] + operators[:, M_BYTES_WRITTEN]).astype(np.float64) / TERA

        forward_calls = (structure.calls_per_multiple * calls_multiple).tolist()
        inclusive_flops, inclusive_bytes, inclusive_launches = (inclusive[:, column].tolist() for column in range(3))
        (op_calls, launches, row_flops, bytes_read, bytes_written, weight_bytes, kv_read,
         kv_written) = (operators[:, column].tolist() for column in range(8))
        tflops, io_tb, share = tflops.tolist(), io_tb.tolist(), share.tolist()
        made = list(map(operator_metrics_unchecked, structure.op_categories, op_calls, launches, row_flops,
                        bytes_read, bytes_written, weight_bytes, kv_read, kv_written, op_calls, tflops, io_tb, share))
        out: list[ModuleMetricsSnapshot] = list(map(
            module_snapshot_unchecked, structure.paths, repeat(stage), repeat(view_kind), forward_calls,
            [tuple(made[start:end]) for start, end in structure.bounds], inclusive_flops, inclusive_bytes,
            inclusive_launches))
        # the JSON's value columns, in the order _Structure.json_values reads them (the keys' sorted order)
        values = (forward_calls + inclusive_bytes + inclusive_flops + inclusive_launches + bytes_read + bytes_written
                  + op_calls + row_flops + tflops + io_tb + launches + kv_read + kv_written + op_calls + share
                  + weight_bytes)
        fragment = structure.json_format % structure.json_values(values)
        return totals, out, fragment
