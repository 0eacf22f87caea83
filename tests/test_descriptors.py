"""Variants and executions are one entry each (analyzer/variants.py, analyzer/execution.py): what reads them, what
an unknown name gets (one line, never a default), and a fake entry added in a temporary copy of the package."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import sqlalchemy as sa
import yaml

from analyzer.errors import AnalyzerInputError
from analyzer.execution import (EXECUTION_SPECS, MEMORY_MODELS, Execution, execution_spec,
                                executions_with_memory_model)
from analyzer.variants import VARIANT_NAMES, VARIANTS, model_variant
from tests.helpers import REPO, run_command

UNKNOWN = "unknown execution 'sglang'; expected one of: hf-eager, vllm"


# -- executions --------------------------------------------------------------------------------------------------

def test_an_unknown_execution_is_refused_by_the_library_in_one_line():
    for name in ("sglang", None, ""):
        with pytest.raises(AnalyzerInputError) as caught:
            execution_spec(name)
        assert "\n" not in str(caught.value) and str(caught.value).startswith("unknown execution")
    with pytest.raises(AnalyzerInputError, match=UNKNOWN):
        execution_spec("sglang")
    assert execution_spec(" VLLM ") is EXECUTION_SPECS["vllm"] is execution_spec(Execution.VLLM)


def test_an_unknown_execution_is_refused_by_analyze_in_one_line():
    from analyzer.analysis import analyze
    from analyzer.workload import Workload

    with pytest.raises(AnalyzerInputError, match=UNKNOWN):
        analyze(Workload(variant="v1", mode="tiny"), "sglang")
    result = run_command(["analyze", "--variant", "v1", "--mode", "tiny", "--execution", "sglang", "-q"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "--execution" in line and "'sglang' is not one of 'hf-eager', 'vllm'" in line


def test_the_memory_models_of_the_executions():
    assert executions_with_memory_model("paged-kv") == ("vllm",)
    assert executions_with_memory_model("live-set") == ("hf-eager",)
    assert set(MEMORY_MODELS) == {"paged-kv", "live-set"}
    with pytest.raises(ValueError, match="unknown memory model 'paged'"):
        executions_with_memory_model("paged")
    assert MEMORY_MODELS["paged-kv"].profile_keys == ("gpu_memory_utilization", "max_num_batched_tokens")
    assert execution_spec("vllm").memory.profile_keys == MEMORY_MODELS["paged-kv"].profile_keys


def test_a_profile_document_of_an_unknown_execution_is_refused():
    """calibrate writes the keys of the profile's memory model: an unknown execution has none to give."""
    from registry.pricing.calibrate import Profile, profile_document

    categories = {"matmul": {"compute_efficiency": 0.5, "bandwidth_efficiency": 0.5}}
    vllm = Profile("vllm", 3e-6, 2e-6, 4e-6, 3e-4, 1e-3, True, 7e-7, 0.9, 8192, categories)
    document = profile_document("mine", 1, vllm, "", "")
    assert (document["gpu_memory_utilization"], document["max_num_batched_tokens"]) == (0.9, 8192)
    eager = Profile("hf-eager", 3e-6, 2e-6, 4e-6, 3e-4, 1e-3, False, None, None, None, categories)
    assert "gpu_memory_utilization" not in profile_document("mine", 1, eager, "", "")
    with pytest.raises(AnalyzerInputError, match=UNKNOWN):
        profile_document("mine", 1, Profile("sglang", *[getattr(eager, f) for f in (
            "kernel_launch_s", "aten_call_s", "module_call_s", "stage_call_overhead_s", "decode_step_overhead_s",
            "cuda_graph_decode", "graph_kernel_s", "gpu_memory_utilization", "max_num_batched_tokens",
            "categories")]), "", "")


@pytest.fixture
def stored(registry_url, standard_v1_report, tmp_path):
    path = tmp_path / "report.json"
    from analyzer.report import write_report

    write_report(standard_v1_report, path)
    assert run_command(["ingest", str(path), "--db", registry_url]).exit_code == 0
    return registry_url, standard_v1_report.report_id


def _set(url, statement):
    from registry.store.db import Registry

    registry = Registry(url)
    try:
        with registry.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        registry.dispose()


