"""Structure-aware fuzzing of every input format: Hypothesis strategies that mutate valid files, and the checks
an input must pass whatever it holds (shared by tests/test_fuzz_inputs.py and scripts/fuzz_campaign.py).

A mutated file is either accepted, or refused with exactly one line of at most MESSAGE_CHARS characters that
names the file, a non-zero exit, no traceback and no internal error, leaving the registry as it was; within
SECONDS_PER_INPUT; with the same verdict on DuckDB and PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import pathlib
import time
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.helpers import REPO, REPORT_TABLES, reid, rows, run_command

MESSAGE_CHARS = 300
SECONDS_PER_INPUT = 5.0

# -- values at and past the limits ------------------------------------------------------------------------------
EDGE_INTS = [0, 1, -1, 2**15 - 1, 2**15, 2**31 - 1, 2**31, -2**31 - 1, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64,
             10**30, 10**400]
EDGE_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324, 0.5, 1.0000000001]
EDGE_STRINGS = ["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "é" * 201, "m" * 200, "m" * 201, "x" * 1001,
                "x" * 100_001, "\u202e\u0000", "😀" * 50, "\n" * 3, "null", "1e999", "NaN", "-1", "vision",
                "dsocr-" + "0" * 24]


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


VALUES = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(), st.sampled_from(EDGE_FLOATS), st.floats(),
    st.sampled_from(EDGE_STRINGS), st.text(max_size=40), st.booleans(), st.none(),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.integers(20, 80).map(nested),
)


def _paths(data: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            out.extend(_paths(value, (*path, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out.extend(_paths(value, (*path, index)))
    return out


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


MUTATIONS = ("replace", "replace", "same_type", "same_type", "same_type", "delete", "add_key", "wrap", "stringify",
             "duplicate_item", "empty")
# A value of the same type as the one it replaces: what gets past the type checks to the range checks and the
# columns (an integer past 32 bits in an INTEGER column, a name longer than its VARCHAR).
SAME_TYPE = {
    int: st.one_of(st.sampled_from([0, 1, 2**15, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1]), st.integers(0, 2**63 - 1)),
    float: st.one_of(st.sampled_from([0.0, 5e-324, 1.0, 1e308]), st.floats(0, 1)),
    str: st.one_of(st.text(max_size=30), st.sampled_from(["m" * 200, "m" * 201, "x" * 301, "é" * 41, "😀"])),
}


@st.composite
def mutated_data(draw, base: Any) -> Any:
    """`base` with one to three edits at key paths drawn from its own structure."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            return draw(VALUES)
        path = draw(st.sampled_from(paths))
        parent, key = _get(data, path[:-1]), path[-1]
        kind = draw(st.sampled_from(MUTATIONS))
        if kind == "replace":
            parent[key] = draw(VALUES)
        elif kind == "same_type":
            kind_of = type(parent[key])
            parent[key] = draw(SAME_TYPE[kind_of]) if kind_of in SAME_TYPE else draw(VALUES)
        elif kind == "delete":
            del parent[key]
        elif kind == "add_key":
            target = parent if isinstance(parent, dict) else data
            if isinstance(target, dict):
                target[draw(st.sampled_from(["extra", "ünknown", "\x00", "x" * 300]))] = draw(VALUES)
        elif kind == "wrap":
            parent[key] = [parent[key]]
        elif kind == "stringify":
            parent[key] = str(parent[key])[:200]
        elif kind == "duplicate_item" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif kind == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], (dict, list, str)) else None
    return data


def dump(data: Any, fmt: str, ascii_only: bool = True) -> bytes:
    if fmt == "json":
        text = json.dumps(data, allow_nan=True, ensure_ascii=ascii_only)
    else:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=not ascii_only, width=200)
    return text.encode("utf-8", "surrogatepass")


TEXT_EDITS = ("none", "none", "none", "none", "truncate", "duplicate_key", "insert", "bad_byte", "alias_bomb", "deep", "bom")


