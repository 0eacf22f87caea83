"""The shortcuts a sweep takes give what the plain definitions give, exactly: a derived report's id is the hash of
its whole canonical JSON, its stages' JSON is what cattrs and json write, an exact fit is the Lagrange polynomial in
rationals, and the stored rows of a report are the rows read from its objects one by one."""

import itertools
import json
import random
from fractions import Fraction
from math import lcm

import numpy as np
import pytest

from analyzer.analysis import analyze, analyze_traced, family_frame
from analyzer.execution import Execution
from analyzer.frame import Polynomial, assemble_report
from analyzer.report import (OPERATOR_COUNT_FIELDS, OPERATOR_KV_FIELDS, CONVERTER, ModuleMetricsSnapshot,
                             canonical_fragment, compute_report_id, load_report, report_from_dict, report_to_dict,
                             snapshots_json)
from analyzer.workload import Workload
from registry.store import ingest
from registry.store.models import ColumnValueError, check_columns
from tests.helpers import REPO

# Points no probe of their family saw: batches, outputs and prompts off the probes' grid.
POINTS = [(3, 1, 0), (5, 333, 17), (11, 2049, 200)]


def _derived(variant, mode, execution):
    """Reports of unseen points derived from the family's frame, twice over: the second time every stage but the
    decode comes from the frame's memo, as in a sweep."""
    frame = family_frame(Workload(variant=variant, mode=mode, batch=2), execution)
    reports = []
    for _ in range(2):
        for batch, new_tokens, prompt in POINTS:
            workload = Workload(variant=variant, mode=mode, batch=batch, new_tokens=new_tokens,
                                prompt_text_tokens=prompt)
            reports.append(assemble_report(workload, Execution(execution), frame))
    return reports


@pytest.mark.parametrize("variant, mode, execution", [("v1", "gundam", "hf-eager"), ("ocr2", "base", "vllm")])
def test_a_derived_reports_id_hashes_its_whole_canonical_json(variant, mode, execution):
    reports = _derived(variant, mode, execution)
    for report in reports:
        assert report.report_id == compute_report_id(report)
        # read back from its JSON (fresh objects, every field validated) it is the same report under the same id
        assert report_from_dict(json.loads(json.dumps(report_to_dict(report)))) == report
    assert len({report.report_id for report in reports}) == len(POINTS)  # a point derived again: the same report


def test_a_derived_report_equals_the_trace_of_its_workload():
    workload = Workload(variant="v1", mode="tiny", batch=5, new_tokens=333, prompt_text_tokens=17)
    derived = analyze(workload, "vllm")
    traced = analyze_traced(workload, "vllm")
    assert derived == traced and derived.report_id == traced.report_id


def test_snapshots_json_is_the_canonical_fragment():
    report = _derived("v1", "gundam", "hf-eager")[-1]
    stages = itertools.groupby(report.module_metrics, key=lambda s: (s.stage, s.view_kind))
    for _, snapshots in stages:
        snapshots = list(snapshots)
        assert snapshots_json(snapshots) == canonical_fragment(snapshots, list[ModuleMetricsSnapshot])
    assert snapshots_json([]) == "[]"
    # an older version's rows (no KV-cache bytes) go through the general encoder
    v1 = load_report(REPO / "tests" / "data" / "report-v1-base.json")
    assert snapshots_json(v1.module_metrics[:50]) == canonical_fragment(list(v1.module_metrics[:50]),
                                                                        list[ModuleMetricsSnapshot])


def _lagrange(xs, ys):
    """The fit's definition: Lagrange interpolation in rationals, reduced to one common denominator."""
    coefficients = [Fraction(0)] * len(xs)
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        basis = [Fraction(1)]
        for j, xj in enumerate(xs):
            if j != i:
                basis = [(a - xj * b) / (xi - xj) for a, b in zip([Fraction(0)] + basis, basis + [Fraction(0)])]
        coefficients = [c + yi * b for c, b in zip(coefficients, basis)]
    while coefficients and coefficients[-1] == 0:
        coefficients.pop()
    denominator = lcm(1, *(c.denominator for c in coefficients))
    return Polynomial(tuple(int(c * denominator) for c in coefficients), denominator)


