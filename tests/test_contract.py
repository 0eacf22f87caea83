"""The seed's contract: attrs models, cattrs hooks, openapi.yaml against real outputs, MAPPING.md commands."""

import json
import os
import pathlib
import re
import subprocess
import sys

import attrs
import cattrs
import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate as validate_openapi

from referencing import Registry as SchemaRegistry
from referencing.jsonschema import DRAFT202012

from analyzer.errors import AnalyzerInputError
from analyzer.report import AnalyticModelReport, dumps_json, load_report, make_converter, report_to_dict
from analyzer.schema import SCHEMA_PATH
from registry.interfaces.contract import (DeepSeekOCRAnalyticReportSummary, DeepSeekOCRAnalyticRequest, TopModule,
                               register_deepseek_ocr_hooks)
from tests.helpers import REPO, rows, run_command

OPENAPI_PATH = REPO / "contracts" / "openapi.yaml"
OPENAPI = yaml.safe_load(OPENAPI_PATH.read_text())
REPORT_SCHEMA = json.loads(SCHEMA_PATH.read_text())
BIN = pathlib.Path(sys.executable).parent
# openapi.yaml refers to the generated report schema by its file name, relative to the document
SCHEMAS = SchemaRegistry().with_resource(SCHEMA_PATH.name, DRAFT202012.create_resource(REPORT_SCHEMA))