@st.composite
def mutated_file(draw, base: Any, fmt: str, reidentify: bool = False) -> bytes:
    """A file of format `fmt` ("json" or "yaml") made from `base`: structure edits, then maybe a text edit
    (truncation, a duplicate key, inserted characters, an invalid byte, a YAML alias bomb, deep nesting)."""
    data = draw(mutated_data(base))
    if reidentify and isinstance(data, dict) and draw(st.integers(0, 3)):
        try:
            reid(data)
        except (TypeError, ValueError):
            pass
    raw = dump(data, fmt, draw(st.booleans()))
    edit = draw(st.sampled_from(TEXT_EDITS))
    if edit == "truncate" and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif edit == "duplicate_key":
        key = next(iter(data), "k") if isinstance(data, dict) else "k"
        if fmt == "json" and raw.startswith(b"{"):
            raw = b"{" + json.dumps(str(key)).encode() + b": 1, " + raw[1:]
        elif fmt == "yaml" and isinstance(data, dict):
            raw = yaml.safe_dump({str(key): 1}).encode() + raw
    elif edit == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.text(max_size=6)).encode("utf-8", "surrogatepass") + raw[at:]
    elif edit == "bad_byte" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + raw[at + 1:]
    elif edit == "alias_bomb" and fmt == "yaml":
        lines = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, 9)]
        raw = ("\n".join(lines) + "\n").encode() + (raw if isinstance(data, dict) else b"")
    elif edit == "deep":
        depth = draw(st.sampled_from([33, 1000, 100_000]))
        raw = b"[" * depth + b"]" * depth if fmt == "json" else b"- " * min(depth, 2000) + b"x\n"
    elif edit == "bom":
        raw = b"\xef\xbb\xbf" + raw
    return raw


@st.composite
def mutated_text(draw, base: str) -> bytes:
    """A mutated SQL file: truncated, characters inserted or replaced, NUL, invalid UTF-8, or oversized."""
    raw = base.encode()
    edit = draw(st.sampled_from(["truncate", "insert", "bad_byte", "nul", "huge", "replace_word"]))
    if edit == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif edit == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.text(max_size=8)).encode("utf-8", "surrogatepass") + raw[at:]
    elif edit == "bad_byte" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + raw[at + 1:]
    elif edit == "nul":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\x00" + raw[at:]
    elif edit == "huge":
        raw = raw + b"\n-- " + b"x" * (2**20 + 1)
    elif edit == "replace_word":
        words = raw.split(b" ")
        index = draw(st.integers(0, len(words) - 1))
        words[index] = draw(st.sampled_from([b"", b"'", b"(", b"9223372036854775808", b"1e999", b"NULL", b";",
                                             b"SELECT", b"\xff"]))
        raw = b" ".join(words)
    return raw


# Statements that would change the registry or reach outside it, composed into texts for `sql`: @T@ stands for a
# path the database server could write (replaced after the case is changed).
DANGEROUS_SQL = [
    "COPY operator_metrics TO '@T@'", "COPY (SELECT 1) TO '@T@'", "COPY (SELECT 1) TO PROGRAM 'id > @T@'",
    "COPY reports TO '@T@' (FORMAT parquet)", "EXPORT DATABASE '@T@'", "ATTACH '@T@' AS other",
    "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access = true", "PRAGMA enable_profiling",
    "SET profiling_output = '@T@'", "DELETE FROM operator_metrics", "UPDATE hardware SET memory_bytes = 1",
    "INSERT INTO hardware SELECT * FROM hardware", "DROP TABLE operator_metrics CASCADE", "TRUNCATE operator_metrics",
    "CREATE TABLE intruder AS SELECT 1 AS x", "ALTER TABLE hardware ADD COLUMN intruder INTEGER",
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM glob('/etc/*')",
    "SELECT pg_read_file('/etc/passwd')", "SELECT lo_import('/etc/passwd')", "SELECT lo_export(1, '@T@')",
    "SELECT set_config('role', 'postgres', true) AS r, query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, "
    "true, '') AS x",
    "WITH d AS (DELETE FROM operator_metrics RETURNING *) SELECT COUNT(*) FROM d",
    "SELECT * FROM operator_metrics FOR UPDATE", "CHECKPOINT", "VACUUM", "SELECT COUNT(*) AS n FROM operator_metrics",
]
SQL_WRAPPERS = ["{}", "{};", "EXPLAIN {}", "EXPLAIN ANALYZE {}", "COMMIT; {}; SELECT 1", "SELECT 1; {}",
                "BEGIN; {}; COMMIT", "ROLLBACK; {}", "/* c */ {}", "-- c\n{}", "({})", "WITH q AS ({}) SELECT 1"]


@st.composite
def dangerous_sql(draw) -> str:
    """A dangerous statement in a wrapper (EXPLAIN, several statements with COMMIT, a comment, a CTE), in upper,
    lower or mixed case, with any white space between its words; @T@ is the path it would write."""
    text = draw(st.sampled_from(SQL_WRAPPERS)).format(draw(st.sampled_from(DANGEROUS_SQL)))
    case = draw(st.sampled_from(["as is", "upper", "lower", "mixed"]))
    if case == "upper":
        text = text.upper()
    elif case == "lower":
        text = text.lower()
    elif case == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
        text = "".join(c.swapcase() if flip else c for c, flip in zip(text, flips))
    words = text.split(" ")
    gaps = draw(st.lists(st.sampled_from([" ", "  ", "\n", "\t", " \r\n "]), min_size=len(words),
                         max_size=len(words)))
    return "".join(word + gap for word, gap in zip(words, gaps)).rstrip()


