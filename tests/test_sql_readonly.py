"""`sql` is read-only by its connection, not by reading the text: what a query cannot do on each backend (write,
commit, COPY, reach files, programs, extensions or settings), the role PostgreSQL runs it as, and its rows
streamed in batches (--limit, the table's row cap, csv and json as rows come)."""

import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from registry.store.db import SQL_READER_ROLE, SQL_ROWS_FUNCTION, Registry
from tests.conftest import POSTGRES_URL
from tests.fuzzing import table_counts
from tests.helpers import rows, run_command

CONSOLE_SCRIPT = str(pathlib.Path(sys.executable).parent / "dsocr-registry")
postgres_only = pytest.mark.skipif(not POSTGRES_URL, reason="set DSOCR_TEST_POSTGRES_URL to run the PostgreSQL tests")


@pytest.fixture
def loaded_url(registry_url, report_files):
    result = run_command(["ingest", str(report_files["base"]), "--db", registry_url])
    assert result.exit_code == 0, result.output
    return registry_url


@pytest.fixture
def server_writable_dir():
    """A folder under /tmp that the database server's own user could write to (mode 777): what COPY TO or
    lo_export would create there shows that the server acted on the query."""
    folder = pathlib.Path("/tmp") / f"dsocr-sql-{uuid.uuid4().hex[:12]}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    yield folder
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def refused(url, query, *extra):
    """Run `sql QUERY`: it must fail with exactly one line on stderr and nothing on stdout; returns that line."""
    result = run_command(["sql", query, "--db", url, *extra])
    assert result.exit_code == 2, (query, result.output)
    assert result.stdout == "", (query, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsocr-registry: error: "), (query, result.stderr)
    return lines[0]


# -- the reproductions: refused, the database and the file system unchanged --------------------------------------

def _common_cases(target, postgres):
    return [
        ("COMMIT; DELETE FROM operator_metrics; SELECT 1",
         "sql runs queries only: COMMIT refused" if postgres else "sql runs one query at a time, got 3 statements"),
        ("DELETE FROM operator_metrics", "sql runs queries only: DELETE refused"),
        (f"COPY operator_metrics TO '{target}'", "sql runs queries only: COPY refused"),
        (f"COPY (SELECT 1) TO '{target}'", "sql runs queries only: COPY refused"),
    ]


def test_reproductions_leave_the_database_and_files_unchanged(loaded_url, server_writable_dir):
    target = server_writable_dir / "out"
    before = table_counts(loaded_url)
    assert before["operator_metrics"] > 0
    cases = _common_cases(target, is_postgres(loaded_url))
    if is_postgres(loaded_url):
        cases += [
            (f"COPY (SELECT 1) TO PROGRAM 'id > {target}'", "sql runs queries only: COPY refused"),
            ("SELECT 1; DELETE FROM operator_metrics", "sql runs one query at a time"),
            ("WITH d AS (DELETE FROM operator_metrics RETURNING *) SELECT COUNT(*) FROM d",
             "data-modifying statements in WITH"),
            ("SELECT * FROM operator_metrics FOR UPDATE", "cannot execute SELECT FOR UPDATE in a read-only"),
            ("SELECT pg_read_file('/etc/passwd')", "permission denied for function pg_read_file"),
            ("SELECT lo_import('/etc/passwd')", "permission denied for function lo_import"),
            (f"SELECT lo_export(1, '{target}')", "permission denied for function lo_export"),
            ("SELECT pg_ls_dir('/')", "permission denied for function pg_ls_dir"),
        ]
    else:
        cases += [
            (f"EXPLAIN ANALYZE COPY reports TO '{target}' (FORMAT parquet)", "Permission Error"),
            ("EXPLAIN ANALYZE INSTALL httpfs", "Permission Error"),
            ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
            ("SELECT * FROM read_text('/etc/passwd')", "Permission Error"),
            ("SELECT * FROM glob('/etc/*')", "Permission Error"),
            (f"ATTACH '{target}' AS other", "sql runs queries only: ATTACH refused"),
            ("LOAD httpfs", "sql runs queries only: LOAD refused"),
            ("SET enable_external_access = true", "sql runs queries only: SET refused"),
            ("PRAGMA enable_profiling", "sql runs queries only: PRAGMA refused"),
        ]
    for query, message in cases:
        line = refused(loaded_url, query)
        assert message in line and ("nothing was" in line or "permission denied" in line), (query, line)
        assert list(server_writable_dir.iterdir()) == [], query
        assert table_counts(loaded_url) == before, query


def test_the_duckdb_connection_refuses_writes_without_the_statement_check(loaded_url, server_writable_dir,
                                                                          monkeypatch):
    """The statement-type check only names what it refuses; with it gone, the connection still writes nothing
    and reaches no file."""
    if is_postgres(loaded_url):
        pytest.skip("PostgreSQL has no statement check: the cursor and the transaction are the only guard")
    import registry.store.db

    monkeypatch.setattr(registry.store.db, "refuse_duckdb_writes", lambda statement: None)
    target = server_writable_dir / "out"
    before = table_counts(loaded_url)
    for query, message in [
        ("COMMIT; DELETE FROM operator_metrics; SELECT 1", "cannot commit - no transaction is active"),
        ("SELECT 1; DELETE FROM operator_metrics; SELECT 1", "read-only mode"),
        ("DELETE FROM operator_metrics", "read-only mode"),
        ("CREATE TABLE intruder AS SELECT 1 AS x", "read-only mode"),
        ("DROP TABLE operator_metrics", "read-only mode"),
        (f"COPY operator_metrics TO '{target}'", "Permission Error"),
        (f"EXPORT DATABASE '{server_writable_dir}'", "Permission Error"),
        (f"ATTACH '{target}' AS other", "Permission Error"),
        ("INSTALL httpfs", "Permission Error"),
        ("LOAD httpfs", "Loading external extensions is disabled"),
        ("SET enable_external_access = true", "the configuration has been locked"),
        ("PRAGMA enable_profiling", "the configuration has been locked"),
    ]:
        line = refused(loaded_url, query)
        assert message in line, (query, line)
        assert list(server_writable_dir.iterdir()) == [], query
        assert table_counts(loaded_url) == before, query
    assert rows(loaded_url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'intruder'") == [(0,)]


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_copy_to_program_as_the_postgres_superuser_runs_nothing(registry_url, server_writable_dir):
    """The URL's role is a superuser, whose COPY ... TO PROGRAM runs a shell command on the server: through a
    plain connection it does (the check is real), through `sql` it does not."""
    import psycopg

    assert rows(registry_url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]
    control, target = server_writable_dir / "control", server_writable_dir / "x"
    with psycopg.connect(sa.make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)) as direct:
        direct.execute(f"COPY (SELECT 1) TO PROGRAM 'id > {control}'")
    assert control.exists()
    control.unlink()
    for query in (f"COPY (SELECT 1) TO PROGRAM 'id > {target}'",
                  f"/* a comment */ copy (select 1) to program 'id > {target}'",
                  f"COMMIT; COPY (SELECT 1) TO PROGRAM 'id > {target}'; SELECT 1",
                  f"SELECT 1; COPY (SELECT 1) TO PROGRAM 'id > {target}'"):
        line = refused(registry_url, query)
        assert "nothing was" in line, line
        assert not target.exists(), query


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_superuser_runs_queries_as_the_reader_role_it_cannot_leave(registry_url):
    """As a superuser the query runs as dsocr_sql_reader inside a SECURITY DEFINER function, where PostgreSQL
    refuses set_config('role', ...): the way back to the superuser that SET LOCAL ROLE alone would leave open."""
    result = run_command(["sql", "SELECT current_user AS who, session_user AS connected", "--db", registry_url,
                          "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"who": SQL_READER_ROLE, "connected": "postgres"}]
    function = ("SELECT p.oid, r.rolname, p.prosecdef, has_function_privilege('public', p.oid, 'EXECUTE') "
                f"FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE p.proname = '{SQL_ROWS_FUNCTION}' "
                "AND p.pronamespace = to_regnamespace(current_schema())")
    first = rows(registry_url, function)
    assert [tuple(row[1:]) for row in first] == [(SQL_READER_ROLE, True, False)]
    assert rows(registry_url, f"SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = '{SQL_READER_ROLE}'") == \
        [(False, False)]
    # set up once: a second run leaves the function as it is
    assert run_command(["sql", "SELECT 1", "--db", registry_url]).exit_code == 0
    assert rows(registry_url, function) == first
    for query in ("SELECT set_config('role', 'postgres', true) AS r, pg_read_file('/etc/passwd') AS p",
                  "SELECT set_config('role', 'postgres', true) AS r, query_to_xml("
                  "'SELECT pg_read_file(''/etc/passwd'') AS p', false, false, '') AS x",
                  "SELECT query_to_xml('SELECT set_config(''session_authorization'', ''postgres'', true)', "
                  "false, false, '') AS a, query_to_xml('SELECT pg_read_file(''/etc/passwd'') AS p', "
                  "false, false, '') AS x"):
        line = refused(registry_url, query)
        assert "root:" not in line
        assert ("cannot set parameter" in line or "permission denied for function pg_read_file" in line), line
    # a table the reader cannot read yet (created after the set-up, not by default privileges) is granted first
    registry = Registry(registry_url)
    with registry.begin() as conn:
        conn.execute(sa.text(f"REVOKE SELECT ON hardware FROM {SQL_READER_ROLE}"))
    registry.dispose()
    counted = run_command(["sql", "SELECT COUNT(*) AS n FROM hardware", "--db", registry_url, "--format", "csv"])
    assert counted.exit_code == 0 and counted.stdout.splitlines()[1] == str(rows(
        registry_url, "SELECT COUNT(*) FROM hardware")[0][0]), counted.output


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_role_given_grant_read_runs_queries_as_itself(registry_url, server_writable_dir):
    role = f"reader_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    reader_url = sa.make_url(registry_url).set(username=role).render_as_string(hide_password=False)
    try:
        assert run_command(["db", "grant-read", role, "--db", registry_url]).exit_code == 0
        result = run_command(["sql", "SELECT current_user AS who, COUNT(*) AS n FROM hardware", "--db", reader_url,
                              "--format", "json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == [{"who": role, "n": rows(registry_url,
                                                                     "SELECT COUNT(*) FROM hardware")[0][0]}]
        target = server_writable_dir / "x"
        assert "COPY refused" in refused(reader_url, f"COPY (SELECT 1) TO '{target}'")
        assert "one query at a time" in refused(reader_url, "SELECT 1; SELECT 2")
        assert "permission denied for function pg_read_file" in refused(reader_url, "SELECT pg_read_file('/etc/passwd')")
        assert not target.exists()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_reader_role_that_may_read_server_files_is_refused(registry_url, monkeypatch):
    """The reader role is checked, not trusted: given pg_read_server_files, sql runs nothing under it."""
    import registry.store.db

    role = f"dsocr_sql_reader_{uuid.uuid4().hex[:8]}"  # its own, so that other tests keep theirs
    monkeypatch.setattr(registry.store.db, "SQL_READER_ROLE", role)
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    try:
        assert run_command(["sql", "SELECT 1", "--db", registry_url]).exit_code == 0
        with admin.begin() as conn:
            conn.execute(sa.text(f"GRANT pg_read_server_files TO {role}"))
        line = refused(registry_url, "SELECT pg_read_file('/etc/passwd')")
        assert line == (f"dsocr-registry: error: role {role} may touch server files or programs; sql runs queries "
                        "as this role only without that: revoke it (nothing was run)")
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_file_reading_role_that_cannot_set_up_the_reader_is_refused(registry_url, monkeypatch):
    """A role that may read server files but not create roles: sql refuses in one line and runs nothing."""
    import registry.store.db

    monkeypatch.setattr(registry.store.db, "SQL_READER_ROLE", f"dsocr_sql_reader_{uuid.uuid4().hex[:8]}")
    role = f"filer_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT pg_read_server_files TO {role}"))
    filer_url = sa.make_url(registry_url).set(username=role).render_as_string(hide_password=False)
    try:
        assert run_command(["db", "grant-read", role, "--db", registry_url]).exit_code == 0
        line = refused(filer_url, "SELECT pg_read_file('/etc/passwd')")
        assert "this role may touch server files, so sql runs queries as role dsocr_sql_reader_" in line
        assert "which it cannot set up: permission denied to create role (nothing was run" in line
        assert "root:" not in line
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def test_bad_limit_and_timeout_are_one_line(registry_url):
    for args, message in ((["--limit", "0"], "Invalid value for '--limit': 0 is not in the range x>=1"),
                          (["--limit", "-3"], "Invalid value for '--limit': -3 is not in the range x>=1"),
                          (["--limit", "many"], "Invalid value for '--limit': 'many' is not a valid integer"),
                          (["--timeout", "0"], "Invalid value for '--timeout': 0.0 is not in the range x>0"),
                          (["--timeout", "soon"], "Invalid value for '--timeout': 'soon' is not a valid float")):
        assert message in refused(registry_url, "SELECT 1", *args), args