def validate_component(instance, name):
    """Validate against a component schema (refs point into the document and to the report schema file)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema, registry=SCHEMAS).validate(instance)


def test_openapi_document_is_valid_and_names_the_endpoints():
    validate_openapi(OPENAPI, base_uri=OPENAPI_PATH.resolve().as_uri())
    assert set(OPENAPI["paths"]) == {"/analytic/deepseek-ocr/run", "/analytic/deepseek-ocr/runs/{run_id}",
                                     "/analytic/deepseek-ocr/{report_id}/summary",
                                     "/analytic/deepseek-ocr/{report_id}/model", "/whatif/scenarios",
                                     "/serving/scenarios", "/plans", "/healthz"}
    assert "202" in OPENAPI["paths"]["/analytic/deepseek-ocr/run"]["post"]["responses"]


@pytest.mark.parametrize("cls", [DeepSeekOCRAnalyticRequest, DeepSeekOCRAnalyticReportSummary, TopModule])
def test_schemas_have_the_models_fields(cls):
    schema = OPENAPI["components"]["schemas"][cls.__name__]
    assert set(schema["properties"]) == {f.name for f in attrs.fields(cls)}


def test_model_endpoint_returns_the_generated_report_schema():
    response = OPENAPI["paths"]["/analytic/deepseek-ocr/{report_id}/model"]["get"]["responses"]["200"]
    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AnalyticModelReport"}
    assert OPENAPI["components"]["schemas"]["AnalyticModelReport"] == {"$ref": SCHEMA_PATH.name}
    assert set(REPORT_SCHEMA["properties"]) == {f.name for f in attrs.fields(AnalyticModelReport)}


def test_real_report_and_summary_validate_against_the_schemas(registry_url, report_files):
    report = json.loads(report_files["standard"].read_text())
    validate_component(report, "AnalyticModelReport")
    result = run_command(["summary", str(report_files["standard"]), "--db", registry_url])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    validate_component(summary, "DeepSeekOCRAnalyticReportSummary")
    assert summary["report_id"] == report["report_id"] and summary["model_variant"] == "v1"
    assert summary["predicted_total_time_ms"] > 0 and summary["measured_total_time_ms"] is None
    assert len(summary["top_modules"]) == 5
    shares = [m["share_of_model_time"] for m in summary["top_modules"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    stored = run_command(["report", report["report_id"], "--db", registry_url])
    assert json.loads(stored.stdout) == report  # the registry gives the report back, byte for byte in content
    with pytest.raises(jsonschema.ValidationError):
        validate_component({**summary, "surprise": 1}, "DeepSeekOCRAnalyticReportSummary")


def test_summary_fills_measured_time_from_a_matching_measurement(registry_url):
    data = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"
    run_command(["ingest", "--measurements", str(data), "--hardware", "h200", "--runtime", "hf-eager",
                 "--db", registry_url])

    (report_id,) = rows(registry_url, "SELECT r.report_id FROM measurements m JOIN reports r ON r.id = m.report_id "
                                      "WHERE m.row_index = 23")[0]
    summary = json.loads(run_command(["summary", report_id, "--db", registry_url]).stdout)
    assert summary["measured_total_time_ms"] == pytest.approx(5423.9833984375)
    assert summary["predicted_vs_measured_ratio"] == pytest.approx(
        summary["predicted_total_time_ms"] / summary["measured_total_time_ms"])


def test_hooks_round_trip_and_leave_reports_alone(report_files):
    converter = register_deepseek_ocr_hooks(make_converter())
    request = converter.structure({"model_id": "deepseek-ai/DeepSeek-OCR-2", "workload_profile_id":
                                   "dsocr-standard-ocr2"}, DeepSeekOCRAnalyticRequest)
    assert (request.model_variant, request.force_rebuild, request.profile_run_id) == ("ocr2", False, None)
    assert converter.structure(converter.unstructure(request), DeepSeekOCRAnalyticRequest) == request
    report = load_report(report_files["base"])
    summary = converter.structure(report, DeepSeekOCRAnalyticReportSummary)  # a report prices into a summary
    assert summary.report_id == report.report_id and summary.top_modules
    assert converter.structure(converter.unstructure(summary), DeepSeekOCRAnalyticReportSummary) == summary
    assert converter.structure(report_to_dict(report), DeepSeekOCRAnalyticReportSummary) == summary
    # registering the hooks does not change how a full report serializes
    assert json.dumps(converter.unstructure(report), indent=1) + "\n" == dumps_json(report)


@pytest.mark.parametrize("data,message", [
    ({"model_id": "acme/OCR", "workload_profile_id": "dsocr-standard-v1"}, "unknown model id 'acme/OCR'"),
    ({"model_id": "deepseek-ai/DeepSeek-OCR", "workload_profile_id": "nope"}, "unknown workload profile 'nope'"),
    ({"model_id": "deepseek-ai/DeepSeek-OCR", "workload_profile_id": "dsocr-standard-v1", "model_variant": "ocr2"},
     "does not match"),
    ({"model_id": "deepseek-ai/DeepSeek-OCR", "workload_profile_id": "dsocr-standard-v1", "speed": 1},
     "unknown request field"),
])
def test_bad_requests(data, message):
    converter = register_deepseek_ocr_hooks(cattrs.Converter())
    with pytest.raises(AnalyzerInputError, match=message):
        converter.structure(data, DeepSeekOCRAnalyticRequest)


def test_unknown_report_id_is_one_line(registry_url):
    for command in (["summary", "dsocr-000000000000000000000000"], ["report", "dsocr-000000000000000000000000"]):
        result = run_command([*command, "--db", registry_url])
        assert result.exit_code == 2
        assert result.stderr.strip() == "dsocr-registry: error: no report 'dsocr-000000000000000000000000' in the registry"


def _blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)\n```", text, re.S)


def test_mapping_commands_and_queries_run(tmp_path):
    mapping = (REPO / "contracts" / "MAPPING.md").read_text()
    commands, queries = _blocks(mapping, "sh"), _blocks(mapping, "sql")
    assert len(commands) == 3 and len(queries) == 3
    db = str(tmp_path / "contract.duckdb")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    outputs = []
    report_id = None
    for command in commands:
        line = command.replace("$DB", db).replace("$REPORT_ID", report_id or "")
        line = line.replace("python -m", f"{sys.executable} -m", 1)
        done = subprocess.run(line, shell=True, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout)
        if report_id is None:
            report_id = re.search(r"report (dsocr-[0-9a-f]{24})", done.stdout).group(1)
    validate_component({"run_id": "run-1", "report_id": report_id, "status": "done",
                        "status_url": "/analytic/deepseek-ocr/runs/run-1"}, "RunAccepted")
    validate_component(json.loads(outputs[1]), "DeepSeekOCRAnalyticReportSummary")
    validate_component(json.loads(outputs[2]), "AnalyticModelReport")

    for query in queries:
        assert rows(db, query.replace("$REPORT_ID", report_id)), query
    again = subprocess.run(commands[0].replace("$DB", db).replace("python -m", f"{sys.executable} -m", 1),
                           shell=True, capture_output=True, text=True, env=env, timeout=600)
    assert "(reused from the registry)" in again.stdout


def test_manual_export_script_runs():
    script = REPO / "tests" / "manual" / "deepseek_ocr" / "manual_deepseek_ocr_model_export.py"
    done = subprocess.run([sys.executable, str(script), "--profile", "dsocr-base-v1"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: JSON and YAML exports load back into the same AnalyticModelReport" in done.stdout