def check_dangerous_sql(text: str, target: pathlib.Path, urls: list[str]) -> str:
    """`sql TEXT` on every backend: rows (exit 0), or one line and exit 2; either way the tables keep their rows
    and nothing appears in the folder of `target` (which the database server may write to)."""
    text = text.replace("@T@", str(target)).replace("@t@", str(target))
    verdicts = []
    for url in urls:
        before = table_counts(url)
        started = time.perf_counter()
        result = run_command(["sql", text, "--db", url, "--format", "csv"])
        assert time.perf_counter() - started <= SECONDS_PER_INPUT
        assert "Traceback" not in result.output and "internal error" not in result.output, (text, result.output)
        assert "root:" not in result.output, (text, url)  # /etc/passwd never comes back
        if result.exit_code == 0:
            verdicts.append("rows")
        else:
            assert result.exit_code == 2, (text, result.output[-2000:])
            _one_line_naming(result.stderr, "error")
            verdicts.append("refused")
        assert table_counts(url) == before, (text, url)
        assert list(target.parent.iterdir()) == [], (text, url)
    return verdicts[0]


# -- base files -------------------------------------------------------------------------------------------------

def small_report(report) -> dict:
    """A valid report of a few modules (the root and its children), quick to read and write."""
    from analyzer.report import report_to_dict

    data = report_to_dict(report)
    keep = {m["path"] for m in data["modules"] if m["depth"] <= 1}
    data["modules"] = [dict(m, children=[c for c in m["children"] if c in keep or f"{m['path']}.{c}" in keep
                                         or (m["path"] == "" and c in keep)])
                       for m in data["modules"] if m["path"] in keep]
    data["module_metrics"] = [s for s in data["module_metrics"] if s["module_path"] in keep]
    return reid(data)


def base_documents() -> dict[str, Any]:
    """A valid document of each structured format but reports (profiles, scenarios, measurements, catalogs)."""
    return {
        "profile": yaml.safe_load((REPO / "analyzer" / "profiles" / "dsocr-standard-v1.yaml").read_text()),
        "scenario": yaml.safe_load((REPO / "queries" / "examples" / "capacity.yaml").read_text()),
        "serving": yaml.safe_load((REPO / "queries" / "examples" / "serving.yaml").read_text()),
        "measurements": json.loads((REPO / "tests" / "data" / "h200-hf-eager-v1.json").read_text()),
        "hardware": yaml.safe_load((REPO / "registry" / "data" / "hardware.yaml").read_text())[:1],
        "runtime": yaml.safe_load((REPO / "registry" / "data" / "runtimes.yaml").read_text())[:1],
    }


SQL_QUERIES = sorted(p.read_text() for p in (REPO / "queries" / "examples").glob("*.sql"))


# -- checks -----------------------------------------------------------------------------------------------------

COUNTED_TABLES = (*REPORT_TABLES, "hardware", "runtime_profiles", "runtime_profile_categories")


