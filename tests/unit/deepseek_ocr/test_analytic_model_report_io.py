"""AnalyticModelReport JSON/YAML load and dump: exact round trips of both variants, the spec's fields, version-1
files, and reports whose derived fields, categories or shares are wrong."""

import copy
import json

import attrs
import pytest
import yaml

from analyzer.analysis import analyze
from analyzer.categories import MODULE_PREFIX, TARGET_OPERATORS, CategoryId
from analyzer.execution import Execution
from analyzer.report import (SCHEMA_VERSION, ReportFormatError, derived_operator_fields, dumps_json, dumps_yaml,
                             load_report, loads, report_from_dict, report_to_dict, upgrade_report, write_report)
from analyzer.workload import load_profile
from tests.helpers import REPO, reid, without_kv_roles

V1_FIXTURE = REPO / "tests" / "data" / "report-v1-base.json"
V1_FIXTURE_WORKLOAD = ("dsocr-base-v1", {"new_tokens": 8})  # what the fixture was analyzed from


@pytest.fixture(scope="module")
def small_report():
    profile, overrides = V1_FIXTURE_WORKLOAD
    return analyze(load_profile(profile, **overrides))


@pytest.mark.parametrize("variant_fixture", ["standard_v1_report", "standard_ocr2_report"])
@pytest.mark.parametrize("name", ["r.json", "r.yaml", "r.yml"])
def test_json_and_yaml_round_trip_exactly(variant_fixture, name, request, tmp_path):
    report = request.getfixturevalue(variant_fixture)
    path = tmp_path / name
    write_report(report, path)
    loaded = load_report(path)
    assert loaded == report
    assert (dumps_json(loaded) if name.endswith("json") else dumps_yaml(loaded)) == path.read_text()


def test_reports_carry_the_spec_fields(standard_v1_report, standard_ocr2_report):
    for report in (standard_v1_report, standard_ocr2_report):
        assert report.schema_version == SCHEMA_VERSION == 4
        assert report.execution is Execution.HF_EAGER and report_to_dict(report)["execution"] == "hf-eager"
        data = report_to_dict(report)
        assert [c["category_id"] for c in data["categories"]] == [c.value for c in CategoryId]
        assert set(data["categories"][0]) == {"category_id", "display_name", "description", "match_classes"}
        for snapshot in report.module_metrics:
            own_flops = sum(op.flops for op in snapshot.operators)
            shares = 0.0
            for op in snapshot.operators:
                assert op.calls == op.op_calls
                assert op.flops_tflops == op.flops / 1e12
                assert op.io_tb == (op.bytes_read + op.bytes_written) / 1e12
                assert 0.0 <= op.share_of_module_flops <= 1.0
                shares += op.share_of_module_flops
            assert shares == (pytest.approx(1.0) if own_flops else 0.0)
        op = next(op for snapshot in data["module_metrics"] for op in snapshot["operators"])
        assert {"category_id", "calls", "flops_tflops", "io_tb", "share_of_module_flops", "op_calls", "flops",
                "bytes_read", "bytes_written"} <= set(op)


def test_match_classes_come_from_the_one_operator_list(standard_v1_report):
    by_id = {c.category_id: c for c in standard_v1_report.categories}
    ops = {m: c for c, record in by_id.items() for m in record.match_classes if m.startswith("aten.")}
    assert ops == {"aten." + name: category for name, category in TARGET_OPERATORS.op_to_category.items()}
    modules = {m: c for c, record in by_id.items() for m in record.match_classes if m.startswith(MODULE_PREFIX)}
    assert modules == {MODULE_PREFIX + suffix: category for suffix, category in TARGET_OPERATORS.module_rules}
    assert by_id[CategoryId.NORM].match_classes[:2] == ("module:*RMSNorm", "module:*LayerNorm")
    assert by_id[CategoryId.OTHER].match_classes == ()
    # every category the counter assigns is listed, and every operator names a listed category
    assert {op.category_id for s in standard_v1_report.module_metrics for op in s.operators} <= set(by_id)


def test_share_of_module_flops_is_zero_where_the_module_has_none():
    assert derived_operator_fields(3, 0, 10, 20, 0) == {"calls": 3, "flops_tflops": 0.0, "io_tb": 3e-11,
                                                        "share_of_module_flops": 0.0}
    assert derived_operator_fields(1, 250, 0, 0, 1000)["share_of_module_flops"] == 0.25


# -- version 1 ---------------------------------------------------------------------------------------------------

def test_a_version_1_file_loads_keeps_its_id_and_writes_back_byte_for_byte():
    text = V1_FIXTURE.read_text()
    report = load_report(V1_FIXTURE)
    assert report.schema_version == 1
    assert report.report_id == json.loads(text)["report_id"]
    assert dumps_json(report) == text
    # upgraded in memory: the spec's fields and today's categories are there
    assert report.categories == TARGET_OPERATORS.categories()
    op = report.module_metrics[-1].operators[0]
    assert op.calls == op.op_calls and op.io_tb == (op.bytes_read + op.bytes_written) / 1e12


