"""The published JSON Schema of AnalyticModelReport: generated from the attrs classes, committed current, and
satisfied by real reports of both variants."""

import json

import attrs
import jsonschema
import pytest

from analyzer import report as report_module
from analyzer import schema
from analyzer.report import report_to_dict
from tests.helpers import REPO

VALIDATOR = jsonschema.Draft202012Validator


def _committed():
    return json.loads(schema.SCHEMA_PATH.read_text())


def test_the_committed_schema_is_what_the_classes_generate():
    VALIDATOR.check_schema(_committed())
    assert schema.SCHEMA_PATH.read_text() == schema.render(), "run: python -m analyzer.schema"
    assert schema.main(["--check"]) == 0


@pytest.mark.parametrize("variant_fixture", ["standard_v1_report", "standard_ocr2_report"])
def test_real_reports_of_both_variants_validate(variant_fixture, request):
    data = report_to_dict(request.getfixturevalue(variant_fixture))
    VALIDATOR(_committed()).validate(data)
    op = next(op for snapshot in data["module_metrics"] for op in snapshot["operators"])
    bad = json.loads(json.dumps(data))
    next(o for s in bad["module_metrics"] for o in s["operators"]).update(share_of_module_flops=1.5)
    with pytest.raises(jsonschema.ValidationError, match="1.5 is greater than the maximum of 1"):
        VALIDATOR(_committed()).validate(bad)
    assert {"category_id", "calls", "flops_tflops", "io_tb", "share_of_module_flops"} <= set(op)


def test_the_schema_names_the_spec_fields_and_their_units():
    defs = _committed()["$defs"]
    assert set(defs["OperatorCategory"]["required"]) == {"category_id", "display_name", "description",
                                                         "match_classes"}
    metrics = defs["OperatorMetrics"]["properties"]
    assert "terabits" in metrics["io_tb"]["description"] and "1e12" in metrics["io_tb"]["description"]
    assert "not a rate" in metrics["flops_tflops"]["description"]
    assert (metrics["share_of_module_flops"]["minimum"], metrics["share_of_module_flops"]["maximum"]) == (0, 1)
    assert defs["CategoryId"]["enum"][0] == "matmul"
    assert _committed()["properties"]["schema_version"]["const"] == 4


def test_a_field_added_to_the_classes_without_regenerating_fails_the_check(monkeypatch):
    extended = attrs.make_class("OperatorMetrics", {
        **{f.name: attrs.field(validator=f.validator, metadata=f.metadata) for f in
           attrs.fields(report_module.OperatorMetrics)},
        "tensor_core_flops": attrs.field(validator=report_module._count)}, frozen=True, kw_only=True)
    extended.__module__ = report_module.__name__  # its type hints resolve there
    extended.__annotations__ = {**report_module.OperatorMetrics.__annotations__, "tensor_core_flops": "int"}
    monkeypatch.setattr(report_module, "OperatorMetrics", extended)
    assert "tensor_core_flops" in schema.report_json_schema()["$defs"]["OperatorMetrics"]["properties"]
    assert schema.render() != schema.SCHEMA_PATH.read_text()
    assert schema.main(["--check"]) == 1


def test_a_version_1_file_is_not_a_version_4_document():

    data = json.loads((REPO / "tests" / "data" / "report-v1-base.json").read_text())
    errors = {e.message for e in VALIDATOR(_committed()).iter_errors(data)}
    assert "4 was expected" in errors and any("'categories' is a required property" in e for e in errors)
    assert any("'execution' is a required property" in e for e in errors)
