"""The report model: content-derived ids, validation of what is loaded. The JSON/YAML round trips are in
tests/unit/deepseek_ocr/test_analytic_model_report_io.py, where the spec puts them."""


import pytest

from analyzer.analysis import analyze
from analyzer.report import (SCHEMA_VERSION, ReportFormatError, Stage, compute_report_id, dumps_json,
                             load_report, loads, report_from_dict, report_to_dict)
from analyzer.workload import load_profile
from tests.helpers import reid


def test_same_inputs_give_the_same_report_byte_for_byte(standard_v1_report):
    again = analyze(load_profile("dsocr-standard-v1"))
    assert dumps_json(again) == dumps_json(standard_v1_report)
    assert again.report_id == standard_v1_report.report_id == compute_report_id(again)


def test_report_id_follows_content(standard_v1_report):
    other = analyze(load_profile("dsocr-standard-v1", new_tokens=256))
    assert other.report_id != standard_v1_report.report_id
    assert standard_v1_report.report_id.startswith("dsocr-")


def test_report_contents(standard_v1_report):
    r = standard_v1_report
    assert r.schema_version == SCHEMA_VERSION
    assert (r.parameters, r.checkpoint_parameters) == (3_335_504_128, 3_336_106_240)
    assert "602,112" in r.parameters_note
    assert r.weight_bytes == 2 * 3_335_504_128
    assert r.kv_cache_bytes_per_token == 61_440
    assert (r.routing.experts, r.routing.experts_per_token, r.routing.assumption) == (64, 6, "uniform")
    stages = [(s.stage.value, s.view_kind.value) for s in r.stages]
    assert stages == [("vision", "global"), ("vision", "tile"), ("projector", "global"), ("projector", "tile"),
                      ("prefill", ""), ("decode", "")]
    tile = r.stages[1]
    assert (tile.items, tile.tokens_per_item, tile.view_px) == (6, 100, 640)
    prefill = r.stages[4]
    assert prefill.kv_cache_bytes == 912 * 61_440
    decode = r.stages[5]
    assert (decode.calls, decode.context_start, decode.context_end) == (511, 912, 1422)
    assert decode.kv_cache_bytes == (912 + 511) * 61_440
    # every module of the real tree is present, with parents and children that agree
    paths = {m.path: m for m in r.modules}
    assert paths[""].parameters == r.parameters
    assert paths["model.language_model.layers.5.mlp.experts"].parent_path == "model.language_model.layers.5.mlp"
    assert "model.language_model.layers.5.mlp.experts" in paths["model.language_model.layers.5.mlp"].children
    assert set(paths["model.vision_tower"].stages) == {Stage.VISION}
    assert set(paths["model.language_model"].stages) == {Stage.PREFILL, Stage.DECODE}
    # inclusive root metrics equal the stage totals
    for stage in r.stages:
        root = next(s for s in r.module_metrics if s.module_path == "" and s.stage is stage.stage
                    and s.view_kind is stage.view_kind)
        assert root.inclusive_flops == stage.flops
        assert root.inclusive_bytes == stage.bytes_read + stage.bytes_written
        assert root.inclusive_kernel_launches == stage.kernel_launches


def _small_dict():
    report = analyze(load_profile("dsocr-base-v1", new_tokens=2))
    return report_to_dict(report)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d.pop("workload"), "missing required field 'workload'"),
    (lambda d: d["stages"][0].update(flops=-1), "flops must be >= 0"),
    (lambda d: d["stages"][0].update(distinct_experts_per_call=float("nan")), "finite"),
    (lambda d: d["stages"][0].update(stage="warmup"), "warmup"),
    (lambda d: d["modules"][3].update(parent_path="no.such.module"), "does not exist"),
    (lambda d: d["modules"][0].update(parent_path=d["modules"][1]["path"]), "cycle"),
    (lambda d: d["module_metrics"][0].update(module_path="ghost"), "unknown module"),
    (lambda d: d.update(surprise=1), "surprise"),
])
def test_invalid_reports_are_rejected(edit, message):
    data = _small_dict()
    edit(data)
    reid(data)
    with pytest.raises(ReportFormatError, match=message):
        report_from_dict(data)


def test_tampered_report_id_is_rejected():
    data = _small_dict()
    data["stages"][0]["flops"] += 1
    with pytest.raises(ReportFormatError, match="does not match its content"):
        report_from_dict(data)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(ReportFormatError, match="empty file"):
        load_report(empty)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ReportFormatError, match="not UTF-8"):
        load_report(latin)
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1,')
    with pytest.raises(ReportFormatError, match="malformed JSON"):
        load_report(broken)
    nan = tmp_path / "nan.json"
    nan.write_text('{"schema_version": 1, "x": NaN}')
    with pytest.raises(ReportFormatError, match="non-finite"):
        load_report(nan)
    overflow = tmp_path / "overflow.json"  # a literal too large for a float is refused where it stands
    overflow.write_text('{"schema_version": 3, "x": [1.5, {"y": -1e999}]}')
    with pytest.raises(ReportFormatError, match=r"^x\[1\]\.y: non-finite number -inf$"):
        load_report(overflow)
    with pytest.raises(ReportFormatError, match="unknown report format"):
        load_report(tmp_path / "report.txt")
    with pytest.raises(ReportFormatError, match="a report must be a mapping"):
        loads("[1, 2]", "json")
