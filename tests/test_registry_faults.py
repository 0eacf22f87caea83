"""Faults: a locked DuckDB file, concurrent writers, a process killed in the middle of an ingest."""

import os
import pathlib
import signal
import subprocess
import sys
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
    db = tmp_path / "locked.duckdb"
    run_command(["ingest", str(report_files["base"]), "--db", str(db)])
    holder = _hold_duckdb(db, 30)
    try:
        result = subprocess.run([CONSOLE_SCRIPT, "sql", "SELECT COUNT(*) FROM reports", "--db", str(db),
                                 "--lock-timeout", "1"], capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"dsocr-registry: error: {db} is locked, held by PID {holder.pid} (")
    assert result.stderr.endswith("; gave up after 1 s (nothing was read): run it again when the file is free, or "
                                  "read a snapshot of it (dsocr-registry snapshot)\n")


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
        import registry.ingest as ingest
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
        from registry.cli import cli
        from registry.entry import run_cli
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
