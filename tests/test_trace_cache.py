"""The persistent trace cache: where it lives, what it trusts, and that a hit needs neither torch nor
transformers."""

import json
import os
import subprocess
import sys
import threading

import pytest

from analyzer import analysis, trace_cache
from analyzer.analysis import analyze, analyze_traced
from analyzer.execution import Execution
from analyzer.frame import FamilyKey
from analyzer.report import dumps_json
from analyzer.workload import Workload
from tests.helpers import REPO, run_command

WORKLOAD = Workload(variant="v1", mode="tiny", batch=2, new_tokens=50)
EXECUTION = Execution("hf-eager")
KEY = FamilyKey.of(WORKLOAD, EXECUTION)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty cache of this test's own; frames this process holds are forgotten before and after."""
    monkeypatch.setenv(trace_cache.CACHE_ENV, str(tmp_path / "cache"))
    analysis._FRAMES.clear()
    yield tmp_path / "cache"
    analysis._FRAMES.clear()


def _entry(cache_dir):
    entries = trace_cache.entries()
    assert len(entries) == 1 and entries[0].parent == cache_dir
    return entries[0]


def test_a_family_is_traced_once_and_read_back_exactly(cache_dir):
    first = analyze(WORKLOAD, EXECUTION)
    path = _entry(cache_dir)
    stored = trace_cache.load_frame(KEY)
    assert stored == analysis._FRAMES[KEY]  # every trace, fit and the module tree, as they were
    analysis._FRAMES.clear()
    other = Workload(variant="v1", mode="tiny", batch=48, new_tokens=4096, prompt_text_tokens=200)
    assert dumps_json(analyze(other, EXECUTION)) == dumps_json(analyze_traced(other, EXECUTION))
    assert analyze(WORKLOAD, EXECUTION).report_id == first.report_id
    assert trace_cache.entries() == [path]  # the same family: no second entry


def test_the_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(trace_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert trace_cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(trace_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert trace_cache.cache_dir() == tmp_path / "xdg" / "dsocr-registry"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert trace_cache.cache_dir() == tmp_path / "home" / ".cache" / "dsocr-registry"


@pytest.mark.parametrize("component", ["analyzer_version", "analyzer_source", "torch", "transformers"])
def test_an_entry_of_another_analyzer_torch_or_transformers_is_not_used(cache_dir, monkeypatch, component):
    analyze(WORKLOAD, EXECUTION)
    path = _entry(cache_dir)
    assert trace_cache.load_frame(KEY) is not None
    other = {**trace_cache.environment(), component: "another"}
    monkeypatch.setattr(trace_cache, "environment", lambda: other)
    assert trace_cache.entry_path(KEY) != path  # another version looks under another name...
    assert trace_cache.load_frame(KEY) is None
    os.replace(path, trace_cache.entry_path(KEY))  # ...and an entry of this one put under that name is refused
    assert trace_cache.load_frame(KEY) is None


def _damage_payload(raw: bytes) -> bytes:
    """One digit of a count changed: still JSON, of the same length."""
    header, _, payload = raw.partition(b"\n")
    at = payload.index(b'"peak":') + len(b'"peak":')
    digit = b"1" if payload[at:at + 1] != b"1" else b"2"
    return header + b"\n" + payload[:at] + digit + payload[at + 1:]


@pytest.mark.parametrize("damage", [
    _damage_payload,
    lambda raw: raw[: len(raw) // 2],  # a torn write
    lambda raw: b"garbage\n" + raw,
    lambda raw: raw.replace(b'"sha256":"', b'"sha256":"0', 1),
    lambda raw: b"",
], ids=["changed-count", "truncated", "bad-header", "bad-checksum", "empty"])
def test_a_corrupted_entry_is_rebuilt_never_trusted(cache_dir, damage):
    expected = analyze(WORKLOAD, EXECUTION)
    path = _entry(cache_dir)
    good = path.read_bytes()
    path.write_bytes(damage(good))
    assert trace_cache.load_frame(KEY) is None
    analysis._FRAMES.clear()
    again = analyze(WORKLOAD, EXECUTION)  # traced again, and the entry rewritten whole
    assert dumps_json(again) == dumps_json(expected)
    assert path.read_bytes() == good
    assert trace_cache.load_frame(KEY) is not None


def test_concurrent_writers_leave_one_whole_entry(cache_dir):
    analyze(WORKLOAD, EXECUTION)
    frame = analysis._FRAMES[KEY]
    path = _entry(cache_dir)
    good = path.read_bytes()
    path.unlink()
    seen: list = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            seen.append(trace_cache.load_frame(KEY))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=lambda: [trace_cache.store_frame(frame) for _ in range(5)])
               for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()
    assert trace_cache.entries() == [path] and path.read_bytes() == good
    assert sorted(p.name for p in cache_dir.iterdir()) == [path.name]  # no temporary file left
    assert all(found is None or found == frame for found in seen)  # a reader sees no entry or a whole one


@pytest.mark.parametrize("prompt", [9, 200])
def test_a_cache_hit_imports_neither_torch_nor_transformers(cache_dir, prompt):
    """Another batch, output and prompt length of a family traced before (WORKLOAD: 9 prompt tokens)."""
    analyze(WORKLOAD, EXECUTION)
    assert trace_cache.load_frame(KEY).prefill_fit is not None  # fitted when the family was traced
    code = ("import sys\n"
            "from analyzer.analysis import analyze\n"
            "from analyzer.workload import Workload\n"
            "report = analyze(Workload(variant='v1', mode='tiny', batch=7, new_tokens=333, "
            f"prompt_text_tokens={prompt}))\n"
            "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
            "print(report.report_id, loaded)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, trace_cache.CACHE_ENV: str(cache_dir)}, check=True)
    expected = analyze_traced(Workload(variant="v1", mode="tiny", batch=7, new_tokens=333,
                                       prompt_text_tokens=prompt), EXECUTION).report_id
    assert result.stdout.split() == [expected, "[]"]


def test_cli_no_cache_info_and_clear(cache_dir, tmp_path):
    out = tmp_path / "r.json"
    result = run_command(["analyze", "--variant", "v1", "--mode", "tiny", "--batch", "2", "--no-cache", "-q",
                          "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert trace_cache.entries() == []  # --no-cache writes nothing
    traced = out.read_text()
    result = run_command(["analyze", "--variant", "v1", "--mode", "tiny", "--batch", "2", "-q", "-o", str(out)])
    assert result.exit_code == 0 and out.read_text() == traced
    info = run_command(["cache", "info"])
    assert info.exit_code == 0 and f"trace cache: {cache_dir} (1 entry" in info.output
    assert trace_cache.entries()[0].name in info.output
    cleared = run_command(["cache", "clear"])
    assert cleared.exit_code == 0 and "removed 1 file" in cleared.output
    assert trace_cache.entries() == []
    assert json.loads(traced)["report_id"].startswith("dsocr-")