def test_a_stored_report_of_an_unknown_execution_is_refused_in_one_line(stored):
    """A row this version cannot read (written by a newer one, or by hand) is an error, not hf-eager."""
    url, report_id = stored
    from registry.store.analyzed import stored_report_key
    from registry.store.db import Registry, RegistryError
    from registry.store.stored import load_stored_report

    _set(url, "UPDATE reports SET execution = NULL")  # stored before revision 0006: what reports ran then
    registry = Registry(url)
    try:
        assert load_stored_report(registry, report_id).execution is Execution.HF_EAGER
    finally:
        registry.dispose()
    _set(url, "UPDATE reports SET execution = 'sglang'")
    registry = Registry(url)
    try:
        with pytest.raises(RegistryError, match=f"report {report_id}: {UNKNOWN}"):
            load_stored_report(registry, report_id)
        with registry.begin() as conn, pytest.raises(RegistryError, match=f"report {report_id}: {UNKNOWN}"):
            stored_report_key(conn, report_id)  # a summary's runtime is not looked up by an unknown name
    finally:
        registry.dispose()
    result = run_command(["summary", report_id, "--db", url])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert UNKNOWN in line


def test_a_pairing_of_unknown_executions_is_refused(stored):
    """A report and a runtime that both name an unknown execution are not paired by their spelling (the views
    would price them with some memory model)."""
    url, report_id = stored
    from registry.pricing.catalog import runtime_execution
    from registry.pricing.points import PointKey, check_executions
    from registry.store.db import Registry, RegistryError

    _set(url, "UPDATE reports SET execution = 'sglang'")
    _set(url, "UPDATE runtime_profiles SET execution = 'sglang' WHERE name = 'hf-eager'")
    registry = Registry(url)
    try:
        with registry.begin() as conn:
            key = conn.execute(sa.text("SELECT id FROM reports")).scalar_one()
            runtime = conn.execute(sa.text("SELECT MIN(id) FROM runtime_profiles WHERE name = 'hf-eager'")).scalar()
            hardware = conn.execute(sa.text("SELECT MIN(id) FROM hardware")).scalar()
            with pytest.raises(RegistryError, match=UNKNOWN):
                check_executions(conn, [PointKey(key, hardware, runtime)])
            with pytest.raises(RegistryError, match=f"runtime profile {runtime}: {UNKNOWN}"):
                runtime_execution(conn, runtime)
    finally:
        registry.dispose()


# -- variants ----------------------------------------------------------------------------------------------------

def test_a_variant_is_known_by_each_of_its_spellings():
    assert VARIANT_NAMES == ("v1", "ocr2")
    for spelling, name in (("v2", "ocr2"), ("OCR2", "ocr2"), ("deepseek-ocr-2", "ocr2"), ("ocr1", "v1")):
        assert model_variant(spelling).name == name
    # measurement rows say what the CLI says (files written before said v2, and still read)
    assert model_variant("ocr2").measurement_name == "ocr2" and model_variant("v2").name == "ocr2"
    with pytest.raises(AnalyzerInputError, match="unknown variant 'v3'; expected one of: v1, ocr2"):
        model_variant("v3")


def test_each_variant_config_file_names_its_model():
    from analyzer.architecture import load_spec

    for variant in VARIANTS.values():
        assert load_spec(variant.name).model_id == variant.model_id


def test_the_shipped_schemas_list_the_variants():
    """The hand-written schemas (scenario files, the HTTP contract) enumerate the variants of analyzer/variants.py."""
    schema = json.loads((REPO / "registry" / "data" / "scenario.schema.json").read_text())["properties"]
    assert schema["base"]["properties"]["variant"]["enum"] == list(VARIANT_NAMES)
    assert schema["sweep"]["properties"]["variant"]["items"]["enum"] == list(VARIANT_NAMES)
    request = yaml.safe_load((REPO / "contracts" / "openapi.yaml").read_text())["components"]["schemas"][
        "DeepSeekOCRAnalyticRequest"]["properties"]
    assert request["model_variant"]["enum"] == [*VARIANT_NAMES, None]
    assert request["model_id"]["enum"] == [v.model_id for v in VARIANTS.values()]


# -- one entry each: a fake variant and a fake execution in a temporary copy of the package -----------------------

_FAKE_EXECUTION = '''
_EXECUTIONS += (attrs.evolve(_EXECUTIONS[1], name="vllm-test", report_notes=("Execution vllm-test.",)),)
'''
_FAKE_VARIANT = '''
VARIANTS["v1-lite"] = attrs.evolve(VARIANTS["v1"], name="v1-lite", title="DeepSeek-OCR lite",
                                   measurement_name="v1l", aliases=("lite",), model_id="test/DeepSeek-OCR-lite",
                                   modes={"base": ModeSpec(1024, None), "gundam": ModeSpec(1024, 640, 2, 4)})
'''