def table_counts(url: str) -> dict[str, int]:
    """Rows per table, in one query (one connection)."""
    counts = rows(url, "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in COUNTED_TABLES))[0]
    return dict(zip(COUNTED_TABLES, counts))


def _one_line_naming(output: str, name: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, lines[:5]
    line = lines[0]
    assert len(line) <= MESSAGE_CHARS, (len(line), line[:400])
    assert name in line, line
    assert "Traceback" not in output and "internal error" not in line, line
    return line


def check_library_error(call, path: pathlib.Path, errors: tuple[type[BaseException], ...]) -> str:
    """A reader called directly: it returns, or raises one of `errors` with one line naming the file (call it
    once on a valid file first: the first call imports what the reader needs)."""
    started = time.perf_counter()
    try:
        call(path)
        verdict = "accepted"
    except errors as exc:
        _one_line_naming(str(exc), path.name)
        verdict = "refused"
    assert time.perf_counter() - started <= SECONDS_PER_INPUT
    return verdict


def good_report_file(base: dict, folder: pathlib.Path, serial: str) -> tuple[pathlib.Path, dict[str, int]]:
    """A valid report not yet stored (`base` with its own note), and the rows it adds to each table."""
    data = reid(dict(copy.deepcopy(base), notes=[f"good report {serial}"]))
    path = folder / f"good-{serial}.json"
    path.write_text(json.dumps(data))
    added = {"reports": 1, "report_stages": len(data["stages"]), "module_metrics": len(data["module_metrics"]),
             "operator_metrics": sum(len(s["operators"]) for s in data["module_metrics"]),
             "operator_cost_groups": len({(s["stage"], s["view_kind"], o["category_id"], o["op_calls"],
                                           o["kernel_launches"], o["flops"], o["bytes_read"], o["bytes_written"],
                                           o["weight_bytes_read"], o.get("kv_cache_bytes_read", -1),
                                           o.get("kv_cache_bytes_written", -1))
                                          for s in data["module_metrics"] for o in s["operators"]})}
    return path, added


def _ingest_verdict(path: pathlib.Path, good: pathlib.Path, added: dict[str, int], url: str) -> tuple[str, str]:
    before = table_counts(url)
    started = time.perf_counter()
    result = run_command(["ingest", str(path), str(good), "--db", url])
    assert time.perf_counter() - started <= SECONDS_PER_INPUT
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    failures = [line for line in result.stderr.splitlines() if line.strip() and "already present" not in line]
    after = table_counts(url)
    assert rows(url, "SELECT COUNT(*) FROM reports WHERE source = :s", s=str(good)) == [(1,)]  # stored beside it
    if result.exit_code == 1:
        line = _one_line_naming("\n".join(failures), str(path))
        assert "1 new" in summary and "1 failed" in summary, summary
        # the good report's rows, and nothing of the refused one
        assert after == {t: n + added.get(t, 0) for t, n in before.items()}, (before, after)
        return "refused", line.split(": ", 1)[1]
    # accepted: a mutation the format allows (a note, a name) makes another valid report, stored whole
    assert result.exit_code == 0 and not failures, result.output[-2000:]
    assert after["reports"] - before["reports"] in (1, 2), (before, after)
    return "accepted", ""


def check_report_file(raw: bytes, suffix: str, folder: pathlib.Path, base: dict, serial: str,
                      urls: list[str]) -> str:
    """Ingest a mutated report beside a good one on every backend: the same verdict everywhere; refused means
    one line naming it, exit 1, nothing of it stored, the good one stored."""
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(raw)
    good, added = good_report_file(base, folder, serial)
    verdicts = {url: _ingest_verdict(path, good, added, url) for url in urls}
    assert len(set(verdicts.values())) == 1, verdicts
    return next(iter(verdicts.values()))[0]


def check_catalog_file(raw: bytes, kind: str, folder: pathlib.Path, urls: list[str]) -> str:
    """`hardware add` / `runtime add` of a mutated catalog file: the same verdict on every backend; refused means
    one line, exit 2, the catalog unchanged."""
    path = folder / f"fuzzed-{kind}.yaml"
    path.write_bytes(raw)
    verdicts = []
    for url in urls:
        before = table_counts(url)
        started = time.perf_counter()
        result = run_command([kind, "add", str(path), "--db", url])
        assert time.perf_counter() - started <= SECONDS_PER_INPUT
        if result.exit_code == 0:
            verdicts.append("accepted")
            continue
        assert result.exit_code == 2, result.output[-2000:]
        _one_line_naming(result.output, path.name)
        assert table_counts(url) == before
        verdicts.append("refused")
    assert len(set(verdicts)) == 1, verdicts
    return verdicts[0]


def check_sql_file(raw: bytes, folder: pathlib.Path, urls: list[str]) -> str:
    """`sql --file` of a mutated query: rows, or one line and exit 2; never a traceback."""
    path = folder / "fuzzed.sql"
    path.write_bytes(raw)
    verdicts = []
    for url in urls:
        started = time.perf_counter()
        result = run_command(["sql", "--file", str(path), "--db", url, "--format", "csv"])
        assert time.perf_counter() - started <= SECONDS_PER_INPUT
        if result.exit_code == 0:
            verdicts.append("accepted")
            continue
        assert result.exit_code == 2, result.output[-2000:]
        line = _one_line_naming(result.output, "error")
        assert len(line) <= MESSAGE_CHARS
        verdicts.append("refused")
    return verdicts[0]


# -- readers called directly (their commands analyze, which takes seconds) ---------------------------------------

def read_profile(path: pathlib.Path) -> None:
    from analyzer.workload import load_profile

    load_profile(str(path))


def read_scenario(path: pathlib.Path) -> None:
    from registry.serving.scenario import serving_spec
    from registry.pricing.whatif import _overrides, expand_workloads, load_scenario

    scenario = load_scenario(path)
    _overrides(scenario)
    serving_spec(scenario)
    expand_workloads(scenario)


def read_measurements(path: pathlib.Path) -> None:
    from registry.store.measurements import parse

    parse(path)


def reader_errors() -> dict[str, tuple[type[BaseException], ...]]:
    from analyzer.errors import AnalyzerInputError
    from registry.store.db import RegistryError

    return {"profile": (AnalyzerInputError,), "scenario": (RegistryError, AnalyzerInputError),
            "serving": (RegistryError, AnalyzerInputError), "measurements": (RegistryError,)}


READERS = {"profile": read_profile, "scenario": read_scenario, "serving": read_scenario,
           "measurements": read_measurements}
