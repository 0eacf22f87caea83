"""Inputs that must never reach the code that uses them: paths that are not regular files (a FIFO's open blocks
forever, a device never ends), globs through symlink loops or past the file limit, numbers beyond their physical
range (an int64 block size that loops the simulation, a page count that allocates gigabytes, a memory size that
overflows a column), and control characters in names and keys. Each is refused in one line naming the file and the
key, quickly, with nothing written; DuckDB and PostgreSQL alike."""

import contextlib
import io
import json
import os
import pathlib
import socket
import tempfile
import threading
import time

import numpy as np
import pytest

from analyzer import fileio, ranges
from tests.helpers import rows, run_command

SECONDS = 2.0  # a refusal, in-process (the commands' imports are done by the first call)
COUNTED = ("scenarios", "scenario_points", "serving_points", "hardware", "runtime_profiles", "reports",
           "measurement_sets")


@pytest.fixture(scope="module", autouse=True)
def imported():
    """The modules the commands import on first use, imported before anything is timed."""
    import registry.pricing.catalog  # noqa: F401
    import registry.store.ingest  # noqa: F401
    import registry.store.measurements  # noqa: F401
    import registry.serving.scenario  # noqa: F401
    import registry.pricing.whatif  # noqa: F401


def counts(url) -> dict[str, int]:
    return dict(zip(COUNTED, rows(url, "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in COUNTED))[0]))


@contextlib.contextmanager
def unblocking(fifo, after_s: float = 5.0):
    """A watchdog: if the block has not ended `after_s` seconds in, open the FIFO's write end now and then, so that
    a reader blocked on it gets an empty file and the test fails on its assertions instead of hanging."""
    done = threading.Event()

    def release():
        if done.wait(after_s):
            return
        while not done.wait(0.2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader blocked on it
                pass

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join()


def one_line(result) -> str:
    """The one line a refused command writes to stderr (an ingest also prints its summary on stdout)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines[:5]
    line = lines[0]
    assert len(line) <= fileio.MESSAGE_CHARS and "Traceback" not in result.output, line
    assert "internal error" not in line, line
    assert line.isprintable(), repr(line)  # no raw control character reaches the terminal
    return line


def refused(args, fifo=None, code=2):
    started = time.perf_counter()
    with unblocking(fifo) if fifo is not None else contextlib.nullcontext():
        result = run_command(args)
    seconds = time.perf_counter() - started
    assert result.exit_code == code, result.output[-2000:]
    if code == 2:
        assert result.stdout == "", result.stdout[-2000:]
    return one_line(result), seconds


# -- regular files only -----------------------------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "input.json"
    os.mkfifo(path)
    return path


FIFO_COMMANDS = {
    "ingest": (["ingest", "{fifo}"], 1),
    "ingest --measurements": (["ingest", "--measurements", "{fifo}", "--hardware", "h200", "--runtime", "hf-eager"], 2),
    "compare --measurements": (["compare", "--measurements", "{fifo}", "--hardware", "h200", "--runtime",
                                "hf-eager"], 2),
    "whatif --scenario": (["whatif", "--scenario", "{fifo}"], 2),
    "serve-sim --scenario": (["serve-sim", "--scenario", "{fifo}"], 2),
    "sql --file": (["sql", "--file", "{fifo}"], 2),
    "hardware add": (["hardware", "add", "{fifo}"], 2),
    "runtime add": (["runtime", "add", "{fifo}"], 2),
    "a scenario's profile": (["whatif", "--scenario", "{scenario}"], 2),
    "serve --token-file": (["serve", "--port", "0", "--token-file", "{fifo}"], 2),
}


@pytest.mark.parametrize("command", list(FIFO_COMMANDS))
def test_a_fifo_is_refused_by_every_command_in_one_line(command, fifo, registry_url, tmp_path):
    args, code = FIFO_COMMANDS[command]
    scenario = tmp_path / "profiled.yaml"
    scenario.write_text(f"base: {{profile: {json.dumps(str(fifo))}}}\nsweep: {{hardware: [h200]}}\n")
    before = counts(registry_url)
    line, seconds = refused([a.format(fifo=fifo, scenario=scenario) for a in args] + ["--db", registry_url],
                            fifo, code)
    assert seconds <= SECONDS, seconds
    assert f"{fifo}: " in line and "not a regular file (a FIFO)" in line, line
    assert counts(registry_url) == before


def test_a_fifo_as_a_workload_profile_of_analyze(fifo, tmp_path):
    line, seconds = refused(["analyze", "-w", str(fifo), "-o", str(tmp_path / "out.json")], fifo)
    assert seconds <= SECONDS and line.endswith(f"{fifo}: not a regular file (a FIFO)"), line


def test_the_reader_refuses_every_kind_of_file_but_a_regular_one(tmp_path, monkeypatch):
    fifo_path = tmp_path / "f"
    os.mkfifo(fifo_path)
    sock_path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        for path, kind in ((fifo_path, "a FIFO"), (tmp_path, "a directory"), ("/dev/null", "a character device"),
                           (sock_path, "a socket")):
            with unblocking(fifo_path), pytest.raises(fileio.NotRegularFileError) as caught:
                fileio.read_input(path, 100)
            assert caught.value.strerror == f"not a regular file ({kind})"
            with pytest.raises(ValueError, match=rf"^{path}: not a regular file \({kind}\)$"):
                fileio.load_document(path, "json", 100, ValueError)
    finally:
        server.close()
    regular = tmp_path / "r.json"
    regular.write_text("{}")
    assert fileio.read_input(regular, 100) == b"{}"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"SELECT 1")))
    assert fileio.load_text(None, 100, ValueError) == "SELECT 1"  # standard input stays allowed
    # a FIFO put in the place of the file after it was looked at: the open does not block, and it is refused
    real_stat = os.stat
    monkeypatch.setattr(fileio.os, "stat", lambda name, *a, **k: real_stat(regular) if name == str(fifo_path)
                        else real_stat(name, *a, **k))
    started = time.perf_counter()
    with unblocking(fifo_path), pytest.raises(fileio.NotRegularFileError, match="a FIFO"):
        fileio.read_input(fifo_path, 100)
    assert time.perf_counter() - started <= SECONDS


def test_a_device_path_is_refused(registry_url, tmp_path):
    link = tmp_path / "zero.json"  # a link is followed: what it names is looked at
    link.symlink_to("/dev/zero")
    line, _ = refused(["ingest", str(link), "--db", registry_url], code=1)
    assert line == f"{link}: not a regular file (a character device)"
    line, _ = refused(["sql", "--file", "/dev/zero", "--db", registry_url])
    assert line.endswith("/dev/zero: not a regular file (a character device)"), line


# -- globs and folders ------------------------------------------------------------------------------------------

@pytest.fixture
def looped(tmp_path, report_files):
    """A folder with one report and two symlinks back up the tree (a walk that follows them never ends)."""
    folder = tmp_path / "reports"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "r.json").write_bytes(report_files["standard"].read_bytes())
    (folder / "d" / "up").symlink_to("..")
    (folder / "d" / "self").symlink_to(".")
    return folder


@pytest.mark.parametrize("pattern", ["{folder}", "{folder}/**/*.json", "{folder}/**"])
def test_symlink_loops_end(pattern, looped, registry_url):
    started = time.perf_counter()
    result = run_command(["ingest", pattern.format(folder=looped), "--db", registry_url])
    assert time.perf_counter() - started <= 10 and result.exit_code == 0, result.output[-2000:]
    assert "1 new" in result.stdout
    assert rows(registry_url, "SELECT source FROM reports") == [(str(looped / "d" / "r.json"),)]


def test_globs_keep_what_glob_matched(tmp_path):
    from registry.store.ingest import discover

    (tmp_path / ".hidden").mkdir()
    for name in ("a.json", ".hidden/b.json", ".c.json", "sub/d.yaml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")
    os.mkfifo(tmp_path / "e.json")
    labels = lambda pattern: [(s.label, s.error) for s in discover([str(tmp_path / pattern)])]  # noqa: E731
    assert labels("*.json") == [(str(tmp_path / "a.json"), None)]  # no dotted name, no FIFO
    assert labels("**/*.*ml") == [(str(tmp_path / "sub/d.yaml"), None)]
    assert labels(".*.json") == [(str(tmp_path / ".c.json"), None)]
    assert labels("**") == [(str(tmp_path / "a.json"), None), (str(tmp_path / "sub/d.yaml"), None)]
    assert labels("e*") == [(str(tmp_path / "e*"), "pattern matches no regular file")]
    assert labels("z*") == [(str(tmp_path / "z*"), "pattern matches no file")]


def test_more_files_than_the_limit_are_refused_before_anything_is_written(tmp_path, report_files, monkeypatch):
    import registry.store.ingest

    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(3):
        (folder / f"r{index}.json").write_bytes(report_files["standard"].read_bytes())
    monkeypatch.setattr(registry.store.ingest, "MAX_INPUT_FILES", 2)
    db = tmp_path / "new.duckdb"
    for args in ([str(folder)], [str(folder / "*.json")], [str(folder / "r0.json"), str(folder / "r1.json"),
                                                            str(folder / "r2.json")]):
        line, _ = refused(["ingest", *args, "--db", str(db)])
        assert "more than 2 input files; name fewer" in line, line
        assert not db.exists()  # the registry is not even created
    monkeypatch.setattr(registry.store.ingest, "MAX_INPUT_FILES", 3)
    assert run_command(["ingest", str(folder), "--db", str(db)]).exit_code == 0


# -- physical ranges --------------------------------------------------------------------------------------------

SERVING = ("base: {profile: dsocr-standard-v1}\nsweep: {hardware: [h100-sxm], runtime: [vllm]}\nserving:\n"
           "  {line}\n")

SERVING_RANGES = [
    ("block_size: 9223372036854775807",  # int64: the 'cannot hold' check overflowed and the simulation never ended
     "serving.block_size: must be a positive integer up to 1,024 tokens, got 9223372036854775807"),
    ("block_size: 1025", "serving.block_size: must be a positive integer up to 1,024 tokens, got 1025"),
    ("max_num_seqs: 9223372036854775807",  # did not fit serving_points.max_num_seqs: internal error
     "serving.max_num_seqs: must be a positive integer up to 65,536 sequences"),
    ("max_num_batched_tokens: 1048577", "serving.max_num_batched_tokens: must be a positive integer up to 1,048,576"),
    ("pages: {count: 1000000000}",  # numpy allocated 7.45 GiB for the pages' arrays
     "serving.pages.count: must be a positive integer up to 100,000 pages, got 1000000000"),
    ("pages: {count: 10, seed: -1}", "serving.pages.seed: must be an integer from 0 to 9,223,372,036,854,775,807"),
    ("arrival: {offline_pages: 100001}", "serving.arrival.offline_pages: must be a positive integer up to 100,000"),
    ("arrival: {rate_per_s: [1, 1.0e+300]}",
     "serving.arrival.rate_per_s: each rate must be a positive number from 1e-06 to 100,000 pages/s, got 1e+300"),
    ("arrival: {rate_per_s: [1.0e-9]}", "each rate must be a positive number from 1e-06"),
    ("gpu_memory_utilization: true", "serving.gpu_memory_utilization: must be a number in (0, 1], got True"),
    ("page_mix: {new_tokens: {median: 700, p90: 1600, max: 1000000}}",
     "serving.page_mix.new_tokens.max: must be a positive number from 1 to 8,192 tokens, got 1000000 (the "
     "context of the v1 model)"),
    ("page_mix: {new_tokens: {median: 9000, p90: 9000, max: 9000}}", "serving.page_mix.new_tokens.median"),
    ("page_mix: {page_size: [{size: 20000x1000, share: 1}]}",
     "serving.page_mix.page_size: size '20000x1000': each side must be a positive integer up to 16,384 px"),
    ("page_mix: {page_size: [{size: " + "9" * 5000 + "x1, share: 1}]}", "each side must be a positive integer"),
    # more than a few minutes of simulation, for one point (serve-sim) as for all of them (whatif)
    ("pages: {count: 30000}\n  page_mix: {new_tokens: {median: 4000, p90: 8000, max: 8192}}",
     "serving.pages: simulates about 138,900,736 new tokens (1 point x 30,000 pages x 4,630), over the limit of "
     "100,000,000: fewer pages, rates or GPUs"),
]


@pytest.mark.parametrize("line,fragment", SERVING_RANGES)
def test_serving_numbers_beyond_their_range_are_refused_up_front(line, fragment, registry_url, tmp_path):
    text = SERVING.replace("{line}", line)
    if "arrival" not in line:
        text += "  arrival: {rate_per_s: [5]}\n"
    if "pages" not in line:
        text += "  pages: {count: 10}\n"
    path = pathlib.Path(tempfile.mkdtemp(prefix="rg")) / "bad.yaml"  # short: the whole line stays under 300
    path.write_text(text)
    before = counts(registry_url)
    for command in ("whatif", "serve-sim"):
        message, seconds = refused([command, "--scenario", str(path), "--db", registry_url])
        assert seconds <= SECONDS, seconds
        assert f"{path}:" in message and fragment in message, message
    assert counts(registry_url) == before


def test_one_point_of_serve_sim_is_within_the_work_limit(tmp_path):
    """The work limit counts what runs: the whole sweep for whatif, one point for serve-sim."""
    from registry.serving.scenario import serving_spec
    from registry.pricing.whatif import ScenarioError, load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(SERVING.replace("{line}", "pages: {count: 100000}\n  arrival: {rate_per_s: [1, 2]}"))
    scenario = load_scenario(path)
    assert serving_spec(scenario, points=1).count == 100_000
    with pytest.raises(ScenarioError, match="simulates about 102,400,000 new tokens"):
        serving_spec(scenario)


STATIC = "base: {{profile: dsocr-standard-v1}}\nsweep: {{hardware: [h200]{sweep}}}\n{extra}"

STATIC_RANGES = [
    # YAML 1.1 reads a float only with a dot and a signed exponent
    ("", "overrides: {memory_gb: 1.0e+10}\n",  # did not fit scenario_points.memory_bytes: internal error
     "overrides.memory_gb: must be a positive number from 0.001 to 1,000,000 GB, got 10000000000.0"),
    ("", "overrides: {memory_gb: 1.0e+308}\n",  # int(inf): OverflowError, internal error
     "overrides.memory_gb: must be a positive number from 0.001 to 1,000,000 GB, got 1e+308"),
    ("", "overrides: {peak_tflops: 1.0e+7}\n", "overrides.peak_tflops: must be a positive number from 0.001 to "
                                               "1,000,000 TFLOP/s"),
    ("", "overrides: {memory_tb_per_s: 5000}\n", "overrides.memory_tb_per_s: must be a positive number from 0.001 "
                                                 "to 1,000 TB/s"),
    ("", "overrides: {efficiency_scale: 1.0e-9}\n", "overrides.efficiency_scale: must be a positive number from "
                                                    "0.001 to 20"),
    ("", "target: {pages_per_day: 1.0e+13}\n", "target.pages_per_day: must be a positive number up to "
                                               "1,000,000,000,000 pages"),
    ("", "target: {page_latency_s: 1.0e+7}\n", "target.page_latency_s: must be a positive number up to 1,000,000 s"),
    (", new_tokens: [9223372036854775807]", "",
     "sweep.new_tokens: new tokens must be <= 8192 (the model's context), got 9223372036854775807"),
    (", batch: [4097]", "", "sweep.batch: batch must be <= 4096, got 4097"),
    (", page: [20000x100]", "", "sweep.page: page width (px) must be <= 16384, got 20000"),
    (", tiles: [9x9]", "", "tile grid 9x9 is out of range (1..64 tiles)"),
    ("", "base: {profile: dsocr-standard-v1, prompt_text_tokens: 9223372036854775807}\n",
     "prompt text tokens must be <= 8192 (the model's context)"),
    ("", "base: {profile: dsocr-standard-v1, max_tiles: 65}\n", "max tiles must be <= 64, got 65"),
]


@pytest.mark.parametrize("sweep,extra,fragment", STATIC_RANGES)
def test_whatif_numbers_beyond_their_range_are_refused_up_front(sweep, extra, fragment, registry_url, tmp_path):
    text = STATIC.format(sweep=sweep, extra=extra)
    if extra.startswith("base:"):
        text = text.split("\n", 1)[1]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = counts(registry_url)
    message, seconds = refused(["whatif", "--scenario", str(path), "--db", registry_url])
    assert seconds <= SECONDS and f"{path}:" in message and fragment in message, message
    assert counts(registry_url) == before


@pytest.mark.parametrize("option,value,fragment", [
    ("--new-tokens", "9223372036854775807", "new tokens must be <= 8192 (the model's context)"),
    ("--prompt-tokens", "100000", "prompt text tokens must be <= 8192 (the model's context), got 100000"),
    ("--batch", "9223372036854775807", "batch must be <= 4096"),
    ("--max-tiles", "65", "max tiles must be <= 64"),
])
def test_analyze_options_beyond_their_range(option, value, fragment, tmp_path):
    out = tmp_path / "out.json"
    line, _ = refused(["analyze", "--variant", "v1", "--mode", "gundam", option, value, "-o", str(out)])
    assert not out.exists()
    assert fragment in line, line


def test_serve_sim_rate_option_is_bounded(registry_url, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SERVING.replace("{line}", "arrival: {rate_per_s: [5]}\n  pages: {count: 10}"))
    line, _ = refused(["serve-sim", "--scenario", str(path), "--rate", "1e300", "--db", registry_url])
    assert "--rate" in line and "100000" in line, line


def test_the_simulation_refuses_an_engine_past_its_ranges():
    """The library's own guard: a config past the ranges never reaches the int64 block arithmetic (cost is not
    even looked at)."""
    from registry.serving.engine import EngineConfig, Pages, simulate

    pages = Pages(arrival=np.zeros(1), family=np.zeros(1, dtype=np.int64), new_tokens=np.ones(1, dtype=np.int64))
    for field, value in (("block_size", 2**63 - 1), ("max_num_seqs", 2**63 - 1), ("max_num_batched_tokens", 0)):
        with pytest.raises(ValueError, match=f"^{field} must be a positive integer up to"):
            simulate(None, EngineConfig(**{field: value}), pages)


EDGES = {
    "high": ("overrides: {memory_gb: 1000000, peak_tflops: 1000000, memory_tb_per_s: 1000, efficiency_scale: 20}\n"
             "target: {pages_per_day: 1.0e+12, ttft_p99_s: 1000000, page_latency_p99_s: 1000000}\n"
             "serving:\n  max_num_seqs: 65536\n  max_num_batched_tokens: 1048576\n  block_size: 1024\n"
             "  gpu_memory_utilization: 1\n  arrival: {rate_per_s: [100000]}\n"
             "  pages: {count: 20, seed: 9223372036854775807}\n"
             "  page_mix: {new_tokens: {median: 8192, p90: 8192, max: 8192}}\n"),
    "low": ("overrides: {memory_gb: 1000, peak_tflops: 0.001, memory_tb_per_s: 0.001, efficiency_scale: 0.001}\n"
            "serving:\n  max_num_seqs: 1\n  block_size: 1\n  gpu_memory_utilization: 0.5\n"
            "  arrival: {rate_per_s: [0.000001]}\n  pages: {count: 3, seed: 0}\n"
            "  page_mix: {new_tokens: {median: 1, p90: 1, max: 1}}\n"),
}


@pytest.mark.parametrize("edge", list(EDGES))
def test_a_serving_scenario_at_the_edges_of_every_range_runs(edge, registry_url, tmp_path):
    path = tmp_path / f"{edge}.yaml"
    path.write_text("base: {profile: dsocr-standard-v1}\nsweep: {hardware: [h100-sxm], runtime: [vllm]}\n"
                    + EDGES[edge])
    result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output[-2000:]
    (point,) = json.loads(result.stdout)["serving"]
    assert point["pages"] == (20 if edge == "high" else 3) and point["pages_per_s"] > 0
    if edge == "low":  # one page at a time, one every 11.6 days on average
        assert point["mean_running_pages"] <= 1


def test_a_whatif_at_the_edges_of_the_overrides_runs(registry_url, tmp_path):
    for memory_gb, scale in ((1_000_000, 20), (0.001, 0.001)):
        path = tmp_path / "edge.yaml"
        path.write_text(STATIC.format(sweep="", extra=f"overrides: {{memory_gb: {memory_gb}, peak_tflops: 1000000, "
                                      f"memory_tb_per_s: 1000, efficiency_scale: {scale}}}\n"))
        result = run_command(["whatif", "--scenario", str(path), "--db", registry_url, "--format", "json"])
        assert result.exit_code == 0, result.output[-2000:]
        (point,) = json.loads(result.stdout)["points"]
        assert point["fits_in_memory"] == (memory_gb > 1)
    assert rows(registry_url, "SELECT MAX(memory_bytes) FROM scenario_points") == [(10**15,)]


def test_the_schema_states_the_ranges():
    """registry/data/scenario.schema.json gives the same bounds as analyzer/ranges.py."""
    from tests.helpers import REPO

    schema = json.loads((REPO / "registry" / "data" / "scenario.schema.json").read_text())["properties"]
    serving = schema["serving"]["properties"]
    context = ranges.context_tokens("v1")
    assert context == ranges.context_tokens("ocr2") == 8192
    expected = {
        ("overrides", "memory_gb"): ranges.MEMORY_GB, ("overrides", "peak_tflops"): ranges.PEAK_TFLOPS,
        ("overrides", "memory_tb_per_s"): ranges.MEMORY_TB_PER_S,
        ("overrides", "efficiency_scale"): ranges.EFFICIENCY_SCALE,
        ("target", "pages_per_day"): ranges.PAGES_PER_DAY, ("target", "ttft_p99_s"): ranges.TARGET_LATENCY_S,
    }
    for (section, key), bounds in expected.items():
        node = schema[section]["properties"][key]
        assert node["maximum"] == bounds.high and node.get("minimum", node.get("exclusiveMinimum")) == bounds.low
    for key, bounds in (("max_num_seqs", ranges.MAX_NUM_SEQS), ("block_size", ranges.BLOCK_SIZE),
                        ("max_num_batched_tokens", ranges.MAX_NUM_BATCHED_TOKENS)):
        assert (serving[key]["minimum"], serving[key]["maximum"]) == (bounds.low, bounds.high)
    assert serving["pages"]["properties"]["count"]["maximum"] == ranges.SIMULATED_PAGES.high
    assert serving["arrival"]["properties"]["rate_per_s"]["items"]["maximum"] == ranges.ARRIVAL_RATE_PER_S.high
    assert serving["page_mix"]["properties"]["new_tokens"]["properties"]["max"]["maximum"] == context
    assert schema["base"]["properties"]["new_tokens"]["maximum"] == context


def test_range_messages():
    assert ranges.BLOCK_SIZE.problem(16) is None and ranges.BLOCK_SIZE.problem(True) is not None
    assert ranges.BLOCK_SIZE.problem(16.0) == "must be a positive integer up to 1,024 tokens, got 16.0"
    assert ranges.GPU_MEMORY_UTILIZATION.problem(0) == "must be a number in (0, 1], got 0"
    assert ranges.GPU_MEMORY_UTILIZATION.problem(1) is None
    assert ranges.MEMORY_GB.problem(float("nan")) == "must be a positive number from 0.001 to 1,000,000 GB, got nan"
    assert ranges.SEED.problem("7") == "must be an integer from 0 to 9,223,372,036,854,775,807, got '7'"


# -- one clean line ---------------------------------------------------------------------------------------------

def test_control_characters_of_names_and_keys_are_escaped(registry_url, tmp_path):
    newline = tmp_path / "a\nb.json"
    newline.write_text("{")
    escape = tmp_path / "\x1b[2Jc.json"
    escape.write_text(json.dumps({"schema_version": 3, "k\x00": 1}))
    result = run_command(["ingest", str(newline), str(escape), "--db", registry_url])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.isprintable() for line in lines), lines
    assert lines[0].startswith(f"{tmp_path}/a\\nb.json: malformed JSON"), lines[0]
    assert lines[1].startswith(f"{tmp_path}/\\x1b[2Jc.json: "), lines[1]
    assert "k\\x00: 'k\\x00' holds a NUL character" in lines[1], lines[1]
    scenario = tmp_path / "s\n.yaml"
    scenario.write_text("base: {profile: dsocr-standard-v1, \"\\e[31mred\": 1}\nsweep: {hardware: [h200]}\n")
    line, _ = refused(["whatif", "--scenario", str(scenario), "--db", registry_url])
    assert line.startswith(f"dsocr-registry: error: {tmp_path}/s\\n.yaml:1: base.\\x1b[31mred: unknown key"), line


def test_one_line_escapes_what_a_terminal_acts_on():
    assert fileio.one_line("a\nb\r\n\tc") == "a b c"  # whitespace of a message: one space
    assert fileio.one_line("x\x1b[31my\x00z\x7f\x9b\u202e\u2028w") == "x\\x1b[31my\\x00z\\x7f\\x9b\\u202e w"
    assert fileio.printable("a\nb.json") == "a\\nb.json" and fileio.printable("é 😀") == "é 😀"
    assert fileio.key_path(("k\x00", 2, "\x1b")) == "k\\x00[2].\\x1b"
    assert fileio.quote_names(["a\nb"]) == "a\\nb"
