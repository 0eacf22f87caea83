"""`dsocr-registry analyze` and `python -m analyzer` as a user runs them."""

import pathlib
import subprocess
import sys

import pytest
from click.testing import CliRunner

from analyzer.report import load_report
from registry.interfaces.cli import cli
from tests.helpers import rows, run_command


def invoke(args):
    return run_command(args)


def test_analyze_writes_json_and_prints_a_summary(tmp_path):
    out = tmp_path / "report.json"
    result = invoke(["analyze", "--variant", "v1", "--workload", "dsocr-standard-v1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = load_report(out)
    assert report.workload.profile_id == "dsocr-standard-v1"
    assert report.workload.image_placeholder_tokens == 903
    assert "prefill" in result.output and "decode" in result.output
    assert report.report_id in result.output
    assert "top modules by FLOPs" in result.output


def test_a_profile_changed_by_options_is_not_claimed(tmp_path):
    """profile_id names the profile's own workload: options that change it leave the report without the id (its
    fields say what it is); options that repeat the profile's values keep it."""
    from analyzer.workload import load_profile

    out = tmp_path / "ocr2.json"
    result = invoke(["analyze", "--workload", "dsocr-standard-v1", "--variant", "ocr2", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = load_report(out)
    assert (report.variant, report.workload.profile_id) == ("ocr2", None)
    assert load_profile("dsocr-standard-v1", batch=4).profile_id is None
    assert load_profile("dsocr-standard-v1", new_tokens=64).profile_id is None
    assert load_profile("dsocr-standard-v1", variant="v1", batch=1, new_tokens=None).profile_id == "dsocr-standard-v1"
    assert load_profile("dsocr-standard-v1").profile_id == "dsocr-standard-v1"


def test_analyze_yaml_with_overrides(tmp_path):
    out = tmp_path / "r.yaml"
    result = invoke(["analyze", "--variant", "ocr2", "--mode", "gundam", "--page", "1654x2339", "--new-tokens",
                     "1024", "--batch", "8", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    report = load_report(out)
    assert (report.variant, report.workload.batch, report.workload.new_tokens) == ("ocr2", 8, 1024)
    assert report.workload.image_placeholder_tokens == 1121
    assert report.stages[-1].calls == 1023


@pytest.mark.parametrize("args,message", [
    (["--variant", "v9", "--mode", "base"], "unknown variant 'v9'"),
    (["--variant", "v1", "--mode", "ultra"], "unknown mode 'ultra'"),
    (["--variant", "v1", "--mode", "base", "--new-tokens", "0"], "new tokens must be >= 1"),
    (["--variant", "v1", "--mode", "base", "--new-tokens", "-3"], "new tokens must be >= 1"),
    (["--variant", "v1", "--mode", "base", "--batch", "0"], "batch must be >= 1"),
    (["--variant", "v1", "--mode", "gundam", "--page", "0x100"], "page width (px) must be >= 1"),
    (["--variant", "v1", "--mode", "gundam", "--page", "1000000x1000000"], "must be <= 16384"),
    (["--variant", "v1", "--mode", "gundam", "--page", "A4"], "not WIDTHxHEIGHT"),
    (["--mode", "base"], "give --workload PROFILE, or --variant and --mode"),
    (["--workload", "nope"], "unknown workload profile 'nope'"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, args, message):
    out = tmp_path / "report.json"
    result = invoke(["analyze", *args, "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("dsocr-registry: error:")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_malformed_profile_file(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("variant: v1\nmode: gundam\nnew_tokens: [\n")
    result = invoke(["analyze", "--workload", str(profile), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert "malformed YAML" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_help_answers_questions():
    result = CliRunner().invoke(cli, ["analyze", "--help"])
    assert result.exit_code == 0
    for word in ("--workload", "--variant", "--mode", "--page", "--tiles", "--new-tokens", "--batch", "--out",
                 "gundam-m", "1654x2339"):
        assert word in result.output


def test_console_script_and_module_entry_point_in_fresh_processes(tmp_path):
    """Two processes, same inputs: identical bytes (report ids are content-derived)."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    cmd = [sys.executable, "-m", "analyzer", "--mode", "analytic", "--model", "deepseek-ai/DeepSeek-OCR",
           "--device", "cpu", "--workload-profile-id", "dsocr-standard-v1"]
    done = subprocess.run(cmd + ["--out", str(first)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "report dsocr-" in done.stdout
    console_script = str(pathlib.Path(sys.executable).parent / "dsocr-registry")
    script = subprocess.run([console_script, "analyze", "-w", "dsocr-standard-v1", "-o", str(second), "-q"],
                            capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, script.stderr
    assert first.read_bytes() == second.read_bytes()
    bad = subprocess.run(cmd[:-1] + ["no-such-profile"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "python -m analyzer: error: unknown workload profile 'no-such-profile'; known: dsocr-base-v1, "
        "dsocr-standard-ocr2, dsocr-standard-v1"]
    bad_model = subprocess.run(cmd[:6] + ["acme/OCR"] + cmd[7:], capture_output=True, text=True, timeout=300)
    assert bad_model.returncode == 2 and "unknown model id 'acme/OCR'" in bad_model.stderr


def test_out_dash_writes_json_to_stdout_for_a_pipe_into_ingest(tmp_path):
    from analyzer.report import loads

    made = run_command(["analyze", "-w", "dsocr-base-v1", "--new-tokens", "4", "-o", "-"])
    assert made.exit_code == 0, made.output
    report = loads(made.stdout, "json")  # standard output holds the report alone
    assert report.workload.prefill_tokens == 282 and report.workload.new_tokens == 4
    assert f"report {report.report_id} -> standard output" in made.stderr
    db = str(tmp_path / "piped.duckdb")
    stored = run_command(["ingest", "-", "--db", db], input=made.stdout)
    assert stored.exit_code == 0 and "1 new" in stored.output
    assert rows(db, "SELECT report_id, prefill_tokens FROM v_reports") == [(report.report_id, 282)]