def test_a_query_past_its_timeout_is_stopped(registry_url):
    # long enough to be stopped, short enough to end a run where it is not (about a minute)
    series = "generate_series(1, 400000000)" if is_postgres(registry_url) else "range(40000000000)"
    started = time.monotonic()
    line = refused(registry_url, f"SELECT COUNT(*) AS n FROM {series}", "--timeout", "0.5")
    assert time.monotonic() - started < 10
    assert line == ("dsocr-registry: error: the query ran past 0.5 s (--timeout) and was stopped "
                    "(nothing was changed)")


# -- streaming ---------------------------------------------------------------------------------------------------

def _series(url: str, count: int) -> str:
    return (f"SELECT g AS n, g * 2 AS twice FROM generate_series(1, {count}) AS g ORDER BY g" if is_postgres(url)
            else f"SELECT range AS n, range * 2 AS twice FROM range(1, {count + 1}) ORDER BY range")


def test_limit_stops_after_n_rows(registry_url):
    query = _series(registry_url, 100_000)
    csv_out = run_command(["sql", query, "--db", registry_url, "--format", "csv", "--limit", "5"])
    assert csv_out.exit_code == 0 and csv_out.stdout.splitlines() == ["n,twice", "1,2", "2,4", "3,6", "4,8", "5,10"]
    json_out = run_command(["sql", query, "--db", registry_url, "--format", "json", "--limit", "2"])
    assert json.loads(json_out.stdout) == [{"n": 1, "twice": 2}, {"n": 2, "twice": 4}]
    table = run_command(["sql", query, "--db", registry_url, "--limit", "3"]).stdout.splitlines()
    assert table[-1] == "(3 rows)" and [line.split() for line in table[2:5]] == [["1", "2"], ["2", "4"], ["3", "6"]]
    fewer = run_command(["sql", _series(registry_url, 4), "--db", registry_url, "--format", "csv", "--limit", "10"])
    assert fewer.stdout.splitlines()[1:] == ["1,2", "2,4", "3,6", "4,8"]