def test_a_version_1_yaml_file_loads_too(tmp_path):
    data = json.loads(V1_FIXTURE.read_text())
    path = tmp_path / "v1.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    report = load_report(path)
    assert report.schema_version == 1 and report.report_id == data["report_id"]
    assert loads(dumps_yaml(report), "yaml") == report
    assert yaml.safe_load(dumps_yaml(report)) == data


def test_upgrading_a_version_1_report_keeps_its_counts_and_fills_the_new_fields(small_report):
    old = load_report(V1_FIXTURE)
    upgraded = upgrade_report(old)
    # the newest version its counts fill: 3 (which of its bytes are KV cache cannot be told from its counts)
    assert (upgraded.schema_version, SCHEMA_VERSION) == (3, 4) and not upgraded.kv_roles_known
    assert upgraded.matmul_weight_bytes is None
    assert upgraded.execution is Execution.HF_EAGER  # what version 1 and 2 reports were traced under
    assert upgraded.categories == small_report.categories
    assert (upgraded.stages, upgraded.module_metrics) == (old.stages, old.module_metrics)
    assert upgraded.report_id != old.report_id and load_report_text(dumps_json(upgraded)) == upgraded


def load_report_text(text):
    return loads(text, "json")


def test_a_version_2_report_is_read_as_hf_eager_and_written_back_as_it_was(small_report, tmp_path):
    data = without_kv_roles(report_to_dict(small_report)) | {"schema_version": 2}
    del data["execution"]
    version_2 = reid(data)
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(version_2))
    report = load_report(path)
    assert (report.schema_version, report.execution) == (2, Execution.HF_EAGER)
    assert report.report_id == version_2["report_id"]
    assert json.loads(dumps_json(report)) == version_2
    with pytest.raises(ReportFormatError, match="'execution' is not part of a schema_version 2 report"):
        report_from_dict(version_2 | {"execution": "vllm"})
    with pytest.raises(ReportFormatError, match="can only record execution 'hf-eager'"):
        attrs.evolve(report, execution=Execution.VLLM)


def test_an_unknown_execution_is_one_clear_error(small_report):
    data = report_to_dict(small_report) | {"execution": "tensorrt"}
    with pytest.raises(ReportFormatError, match=r"unknown execution 'tensorrt' \(known: hf-eager, vllm\)"):
        report_from_dict(reid(data))


def _any_op(data):
    return next(op for snapshot in data["module_metrics"] for op in snapshot["operators"])


def _v1_data():
    return json.loads(V1_FIXTURE.read_text())


@pytest.mark.parametrize("edit,message", [
    (lambda d: _any_op(d).update(flops=1), "does not match its content"),
    (lambda d: d.update(categories=[]), "'categories' is not part of a schema_version 1 report"),
    (lambda d: _any_op(d).update(io_tb=0.0),
     "'io_tb' is not part of a schema_version 1 report"),
    (lambda d: _any_op(d).update(category="tensor_cores"),
     "unknown category id 'tensor_cores'"),
])
def test_bad_version_1_files_are_rejected(edit, message):
    data = _v1_data()
    edit(data)
    with pytest.raises(ReportFormatError, match=message):
        report_from_dict(data)


# -- bad input ---------------------------------------------------------------------------------------------------

def _first_op(data):
    """The first operator of a snapshot that has FLOPs and at least two categories."""
    for snapshot in data["module_metrics"]:
        ops = snapshot["operators"]
        if len(ops) >= 2 and all(op["flops"] for op in ops[:2]):
            return ops[0]
    raise AssertionError("no snapshot with two categories that both have FLOPs")


@pytest.mark.parametrize("edit,message", [
    (lambda d: _first_op(d).update(flops_tflops=_first_op(d)["flops_tflops"] * 2),
     r"flops_tflops .* disagrees with its counts"),
    (lambda d: _first_op(d).update(io_tb=_first_op(d)["io_tb"] + 1e-9), r"io_tb .* disagrees with its counts"),
    (lambda d: _first_op(d).update(calls=_first_op(d)["calls"] + 1), r"calls .* disagrees with its counts"),
    (lambda d: _first_op(d).update(share_of_module_flops=1.0), r"share_of_module_flops .* disagrees"),
    (lambda d: _first_op(d).update(share_of_module_flops=1.5), r"must be within \[0, 1\], got 1.5"),
    (lambda d: _first_op(d).update(share_of_module_flops=-0.1), "must be a finite number >= 0"),
    (lambda d: _first_op(d).update(category_id="tensor_cores"), "unknown category id 'tensor_cores'"),
    (lambda d: d["categories"][0].update(category_id="tensor_cores"), "unknown category id 'tensor_cores'"),
    (lambda d: d["categories"].pop(0), "category 'matmul' of module .* is not in the report's categories"),
    (lambda d: d["categories"].append(copy.deepcopy(d["categories"][0])), "duplicate category ids"),
    (lambda d: _first_op(d).pop("io_tb"), "missing required field 'io_tb'"),
    (lambda d: _first_op(d).update(category=_first_op(d)["category_id"]), "category"),
])
def test_reports_whose_spec_fields_disagree_are_rejected(small_report, edit, message):
    data = report_to_dict(small_report)
    edit(data)
    reid(data)  # a consistent id, so the edit itself is what gets rejected
    with pytest.raises(ReportFormatError, match=message):
        report_from_dict(data)