def test_a_fit_is_the_lagrange_polynomial_in_rationals():
    rng = random.Random(27)
    for _ in range(500):
        xs = tuple(sorted(rng.sample(range(8192), 4)))
        ys = rng.choice([[rng.randrange(-10 ** 18, 10 ** 18) for _ in xs], [3 * x * x + x // 2 for x in xs],
                         [0] * 4, [7] * 4, [x * (x + 1) // 2 for x in xs]])
        assert Polynomial.through(xs, ys) == _lagrange(xs, ys)


def _rows_one_by_one(report, report_pk, module_ids, category_ids):
    """The metric rows of a report read from its objects one by one: what metric_columns must give."""
    snaps = report.module_metrics
    modules = {"report_id": [report_pk] * len(snaps), "module_id": [module_ids[s.module_path] for s in snaps],
               "stage": [s.stage.value for s in snaps], "view_kind": [s.view_kind.value for s in snaps]}
    for name in ("forward_calls", "inclusive_flops", "inclusive_bytes", "inclusive_kernel_launches"):
        modules[name] = [getattr(s, name) for s in snaps]
    pairs = [(s, op) for s in snaps for op in s.operators]
    operators = {"report_id": [report_pk] * len(pairs), "module_id": [module_ids[s.module_path] for s, _ in pairs],
                 "stage": [s.stage.value for s, _ in pairs], "view_kind": [s.view_kind.value for s, _ in pairs],
                 "category_id": [category_ids[op.category_id.value] for _, op in pairs]}
    for name in (*OPERATOR_COUNT_FIELDS, *OPERATOR_KV_FIELDS):
        operators[name] = [getattr(op, name) for _, op in pairs]
    return modules, operators


def _as_lists(columns):
    return {name: values.tolist() if isinstance(values, np.ndarray) else list(values)
            for name, values in columns.items()}


def test_stored_rows_are_the_rows_of_the_reports_objects():
    reports = _derived("v1", "gundam", "hf-eager")
    reports.append(load_report(REPO / "tests" / "data" / "report-v1-base.json"))  # no KV-cache bytes: NULL
    category_ids = {category.category_id.value: 100 + index
                    for index, category in enumerate(reports[0].categories)}
    for pk, report in enumerate(reports * 2, start=1):  # the second time every run is a stored one
        module_ids = {node.path: 7 * index + 3 for index, node in enumerate(report.modules)}
        ours = ingest.metric_columns(report, pk, module_ids, category_ids)
        theirs = _rows_one_by_one(report, pk, module_ids, category_ids)
        assert [_as_lists(columns) for columns in ours] == list(theirs)
    runs = ingest.SNAPSHOT_RUNS
    assert runs and len(runs) <= ingest.SNAPSHOT_RUN_ENTRIES


def test_a_row_of_a_category_the_registry_lacks_is_refused():
    from analyzer.report import ReportFormatError

    report = _derived("v1", "tiny", "hf-eager")[0]
    module_ids = {node.path: index for index, node in enumerate(report.modules)}
    category_ids = {category.category_id.value: index for index, category in enumerate(report.categories)}
    del category_ids["matmul"]
    with pytest.raises(ReportFormatError, match="^categories matmul are not in the registry"):
        ingest.metric_columns(report, 1, module_ids, category_ids)


def test_a_run_whose_first_snapshot_is_shared_but_not_its_rest_is_read_again():
    report = _derived("v1", "tiny", "hf-eager")[-1]
    module_ids = {node.path: index for index, node in enumerate(report.modules)}
    category_ids = {category.category_id.value: index for index, category in enumerate(report.categories)}
    ingest.metric_columns(report, 1, module_ids, category_ids)
    snapshots = list(report.module_metrics)
    changed = snapshots[1]
    snapshots[1] = CONVERTER.structure(CONVERTER.unstructure(changed) | {"forward_calls": changed.forward_calls + 1},
                                       ModuleMetricsSnapshot)
    import attrs

    edited = attrs.evolve(report, module_metrics=tuple(snapshots))
    modules, _ = ingest.metric_columns(edited, 1, module_ids, category_ids)
    assert modules["forward_calls"][1] == changed.forward_calls + 1


def test_a_numpy_column_past_its_range_is_refused_at_its_row():
    check_columns("operator_metrics", {"flops": np.array([0, 5, 2 ** 62], dtype=np.int64)})
    with pytest.raises(ColumnValueError) as refused:
        check_columns("modules", {"depth": np.array([1, 2, 2 ** 40, 3], dtype=np.int64)})  # a 32-bit column
    assert (refused.value.column, refused.value.index, refused.value.value) == ("depth", 2, 2 ** 40)
    # a count past int64 stays a Python int (a list), refused by name
    values = ingest.concatenate_columns([{"flops": ingest._integer_column([1, 2 ** 64])}])["flops"]
    assert values == [1, 2 ** 64]
    with pytest.raises(ColumnValueError):
        check_columns("operator_metrics", {"flops": values})


def test_a_tree_digest_kept_for_one_tree_object_still_covers_the_reports_own_fields():
    import attrs

    report = _derived("v1", "tiny", "hf-eager")[0]
    other = attrs.evolve(report, transformers_version="0.0.0")  # the same tree object, another architecture
    assert other.modules is report.modules
    first, second = ingest.architecture_values(report), ingest.architecture_values(other)
    assert first["tree_hash"] != second["tree_hash"]
    assert ingest.architecture_values(report)["tree_hash"] == first["tree_hash"]


def test_a_sweeps_reports_stored_on_either_backend_hold_their_objects_rows(registry_url):
    """Reports sharing their stages go in as one batch (runs read once, int64 arrays): every stored row is the
    row of the report's own objects."""
    from registry.store.db import Registry
    from tests.helpers import rows

    reports = _derived("v1", "tiny", "hf-eager")[:len(POINTS)]
    registry = Registry(registry_url)
    try:
        outcomes = ingest.write_batch(registry, [(report, "sweep") for report in reports])
        assert [outcome.status for outcome in outcomes] == ["new"] * len(reports)
    finally:
        registry.dispose()
    for report in reports:
        stored = rows(registry_url, (
            "SELECT m.path, o.stage, o.view_kind, c.name, o.op_calls, o.kernel_launches, o.flops, o.bytes_read, "
            "o.bytes_written, o.weight_bytes_read, o.kv_cache_bytes_read, o.kv_cache_bytes_written "
            "FROM operator_metrics o JOIN reports r ON r.id = o.report_id JOIN modules m ON m.id = o.module_id "
            "JOIN operator_categories c ON c.id = o.category_id WHERE r.report_id = :r"), r=report.report_id)
        expected = [(s.module_path, s.stage.value, s.view_kind.value, op.category_id.value,
                     *(getattr(op, name) for name in (*OPERATOR_COUNT_FIELDS, *OPERATOR_KV_FIELDS)))
                    for s in report.module_metrics for op in s.operators]
        assert sorted(stored) == sorted(expected)
        modules = rows(registry_url, (
            "SELECT m.path, mm.stage, mm.view_kind, mm.forward_calls, mm.inclusive_flops, mm.inclusive_bytes, "
            "mm.inclusive_kernel_launches FROM module_metrics mm JOIN reports r ON r.id = mm.report_id "
            "JOIN modules m ON m.id = mm.module_id WHERE r.report_id = :r"), r=report.report_id)
        assert sorted(modules) == sorted((s.module_path, s.stage.value, s.view_kind.value, s.forward_calls,
                                          s.inclusive_flops, s.inclusive_bytes, s.inclusive_kernel_launches)
                                         for s in report.module_metrics)