@pytest.fixture
def driver_calls(monkeypatch):
    """The calls `sql` makes to the database driver, counted as they happen: the query and each fetch (DuckDB's
    go through _QueryBudget.run, PostgreSQL's fetches through psycopg's server-side cursor)."""
    import psycopg

    import registry.store.db

    calls = [0]
    real_run, real_fetch = registry.store.db._QueryBudget.run, psycopg.ServerCursor.fetchmany

    def counted_run(self, call):
        calls[0] += 1
        return real_run(self, call)

    def counted_fetch(self, size=0):
        calls[0] += 1
        return real_fetch(self, size)

    monkeypatch.setattr(registry.store.db._QueryBudget, "run", counted_run)
    monkeypatch.setattr(psycopg.ServerCursor, "fetchmany", counted_fetch)
    return calls


def test_table_output_holds_at_most_its_row_cap_and_says_so(registry_url, monkeypatch, driver_calls):
    import registry.store.db
    import registry.interfaces.output

    monkeypatch.setattr(registry.interfaces.output, "TABLE_ROW_CAP", 50)
    monkeypatch.setattr(registry.store.db, "QUERY_BATCH_ROWS", 10)
    table = run_command(["sql", _series(registry_url, 120), "--db", registry_url]).stdout.splitlines()
    assert len(table) == 2 + 50 + 1 and table[51].split() == ["50", "100"]
    assert table[-1] == ("(first 50 rows shown; the query has more: --format csv or json prints every row, "
                         "--limit N the first N)")
    assert driver_calls[0] <= 1 + 6  # the query and the 6 batches that hold row 51, not all 12
    exactly = run_command(["sql", _series(registry_url, 50), "--db", registry_url]).stdout.splitlines()
    assert exactly[-1] == "(50 rows)"
    everything = run_command(["sql", _series(registry_url, 120), "--db", registry_url, "--format", "csv"])
    assert len(everything.stdout.splitlines()) == 121