_CHECK = r'''
import json, sys
import analyzer
assert analyzer.__file__.startswith(sys.argv[1]), analyzer.__file__
from click.testing import CliRunner
from registry.interfaces.cli import cli
from analyzer.analysis import analyze
from analyzer.execution import Execution, executions_with_memory_model
from analyzer.schema import report_json_schema
from analyzer.variants import model_variant
from analyzer.workload import Workload
from registry.pricing.catalog import parse_runtimes

out = {}
out["analyze_help"] = CliRunner().invoke(cli, ["analyze", "--help"], terminal_width=400).output
out["measure_help"] = CliRunner().invoke(cli, ["measure", "--help"], terminal_width=400).output
out["paged"] = executions_with_memory_model("paged-kv")
out["schema_enum"] = report_json_schema()["$defs"]["Execution"]["enum"]
out["lite"] = [model_variant("LITE").name, model_variant("v1l").name]
w = dict(mode="gundam", page_width_px=1654, page_height_px=2339, new_tokens=3, batch=2)
out["layouts"] = [repr(Workload(variant=v, **w).layout) for v in ("v1-lite", "v1")]
reports = {e: analyze(Workload(variant="v1", mode="tiny", new_tokens=3, batch=2), e)
           for e in ("vllm-test", "vllm", "hf-eager")}
out["stages"] = {e: [(s.stage.value, s.calls, s.items, s.flops, s.bytes_read, s.kernel_launches)
                     for s in r.stages] for e, r in reports.items()}
out["execution"] = reports["vllm-test"].execution.value
lite = analyze(Workload(variant="v1-lite", mode="base", new_tokens=3))
out["lite_variant"] = lite.variant
out["lite_stages"] = [s.flops for s in lite.stages]
out["v1_stages"] = [s.flops for s in analyze(Workload(variant="v1", mode="base", new_tokens=3)).stages]
try:
    entry = {"name": "t", "version": 1, "execution": "vllm-test", "kernel_launch_us": 3, "aten_call_us": 2,
             "module_call_us": 4, "stage_call_overhead_ms": 0.3, "decode_step_overhead_ms": 1,
             "graph_kernel_us": 0.7, "categories": {}}
    parse_runtimes([entry], "fake")
except Exception as exc:
    out["runtime_error"] = str(exc)
print(json.dumps(out))
'''


def test_a_new_execution_and_a_new_variant_are_one_entry_each(tmp_path):
    """Add one ExecutionSpec and one ModelVariant in a copy of the package: the CLI's choices and help, the report
    schema's enum, the memory-model listing, the runtime catalog and the tracer's dispatch all pick them up."""
    copy = tmp_path / "copy"
    for folder in ("analyzer", "registry", "contracts", "queries", "migrations"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "alembic.ini", copy / "alembic.ini")
    for path, anchor, addition in (
            (copy / "analyzer" / "execution.py", "EXECUTION_SPECS: dict[str, ExecutionSpec] =", _FAKE_EXECUTION),
            (copy / "analyzer" / "variants.py", "\nVARIANT_NAMES = ", _FAKE_VARIANT)):
        text = path.read_text()
        assert text.count(anchor) == 1
        path.write_text(text.replace(anchor, addition + anchor))
    env = dict(os.environ, PYTHONPATH=str(copy))
    done = subprocess.run([sys.executable, "-c", _CHECK, str(copy)], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    help_text = " ".join(out["analyze_help"].split())
    assert "[hf-eager|vllm|vllm-test]" in help_text
    assert "or vllm-test (paged KV, one image at a time" in help_text
    assert "v1 (DeepSeek-OCR), ocr2 (DeepSeek-OCR-2) or v1-lite (DeepSeek-OCR lite)" in help_text
    assert "v1-lite: base, gundam." in help_text and "4 for v1-lite" in help_text
    assert "v1, ocr2 or v1-lite." in " ".join(out["measure_help"].split())
    assert out["paged"] == ["vllm", "vllm-test"]
    assert out["schema_enum"] == ["hf-eager", "vllm", "vllm-test"]
    assert out["lite"] == ["v1-lite", "v1-lite"]
    lite, v1 = out["layouts"]
    assert "tiles_wide=2, tiles_high=3" in v1 and "tiles_wide=1, tiles_high=2" in lite  # at most 4 tiles
    # the tracer dispatches on the entry's attributes: the copy of vllm traces as vllm does, unlike hf-eager
    assert out["execution"] == "vllm-test"
    assert out["stages"]["vllm-test"] == out["stages"]["vllm"] != out["stages"]["hf-eager"]
    assert out["lite_variant"] == "v1-lite" and out["lite_stages"] == out["v1_stages"]
    # the catalog asks a runtime of the new execution for the keys of its memory model
    assert "gpu_memory_utilization: missing (the vllm-test memory model needs it)" in out["runtime_error"]
