"""A sweep analyzes its points from their families' frames and stores them in batches, in process."""

import pytest

from analyzer import analysis
from analyzer.analysis import analyze_traced
from analyzer.workload import Workload
from registry.store import analyzed, ingest
from registry.store.analyzed import ensure_reports
from registry.store.db import Registry
from tests.helpers import rows

MODES = ("tiny", "small")
BATCHES = (1, 3, 7)
OUTPUTS = (1, 40)


def _workloads():
    return [Workload(variant="v1", mode=mode, batch=batch, new_tokens=new_tokens, prompt_text_tokens=9)
            for mode in MODES for batch in BATCHES for new_tokens in OUTPUTS]


@pytest.fixture
def registry(tmp_path):
    registry = Registry(str(tmp_path / "sweep.duckdb"))
    registry.ensure_schema(auto_create=True)
    yield registry
    registry.dispose()


def test_a_sweep_traces_each_family_once_and_stores_its_points_in_batches(registry, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path / "cache"))  # no family traced before
    workloads = _workloads()
    workloads.insert(3, workloads[0])  # a duplicate point is analyzed once
    built, written = [], []
    build_frame, write_batch = analysis.build_frame, ingest.write_batch

    def counted_build(workload, execution, source, **options):
        built.append((workload.mode, workload.batch == 1))
        return build_frame(workload, execution, source, **options)

    def counted_write(registry, items, force=False):
        written.append(len(items))
        return write_batch(registry, items, force)

    analysis._FRAMES.clear()
    monkeypatch.setattr(analysis, "build_frame", counted_build)
    monkeypatch.setattr(ingest, "write_batch", counted_write)
    monkeypatch.setattr(ingest, "BATCH_REPORTS", 5)
    keys = ensure_reports(registry, workloads, "sweep", progress=True)

    # four families (two modes, single item or not), each traced once
    assert sorted(built) == sorted({(mode, batch == 1) for mode in MODES for batch in BATCHES})
    assert written == [5, 5, 2]  # 12 distinct reports, at most BATCH_REPORTS a transaction
    assert "analyzing (hf-eager)" in capsys.readouterr().err  # the progress bar
    stored = dict(rows(str(registry.url.database), "SELECT id, report_id FROM reports"))
    assert len(stored) == 12 and keys[3] == keys[0]
    for workload, key in zip(workloads, keys):  # every stored report is the one a trace of its workload gives
        assert stored[key] == analyze_traced(workload).report_id
    assert ensure_reports(registry, workloads, "sweep") == keys  # all stored: nothing analyzed again
    assert len(written) == 3
    analysis._FRAMES.clear()


def test_a_batch_is_bounded_by_its_metric_rows(registry, monkeypatch):
    written = []
    write_batch = ingest.write_batch
    monkeypatch.setattr(ingest, "write_batch", lambda registry, items, force=False: (
        written.append(len(items)), write_batch(registry, items, force))[1])
    monkeypatch.setattr(ingest, "BATCH_METRIC_ROWS", 1)  # every report fills a batch
    ensure_reports(registry, _workloads()[:3], "sweep")
    assert written == [1, 1, 1]


def test_a_batch_refused_while_the_next_is_analyzed_stops_the_sweep(registry, monkeypatch):
    """Batches are written while the next is analyzed; a batch the registry refuses ends the sweep with its line,
    and no later batch is written."""
    from registry.store.db import RegistryError

    written = []
    write_batch = ingest.write_batch

    def refuse_the_second(registry, items, force=False):
        written.append(len(items))
        if len(written) == 2:
            return [ingest.IngestOutcome("sweep", "failed", message="refused") for _ in items]
        return write_batch(registry, items, force)

    monkeypatch.setattr(ingest, "write_batch", refuse_the_second)
    monkeypatch.setattr(ingest, "BATCH_REPORTS", 2)
    workloads = _workloads()[:8]
    with pytest.raises(RegistryError, match="^sweep: refused$"):
        ensure_reports(registry, workloads, "sweep")
    assert written == [2, 2]  # the third batch, analyzed meanwhile, is not written
    assert len(rows(str(registry.url.database), "SELECT id FROM reports")) == 2


def test_a_batch_is_written_while_the_next_is_analyzed(registry, monkeypatch):
    """The first batch's write waits until a point of the second batch is analyzed: done one after the other, it
    would wait in vain (and the test fails on its time limit, not by hanging)."""
    import threading

    from analyzer.analysis import analyze

    second_batch_analyzed = threading.Event()
    overlapped, writers = [], set()
    write_batch = ingest.write_batch

    def slow_write(registry, items, force=False):
        writers.add(threading.current_thread().name)
        if not overlapped:
            overlapped.append(second_batch_analyzed.wait(timeout=30))
        return write_batch(registry, items, force)

    def noted_analyze(workload, execution):
        report = analyze(workload, execution)
        if noted_analyze.calls == 2:  # the first point of the second batch (BATCH_REPORTS = 2)
            second_batch_analyzed.set()
        noted_analyze.calls += 1
        return report

    noted_analyze.calls = 0
    monkeypatch.setattr(ingest, "write_batch", slow_write)
    monkeypatch.setattr(ingest, "BATCH_REPORTS", 2)
    keys = ensure_reports(registry, _workloads()[:5], "sweep", analyze=noted_analyze)
    assert overlapped == [True]
    assert any(name.startswith("dsocr-writer") for name in writers)
    assert len(set(keys)) == 5 and len(rows(str(registry.url.database), "SELECT id FROM reports")) == 5


@pytest.mark.parametrize("fails", [False, True])
def test_a_sweep_pauses_the_cycle_collector_and_restores_it(registry, fails):
    import gc

    from analyzer.analysis import analyze

    seen = []

    def noted_analyze(workload, execution):
        seen.append(gc.isenabled())
        if fails:
            raise RuntimeError("the analysis stopped")
        return analyze(workload, execution)

    assert gc.isenabled()
    if fails:
        with pytest.raises(RuntimeError, match="the analysis stopped"):
            ensure_reports(registry, _workloads()[:2], "sweep", analyze=noted_analyze)
    else:
        ensure_reports(registry, _workloads()[:2], "sweep", analyze=noted_analyze)
    assert seen and not any(seen)  # paused while the points were analyzed
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that paused it itself finds it paused
        ensure_reports(registry, _workloads()[2:4], "sweep")
        assert not gc.isenabled()
    finally:
        gc.enable()