def test_csv_and_json_are_written_batch_by_batch(registry_url, monkeypatch, driver_calls):
    """100,000 rows in batches of 1,000: each batch is written before the next is fetched from the database (the
    command never holds more than one), and the text is what one render of all rows prints."""
    import click

    import registry.store.db
    from registry.interfaces.output import render_rows

    monkeypatch.setattr(registry.store.db, "QUERY_BATCH_ROWS", 1000)
    writes = []
    real_echo = click.echo

    def noting_echo(message=None, *args, **kwargs):
        writes.append(driver_calls[0])
        return real_echo(message, *args, **kwargs)

    monkeypatch.setattr(click, "echo", noting_echo)
    query = _series(registry_url, 100_000)
    expected = [(n, 2 * n) for n in range(1, 100_001)]
    for fmt in ("csv", "json"):
        writes.clear()
        driver_calls[0] = 0
        result = run_command(["sql", query, "--db", registry_url, "--format", fmt])
        assert result.exit_code == 0, result.output[-500:]
        assert result.stdout == render_rows(["n", "twice"], expected, fmt) + "\n"
        # batch i is written after exactly i + (the query's own call) driver calls
        assert writes[0] <= 2 and writes[:100] == list(range(writes[0], writes[0] + 100)), (fmt, writes[:5])
        assert driver_calls[0] in (101, 102), driver_calls[0]  # 100 batches and the empty fetch (and the query)
    empty = run_command(["sql", _series(registry_url, 0), "--db", registry_url, "--format", "json"])
    assert empty.stdout == "[]\n"
    heading = run_command(["sql", _series(registry_url, 0), "--db", registry_url, "--format", "csv"])
    assert heading.stdout == "n,twice\n"


def test_a_reader_that_stops_ends_a_huge_query_at_once(tmp_path):
    """`sql ... | head -1` of 30 million rows: the first line comes at once and the command ends with status 141
    as soon as the reader has gone, without computing or holding the rest (all of it took minutes and 6 GB)."""
    db = tmp_path / "r.duckdb"
    assert run_command(["db", "upgrade", "--db", str(db)]).exit_code == 0
    started = time.monotonic()
    process = subprocess.Popen([CONSOLE_SCRIPT, "sql", "SELECT * FROM range(30000000)", "--db", str(db),
                                "--format", "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ))
    assert process.stdout.readline() == b"range\n"
    assert process.stdout.readline() == b"0\n"
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""
    assert time.monotonic() - started < 30
