"""Faults: a locked DuckDB file, concurrent writers, a process killed in the middle of an ingest."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from tests.helpers import rows, run_command, table_counts

CONSOLE_SCRIPT = str(pathlib.Path(sys.executable).parent / "dsocr-registry")


@pytest.fixture(scope="session")
def hundred_reports(tmp_path_factory):
    """100 distinct reports (Base mode, 1..100 new tokens), as JSON files."""
    from analyzer.analysis import analyze
    from analyzer.report import write_report
    from analyzer.workload import load_profile

    folder = tmp_path_factory.mktemp("hundred")
    paths = []
    for new_tokens in range(1, 101):
        path = folder / f"base-{new_tokens:03d}.json"
        write_report(analyze(load_profile("dsocr-base-v1", new_tokens=new_tokens)), path)
        paths.append(path)
    return paths


def _hold_duckdb(path, seconds):
    """Another process that opens the DuckDB file and keeps it for `seconds`."""
    code = textwrap.dedent(f"""
        import sys, time, duckdb
        conn = duckdb.connect({str(path)!r})
        print("held", flush=True)
        time.sleep({seconds})
        conn.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_locked_duckdb_file_gives_up_naming_the_holder(tmp_path, report_files):
    db = tmp_path / "locked.duckdb"
    run_command(["db", "upgrade", "--db", str(db)])
    holder = _hold_duckdb(db, 30)
    try:
        started = time.monotonic()
        result = subprocess.run([CONSOLE_SCRIPT, "ingest", str(report_files["base"]), "--db", str(db),
                                 "--lock-timeout", "1.5"], capture_output=True, text=True, timeout=120)
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2  # what it waits for, once; then why it stopped
    assert lines[0].startswith(f"waiting for {db}: locked, held by PID {holder.pid}") and "up to 1.5 s" in lines[0]
    assert f"is locked, held by PID {holder.pid}" in lines[1] and "gave up after 1.5 s" in lines[1]
    assert "nothing was written" in lines[1]
    assert waited >= 1.5
    assert table_counts(str(db))["reports"] == 0


