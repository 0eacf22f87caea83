"""Hostile files: an alias bomb, nesting 200,000 deep, integers past what the columns hold, strings a backend would
store differently. Each is refused in bounded time and memory with one line of at most 300 characters naming it
and the key path; the good report beside it is stored; DuckDB and PostgreSQL give the same verdicts."""

import io
import json
import os
import subprocess
import sys
import time

import pytest

from analyzer import fileio
from analyzer.report import ReportFormatError, loads
from tests.helpers import REPO, reid, rows, run_command, table_counts

MEMORY_LIMIT_BYTES = 512 * 2**20
SECONDS_PER_FILE = 5.0


def alias_bomb() -> str:
    """600 bytes that expand to 9**9 (387 million) values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def _edited(report_files, edit) -> str:
    data = json.loads(report_files["standard_256"].read_text())
    edit(data)
    return json.dumps(reid(data))


def hostile_files(report_files) -> dict[str, tuple[str, str]]:
    """name -> (content, the fragment its one line must hold)."""
    def two_huge_stages(data):
        data["stages"][0]["flops"] = data["stages"][1]["flops"] = 2**63 - 1

    return {
        "bomb.yaml": (alias_bomb(), "bomb.yaml: line 2: YAML aliases (*'a0') are not accepted here"),
        "deep.json": ("[" * 200_000 + "]" * 200_000, "nesting deeper than 32 levels"),
        "flops.json": (_edited(report_files, lambda d: d["stages"][0].update(flops=2**70)),
                       "stages[0].flops: 1180591620717411303424 is beyond the 64-bit integer range"),
        "total.json": (_edited(report_files, two_huge_stages),  # and "... (column reports.total_flops holds ...)"
                       "total.json: stages[].flops (their sum): 1844674"),
        "batch.json": (_edited(report_files, lambda d: d["workload"].update(batch=2**31)),
                       "workload.batch: 2147483648 does not fit the registry (column workloads.batch holds 32-bit "
                       "integers)"),
        "depth.json": (_edited(report_files, lambda d: d["modules"][3].update(depth=2**40)),
                       "modules[3].depth: 1099511627776 does not fit the registry"),
        "name.json": (_edited(report_files, lambda d: d.update(model_id="m" * 201)),
                      "model_id: 'mmmmmmmmmm"),
        "nul.json": (_edited(report_files, lambda d: d["modules"][2].update(class_name="Linear\x00")),
                     "modules[2].class_name: 'Linear\\x00' holds a NUL character"),
        "surrogate.json": (_edited(report_files, lambda d: d.update(notes=["\ud800"])),
                           "notes[0]: '\\ud800' holds an unpaired UTF-16 surrogate"),
        "duplicate.json": ('{"schema_version": 3, "schema_version": 3}', "duplicate key 'schema_version'"),
        "bigint.yaml": ("schema_version: " + "9" * 5000 + "\n", "beyond the 64-bit integer range"),
        "digits.json": ('{"schema_version": ' + "9" * 5000 + "}", "beyond the 64-bit integer range"),
        "key.json": (json.dumps({"k" * 201: 1}), "is longer than 200 characters"),
        "long.json": (json.dumps({"model_id": "x" * 100_001}), "string of 100,001 characters exceeds the limit"),
    }


def test_hostile_reports_are_refused_alone_on_both_backends(registry_url, report_files, tmp_path):
    files = hostile_files(report_files)
    for name, (content, _) in files.items():
        (tmp_path / name).write_text(content, "utf-8", errors="surrogatepass")
    before = table_counts(registry_url)
    for name in files:  # each alone beside the good report: bounded time, one line naming it and the key path
        started = time.perf_counter()
        result = run_command(["ingest", str(tmp_path / name), str(report_files["standard"]), "--db", registry_url])
        assert time.perf_counter() - started <= SECONDS_PER_FILE, name
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip() and "already present" not in line]
        assert len(lines) == 1 and len(lines[0]) <= fileio.MESSAGE_CHARS, lines
        assert lines[0].startswith(f"{tmp_path / name}: "), lines[0]
        assert files[name][1] in lines[0], lines[0]
        assert "Traceback" not in result.output and "internal error" not in result.output
    assert rows(registry_url, "SELECT source FROM reports") == [(str(report_files["standard"]),)]
    after = table_counts(registry_url)
    assert after["reports"] == before["reports"] + 1 and after["architectures"] == 1 and after["workloads"] == 1


def test_hostile_report_on_standard_input(registry_url, report_files):
    result = run_command(["ingest", "-", str(report_files["standard"]), "--db", registry_url],
                         input="[" * 200_000 + "]" * 200_000)
    assert result.exit_code == 1
    assert result.stderr.strip() == "<stdin>: nesting deeper than 32 levels"
    assert "1 new" in result.stdout
    result = run_command(["ingest", "-", "--db", registry_url], input=alias_bomb())
    assert result.stderr.strip() == "<stdin>: line 2: YAML aliases (*'a0') are not accepted here"


def test_hostile_files_in_bounded_memory(report_files, tmp_path):
    """The CLI in a process of its own: the hostile files and a good one in one ingest, peak memory measured."""
    files = hostile_files(report_files)
    paths = []
    for name, (content, _) in files.items():
        (tmp_path / name).write_text(content, "utf-8", errors="surrogatepass")
        paths.append(str(tmp_path / name))
    cli = [sys.executable, "-c", "from registry.interfaces.cli import main; main()", "ingest", *paths,
           str(report_files["standard"]), "--db", str(tmp_path / "r.duckdb")]
    # A small parent runs the CLI and reports its peak resident memory (the children of this test process would
    # include forks of it, which count its own pages).
    measure = ("import json, resource, subprocess, sys; "
               "r = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True); print(json.dumps([r.returncode, r.stdout, r.stderr, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024]))")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", measure, json.dumps(cli)], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    seconds = time.perf_counter() - started
    code, stdout, stderr, peak_bytes = json.loads(result.stdout)
    assert code == 1, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == len(files) and all(len(line) <= fileio.MESSAGE_CHARS for line in lines), lines
    assert f"1 new, 0 skipped (already present), {len(files)} failed" in stdout
    assert peak_bytes <= MEMORY_LIMIT_BYTES, peak_bytes
    assert seconds <= SECONDS_PER_FILE * (len(files) + 1) + 30  # the interpreter's start (imports) included


def test_an_unexpected_error_is_one_line_and_the_other_files_go_in(registry_url, report_files, monkeypatch):
    """A bug while writing one report ends in that report's line (and a traceback only with DSOCR_DEBUG=1): the
    batch it was in fails, and its reports written one by one find the one the bug is in."""
    import registry.store.ingest as ingest
    from analyzer.report import load_report

    original = ingest.metric_columns
    broken_id = load_report(report_files["base"]).report_id

    def metric_columns(report, *args, **kwargs):
        if report.report_id == broken_id:
            raise KeyError("boom")
        return original(report, *args, **kwargs)

    monkeypatch.setattr(ingest, "metric_columns", metric_columns)
    paths = [str(report_files["base"]), str(report_files["standard"])]
    result = run_command(["ingest", *paths, "--db", registry_url])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"{report_files['base']}: internal error: KeyError: 'boom' (DSOCR_DEBUG=1 "
                                     "shows the traceback)")
    assert "1 new" in result.stdout
    monkeypatch.setenv("DSOCR_DEBUG", "1")
    result = run_command(["ingest", *paths, "--db", registry_url])
    assert "Traceback (most recent call last)" in result.stderr and "KeyError: 'boom'" in result.stderr
    monkeypatch.delenv("DSOCR_DEBUG")
    result = run_command(["--debug", "ingest", *paths, "--db", registry_url])
    assert "Traceback (most recent call last)" in result.stderr
    assert os.environ.pop("DSOCR_DEBUG") == "1"  # what --debug set


def test_an_unexpected_error_of_a_command_is_one_line(registry_url, monkeypatch, tmp_path):
    import registry.store.export as export

    def fail(*args, **kwargs):
        raise ZeroDivisionError("x" * 5000)

    monkeypatch.setattr(export, "export_parquet", fail)
    result = run_command(["export", "--parquet", str(tmp_path / "out"), "--db", registry_url])
    assert result.exit_code == 3
    line = result.output.strip()
    assert "\n" not in line and len(line) <= fileio.MESSAGE_CHARS
    assert line.startswith("dsocr-registry: error: internal error: ZeroDivisionError: xxxx")


# -- the limits, one reader --------------------------------------------------------------------------------------

def test_integers_up_to_64_bits():
    assert fileio.parse_document('{"a": [9223372036854775807, -9223372036854775808]}', "json") == {
        "a": [2**63 - 1, -2**63]}
    with pytest.raises(fileio.InputLimitError, match=r"^a\[1\]: -9223372036854775809 is beyond"):
        fileio.parse_document('{"a": [0, -9223372036854775809]}', "json")
    with pytest.raises(fileio.InputLimitError, match=r"^b\.c: 9223372036854775808 is beyond"):
        fileio.parse_document("b: {c: 9223372036854775808}", "yaml")


def test_nesting_depth_limit():
    fileio.parse_document("[" * 32 + "]" * 32, "json")
    with pytest.raises(fileio.InputLimitError, match="nesting deeper than 32 levels"):
        fileio.parse_document("[" * 33 + "]" * 33, "json")
    with pytest.raises(fileio.InputLimitError, match="nesting deeper than 32 levels") as caught:
        fileio.parse_document("a:\n" + "".join("  " * i + "- \n" for i in range(40)), "yaml")
    assert caught.value.line is not None


def test_aliases_refused_or_capped():
    text = "base: &b {x: 1}\none: *b\n"
    with pytest.raises(fileio.InputLimitError, match=r"YAML aliases \(\*'b'\) are not accepted here") as caught:
        fileio.parse_document(text, "yaml")
    assert caught.value.located("s.yaml") == "s.yaml:2: YAML aliases (*'b') are not accepted here"
    assert fileio.parse_document(text, "yaml", aliases=True) == {"base": {"x": 1}, "one": {"x": 1}}
    started = time.perf_counter()
    with pytest.raises(fileio.InputLimitError, match="YAML aliases expand to more than 100,000 values"):
        fileio.parse_document(alias_bomb(), "yaml", aliases=True)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(fileio.InputLimitError, match="refers to no finished value"):
        fileio.parse_document("a: &a [1, *a]\n", "yaml", aliases=True)


def test_duplicate_keys_and_strings():
    with pytest.raises(fileio.InputLimitError, match="duplicate key 'a'"):
        fileio.parse_document('{"a": 1, "b": {}, "a": 2}', "json")
    with pytest.raises(fileio.InputLimitError, match="duplicate key 'a'") as caught:
        fileio.parse_document("a: 1\nb: 2\na: 3\n", "yaml")
    assert caught.value.line == 3
    with pytest.raises(fileio.InputLimitError, match=r"^x\[0\]: 'a\\x00' holds a NUL character"):
        fileio.parse_document('{"x": ["a\\u0000"]}', "json")
    with pytest.raises(fileio.InputLimitError, match="non-finite number Infinity"):
        fileio.parse_document('{"x": Infinity}', "json")
    with pytest.raises(fileio.InputLimitError, match=r"^x: non-finite number inf"):
        fileio.parse_document("x: .inf\n", "yaml")
    with pytest.raises(fileio.InputLimitError, match="unsupported value .* of type date"):
        fileio.parse_document("x: 2024-01-01\n", "yaml")


def test_file_size_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 600_000 + "0]")
    with pytest.raises(fileio.InputLimitError, match=r"file of 1,200,003 bytes exceeds the limit of 1,048,576 bytes"):
        fileio.read_input(path, fileio.MAX_SMALL_FILE_BYTES)
    with pytest.raises(ValueError, match="exceeds the limit"):
        fileio.load_document(path, "json", fileio.MAX_SMALL_FILE_BYTES, ValueError)
    # a device is refused before it is opened; standard input that never ends is read only up to the limit
    with pytest.raises(fileio.NotRegularFileError, match="a character device"):
        fileio.read_input("/dev/zero", fileio.MAX_SMALL_FILE_BYTES)
    with open("/dev/zero", "rb") as zeros:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(zeros))
        with pytest.raises(fileio.InputLimitError, match="exceeds the limit of 1,048,576 bytes"):
            fileio.read_input(None, fileio.MAX_SMALL_FILE_BYTES)


def test_quote_and_one_line():
    assert fileio.quote("x" * 500) == repr("x" * 100) + "... (500 characters)"
    assert fileio.quote(2**2000) == "an integer of 2,001 bits"
    assert fileio.quote(list(range(10**6))) == "a list of 1,000,000 items"
    assert fileio.one_line("a\nb  c" + "d" * 400) == ("a b c" + "d" * 400)[:297] + "..."
    error = ReportFormatError("y" * 10_000)
    assert len(str(error)) == 300
    with pytest.raises(ReportFormatError, match=r"^malformed YAML \(.*\)$|^line \d+: malformed YAML"):
        loads("a: [\n", "yaml")


def test_sql_file_limits(registry_url, tmp_path):
    query = tmp_path / "q.sql"
    query.write_bytes(b"SELECT 1 -- \x00\n")
    result = run_command(["sql", "--file", str(query), "--db", registry_url])
    assert result.exit_code == 2
    assert result.output.strip() == f"dsocr-registry: error: {query}:1: a NUL character"
    query.write_bytes(b"SELECT '\xff'")
    result = run_command(["sql", "--file", str(query), "--db", registry_url])
    assert result.output.strip() == f"dsocr-registry: error: {query}: not UTF-8 text (byte 8)"


def test_catalog_values_fit_their_columns(registry_url, tmp_path):
    hardware = tmp_path / "gpu.yaml"
    hardware.write_text(f"name: {'g' * 101}\ndense_bf16_tflops: 100\nmemory_tb_per_s: 2\nmemory_gb: 80\n")
    result = run_command(["hardware", "add", str(hardware), "--db", registry_url])
    assert result.exit_code == 2
    assert result.output.strip().endswith("name: 101 characters; the registry holds at most 100 characters")
    assert len(result.output.strip()) <= fileio.MESSAGE_CHARS


def _full_walk_refuses(data, monkeypatch) -> bool:
    with monkeypatch.context() as patched:
        patched.setattr(fileio, "_within_limits", lambda _: False)
        try:
            fileio.check_values(data)
        except fileio.InputLimitError:
            return True
    return False


def _nested(depth: int):
    data: list = []
    for _ in range(depth - 1):
        data = [data]
    return data


@pytest.mark.parametrize("data", [
    _nested(fileio.MAX_DEPTH), _nested(fileio.MAX_DEPTH + 1), {"k" * 200: 1}, {"k" * 201: 1},
    ["s" * fileio.MAX_STRING_CHARS], ["s" * (fileio.MAX_STRING_CHARS + 1)], {"a": [2**63 - 1, -2**63]},
    {"a": [2**63]}, {"a": -2**63 - 1}, [1.5, -0.0, 1e308], [float("inf")], [float("nan")], {"a\x00": 1},
    ["\ud800"], [{1: 2}], [{"a": (1,)}], [True, False, None], 5, "x"])
def test_the_quick_walk_accepts_exactly_what_the_full_walk_accepts(data, monkeypatch):
    """Reading a report skips the full walk (key paths) when the quick one passes: the two agree at every limit."""
    refused = _full_walk_refuses(data, monkeypatch)
    if isinstance(data, (dict, list)):
        assert fileio._within_limits(data) is not refused
    assert refused == (data in (_nested(fileio.MAX_DEPTH + 1), {"k" * 201: 1},
                                ["s" * (fileio.MAX_STRING_CHARS + 1)], {"a": [2**63]}, {"a": -2**63 - 1},
                                {"a\x00": 1}, ["\ud800"], [{1: 2}], [{"a": (1,)}])
                       or data == [float("inf")] or repr(data) == "[nan]")


def test_the_quick_walk_agrees_with_the_full_walk_on_random_documents(monkeypatch):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(min_value=-2**65, max_value=2**65)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4))
    documents = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                             | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), children, max_size=4),
                             max_leaves=25)

    @settings(max_examples=int(os.environ.get("DSOCR_FUZZ_EXAMPLES", "10")) * 20, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(documents, max_size=4))
    def agree(data):
        assert fileio._within_limits(data) is not _full_walk_refuses(data, monkeypatch)

    agree()