def test_a_read_of_a_locked_file_says_what_it_left_undone(tmp_path, report_files):
    """A read that gives up wrote nothing anyway: its message says nothing was read and where to read instead."""
    db = pathlib.Path(tempfile.mkdtemp(prefix="lk")) / "locked.duckdb"  # short: the whole line stays under 300
    run_command(["ingest", str(report_files["base"]), "--db", str(db)])
    holder = _hold_duckdb(db, 30)
    try:
        result = subprocess.run([CONSOLE_SCRIPT, "sql", "SELECT COUNT(*) FROM reports", "--db", str(db),
                                 "--lock-timeout", "1"], capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(db.parent, ignore_errors=True)
    assert result.returncode == 2 and result.stdout == ""
    waiting, error = result.stderr.splitlines()  # the wait is announced once, then the one error line
    assert waiting.startswith(f"waiting for {db}: locked, held by PID {holder.pid} (")
    assert waiting.endswith("(up to 1 s, --lock-timeout)")
    assert error.startswith(f"dsocr-registry: error: {db} is locked, held by PID {holder.pid} (")
    assert error.endswith("; gave up after 1 s (nothing was read): run it again when the file is free (a running "
                          "dsocr-registry serve keeps it for its life: ask the service over HTTP, or stop it)")
    # the advice is one that works while the file is held: a snapshot of it is refused the same way
    db.parent.mkdir()
    run_command(["ingest", str(report_files["base"]), "--db", str(db)])
    holder = _hold_duckdb(db, 30)
    try:
        snapshot = subprocess.run([CONSOLE_SCRIPT, "snapshot", str(db.parent / "copy.duckdb"), "--db", str(db),
                                   "--lock-timeout", "0.5"], capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(db.parent, ignore_errors=True)
    assert snapshot.returncode == 2 and "is locked" in snapshot.stderr and "read a snapshot" not in snapshot.stderr


def test_output_cut_short_by_its_reader_ends_quietly(tmp_path, report_files):
    """`... | head`: once the reader has gone, the command stops without a traceback, with status 141 (128 +
    SIGPIPE) like any Unix tool, from the CLI's commands and from the what-if script."""
    db = tmp_path / "r.duckdb"
    run_command(["ingest", str(report_files["base"]), "--db", str(db)])
    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "analytical" / "dsocr_analytic_what_if.py"
    for command in ([CONSOLE_SCRIPT, "sql", "SELECT * FROM v_operator_metrics", "--db", str(db)],
                    [CONSOLE_SCRIPT, "hardware", "list", "--db", str(db)],
                    [CONSOLE_SCRIPT, "analyze", "-w", "dsocr-base-v1", "-q", "-o", "-"],
                    [sys.executable, str(script), "--report", str(report_files["base"])]):
        reader_gone = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reader_gone.stdout.close()  # the reader leaves before the first line
        stderr = reader_gone.stderr.read()
        assert reader_gone.wait(timeout=300) == 141, (command, stderr)
        assert stderr == b"", (command, stderr)


def test_locked_duckdb_file_is_retried_until_free(tmp_path, report_files):
    db = tmp_path / "busy.duckdb"
    run_command(["db", "upgrade", "--db", str(db)])
    holder = _hold_duckdb(db, 2)
    result = subprocess.run([CONSOLE_SCRIPT, "ingest", str(report_files["base"]), "--db", str(db),
                             "--lock-timeout", "60"], capture_output=True, text=True, timeout=120)
    holder.wait()
    assert result.returncode == 0, result.stderr
    assert "1 new" in result.stdout
    assert table_counts(str(db))["reports"] == 1


def test_four_writers_hundred_reports_each_once(registry_url, hundred_reports):
    chunks = [hundred_reports[i::4] for i in range(4)]
    procs = [subprocess.Popen([CONSOLE_SCRIPT, "ingest", *map(str, chunk), "--db", registry_url,
                               "--lock-timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for chunk in chunks]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "25 new, 0 skipped" in out
    assert table_counts(registry_url)["reports"] == 100
    assert rows(registry_url, "SELECT COUNT(DISTINCT report_id) FROM reports") == [(100,)]
    assert table_counts(registry_url)["architectures"] == 1


def test_the_same_report_ingested_concurrently_lands_once(registry_url, report_files):
    path = str(report_files["standard"])
    procs = [subprocess.Popen([CONSOLE_SCRIPT, "ingest", path, "--db", registry_url, "--lock-timeout", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    summary = " ".join(out for out, _ in outputs)
    assert summary.count("1 new") == 1 and summary.count("1 skipped") == 1
    counts = table_counts(registry_url)
    assert counts["reports"] == 1 and counts["architectures"] == 1


def test_a_process_killed_mid_ingest_leaves_no_partial_report(registry_url, report_files):
    """The child stops inside the report's transaction, after some of its rows went in; we kill it there."""
    code = textwrap.dedent(f"""
        import sys, time
        import registry.store.ingest as ingest
        original = ingest.bulk_insert
        calls = []
        def slow_bulk_insert(conn, table, columns):
            count = original(conn, table, columns)
            calls.append(table)
            if table == "module_metrics":
                print("inside", flush=True)
                time.sleep(60)
            return count
        ingest.bulk_insert = slow_bulk_insert
        from registry.interfaces.cli import cli
        from registry.interfaces.entry import run_cli
        run_cli(cli, ["ingest", {str(report_files['standard'])!r}, "--db", {registry_url!r}])
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "inside"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    counts = table_counts(registry_url)
    assert counts["reports"] == 0 and counts["module_metrics"] == 0 and counts["report_stages"] == 0
    result = run_command(["ingest", str(report_files["standard"]), "--db", registry_url])
    assert result.exit_code == 0 and "1 new" in result.output
    assert table_counts(registry_url)["reports"] == 1


# -- batches: many reports per transaction, with the guarantees of one report per transaction ----------------------

def test_a_directory_goes_in_as_one_batch_each_bad_file_named(registry_url, hundred_reports, tmp_path, monkeypatch):
    import shutil

    import registry.store.ingest as ingest
    from analyzer.report import load_report
    from registry.store.db import Registry
    from registry.store.stored import load_stored_report

    folder = tmp_path / "many"
    folder.mkdir()
    for path in hundred_reports[:5]:
        shutil.copy(path, folder / path.name)
    shutil.copy(hundred_reports[2], folder / "again.json")  # the same report under another name
    (folder / "broken.json").write_text('{"schema_version": 3,')
    operator_inserts = []
    original = ingest.bulk_insert

    def counting_bulk_insert(conn, table, columns):
        if table == "operator_metrics":
            operator_inserts.append(len(columns["report_id"]))
        return original(conn, table, columns)

    monkeypatch.setattr(ingest, "bulk_insert", counting_bulk_insert)
    result = run_command(["ingest", str(folder), "--db", registry_url])
    assert result.exit_code == 1
    assert "5 new, 1 skipped (already present), 1 failed" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    # files go in name order: again.json stores the report, base-003.json (the same report) is skipped
    assert errors[0].startswith(f"{folder / hundred_reports[2].name}: ")
    assert errors[0].endswith("already present, skipped")
    assert errors[1].startswith(f"{folder / 'broken.json'}: malformed JSON")
    reports = [load_report(path) for path in hundred_reports[:5]]
    # the five reports' operator rows went in as one statement
    assert operator_inserts == [sum(len(s.operators) for r in reports for s in r.module_metrics)]
    counts = table_counts(registry_url)
    assert counts["reports"] == 5 and counts["architectures"] == 1 and counts["workloads"] == 5
    assert counts["report_stages"] == sum(len(r.stages) for r in reports)
    assert counts["module_metrics"] == sum(len(r.module_metrics) for r in reports)
    registry = Registry(registry_url)
    try:
        for report in reports:  # each rebuilds from its rows to its own content hash
            assert load_stored_report(registry, report.report_id) == report
    finally:
        registry.dispose()


def test_a_report_the_database_refuses_fails_alone_in_its_batch(registry_url, hundred_reports):
    from analyzer.report import load_report
    from registry.store.db import Registry
    from registry.store.ingest import write_batch

    good = [load_report(path) for path in hundred_reports[5:8]]
    refused = load_report(hundred_reports[8])
    # a count beyond a 64-bit column, on an operator of a later snapshot: the batch's operator rows are refused
    # before anything is written, and the report written alone names the operator by its place in the report
    snapshot_index = next(i for i, s in enumerate(refused.module_metrics) if i > 0 and len(s.operators) > 1)
    object.__setattr__(refused.module_metrics[snapshot_index].operators[1], "flops", 2 ** 63)
    registry = Registry(registry_url)
    try:
        outcomes = write_batch(registry, [(good[0], "a"), (refused, "b"), (good[1], "c"), (good[2], "d")])
    finally:
        registry.dispose()
    assert [o.status for o in outcomes] == ["new", "failed", "new", "new"]
    assert outcomes[1].source == "b"
    assert outcomes[1].message == (f"module_metrics[{snapshot_index}].operators[1].flops: 9223372036854775808 does "
                                   "not fit the registry (column operator_metrics.flops holds 64-bit integers)")
    counts = table_counts(registry_url)
    assert counts["reports"] == 3
    assert sorted(r[0] for r in rows(registry_url, "SELECT report_id FROM reports")) == sorted(
        r.report_id for r in good)


def test_a_full_disk_mid_batch_leaves_the_registry_as_it_was(tmp_path, hundred_reports):
    """The ingest runs under a file size limit a little above the file's size: the batch cannot be written."""
    db = tmp_path / "full.duckdb"
    first = run_command(["ingest", *map(str, hundred_reports[:2]), "--db", str(db)])
    assert first.exit_code == 0, first.output
    before = table_counts(str(db))
    limit = db.stat().st_size + 1_000_000
    batch = [str(p) for p in hundred_reports[2:22]]
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from registry.interfaces.cli import cli
        from registry.interfaces.entry import run_cli
        run_cli(cli, ["ingest", *{batch!r}, "--db", {str(db)!r}])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "0 new, 0 skipped (already present), 20 failed" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == batch  # one line per file, nothing else
    assert all("File too large" in line for line in lines)
    assert table_counts(str(db)) == before
    again = run_command(["ingest", *batch, "--db", str(db)])
    assert again.exit_code == 0 and "20 new" in again.stdout
    assert table_counts(str(db))["reports"] == 22


@pytest.fixture
def postgres_url():
    """An upgraded registry in a fresh schema of the test server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    from tests.conftest import POSTGRES_URL

    if not POSTGRES_URL:
        pytest.skip("set DSOCR_TEST_POSTGRES_URL to run the PostgreSQL tests")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg").update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    assert run_command(["db", "upgrade", "--db", url]).exit_code == 0
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_a_lost_postgresql_connection_mid_batch_leaves_the_registry_as_it_was(postgres_url, hundred_reports,
                                                                              monkeypatch):
    """A second connection terminates the ingest's backend after the batch's report rows went in."""
    import sqlalchemy as sa

    import registry.store.ingest as ingest
    from tests.conftest import POSTGRES_URL

    url = postgres_url
    first = run_command(["ingest", *map(str, hundred_reports[:2]), "--db", url])
    assert first.exit_code == 0, first.output
    before = table_counts(url)
    original = ingest.bulk_insert
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    terminated = []

    def terminating_bulk_insert(conn, table, columns):
        if table == "module_metrics" and not terminated:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with admin.begin() as other:
                terminated.append(other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar())
        return original(conn, table, columns)

    monkeypatch.setattr(ingest, "bulk_insert", terminating_bulk_insert)
    batch = [str(p) for p in hundred_reports[2:12]]
    try:
        result = run_command(["ingest", *batch, "--db", url])
    finally:
        admin.dispose()
    assert terminated == [True]
    assert result.exit_code == 1
    assert "0 new, 0 skipped (already present), 10 failed" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == batch
    assert all(line.endswith(": database error: the connection is lost") for line in lines), lines[0]
    assert table_counts(url) == before
    monkeypatch.setattr(ingest, "bulk_insert", original)
    again = run_command(["ingest", *batch, "--db", url])
    assert again.exit_code == 0 and "10 new" in again.stdout


@pytest.mark.parametrize("batch_reports", [500, 1])  # 1: each report's batch is written behind the next analysis
def test_a_sweep_keeps_the_reports_it_analyzed_when_a_later_analysis_fails(registry_url, batch_reports,
                                                                           monkeypatch):
    """A sweep's reports go in batches; an analysis that fails (a time limit, a stopped worker) still leaves the
    reports analyzed before it stored, so the sweep run again analyzes only what is left."""
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile
    from registry.store.db import Registry, RegistryError
    from registry.store import ingest
    from registry.store.analyzed import ensure_reports, find_report

    workloads = [load_profile("dsocr-base-v1", new_tokens=new_tokens) for new_tokens in (3, 4, 5)]
    analyzed = []

    def analyze_until_the_third(workload, execution):
        if workload.new_tokens == 5:
            raise RegistryError("the analysis worker stopped (killed, or out of memory)")
        analyzed.append(workload.new_tokens)
        return analyze(workload, execution)

    monkeypatch.setattr(ingest, "BATCH_REPORTS", batch_reports)
    registry = Registry(registry_url)
    try:
        with pytest.raises(RegistryError, match=r"^the analysis worker stopped \(killed, or out of memory\)$"):
            ensure_reports(registry, workloads, "sweep", analyze=analyze_until_the_third)
        with registry.begin() as conn:
            assert [find_report(conn, w) is not None for w in workloads] == [True, True, False]
        assert analyzed == [3, 4]
        assert table_counts(registry_url)["reports"] == 2
    finally:
        registry.dispose()
