"""SQL from real clients: what each row of the views is (kind), the data dictionary, reads that never write, a
read-only PostgreSQL role (db grant-read) and a read-only DuckDB file, upgrades that keep views and grants, and
upgrades that say which lock they wait for (DuckDB and PostgreSQL)."""

import json
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from registry.store.db import Registry, alembic_config
from registry.store.views import view_names
from tests.conftest import POSTGRES_URL
from tests.helpers import HEAD, REPO, rows, run_command, upgrade_to

MEASUREMENTS = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"
SCENARIO = "name: one-point\nbase: {profile: dsocr-standard-v1}\nsweep: {hardware: [h200], runtime: [hf-eager]}\n"
SCENARIO_2 = "name: two-points\nbase: {profile: dsocr-standard-v1}\nsweep: {hardware: [h200, h100-sxm]}\n"
postgres_only = pytest.mark.skipif(not POSTGRES_URL, reason="set DSOCR_TEST_POSTGRES_URL to run the PostgreSQL tests")


def _counts(url):
    return {table: rows(url, f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("scenarios", "scenario_points", "reports", "measurement_sets", "measurements")}


@pytest.fixture
def priced(registry_url, report_files, tmp_path):
    """A registry holding a report, a what-if scenario of it and a measurement set (its own scenario)."""
    scenario = tmp_path / "one.yaml"
    scenario.write_text(SCENARIO)
    assert run_command(["ingest", str(report_files["standard"]), "--db", registry_url]).exit_code == 0
    result = run_command(["whatif", "-s", str(scenario), "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    result = run_command(["ingest", "--measurements", str(MEASUREMENTS), "--hardware", "h200", "--runtime",
                          "hf-eager", "--db", registry_url])
    assert result.exit_code == 0, result.output
    return registry_url, scenario, json.loads(run_command(
        ["whatif", "-s", str(scenario), "--db", registry_url, "--format", "json"]).stdout)


def test_kind_says_what_a_point_is_and_reads_write_nothing(priced, report_files):
    url, scenario, first = priced
    kinds = rows(url, "SELECT kind, COUNT(*) FROM scenarios GROUP BY kind ORDER BY kind")
    assert kinds == [("measurement", 1), ("what-if", 1)]
    # v_point_summary: the what-if point only; v_point_summary_all: the measurement set's points too, with kind
    assert rows(url, "SELECT scenario_id, kind, hardware FROM v_point_summary") == [
        (first["scenario_id"], "what-if", "h200")]
    measured = rows(url, "SELECT COUNT(*) FROM scenario_points p JOIN scenarios s ON s.id = p.scenario_id "
                         "WHERE s.kind = 'measurement'")[0][0]
    assert measured > 1
    assert rows(url, "SELECT kind, COUNT(*) FROM v_point_summary_all GROUP BY kind ORDER BY kind") == [
        ("measurement", measured), ("what-if", 1)]
    before = _counts(url)
    report_id = json.loads(report_files["standard"].read_text())["report_id"]
    summary = run_command(["summary", report_id, "--db", url])
    assert summary.exit_code == 0, summary.output
    again = run_command(["summary", str(report_files["standard"]), "--db", url])
    assert json.loads(again.stdout) == json.loads(summary.stdout)
    # the summary's time is what v_point_summary gives for the same report on the same GPU and runtime
    assert json.loads(summary.stdout)["predicted_total_time_ms"] == pytest.approx(
        1000 * first["points"][0]["page_latency_s"])
    compare = run_command(["compare", "--measurements", str(MEASUREMENTS), "--hardware", "h200", "--runtime",
                           "hf-eager", "--db", url, "--format", "json"])
    assert compare.exit_code == 0, compare.output and len(json.loads(compare.stdout)["rows"]) == 28
    rerun = run_command(["whatif", "-s", str(scenario), "--db", url])
    assert f"(id {first['scenario_id']}, recorded before)" in rerun.stdout
    assert _counts(url) == before  # summaries, compare of a stored set and a repeated run record nothing


def test_summaries_on_one_connection_leave_no_temporary_tables_behind(registry_url, report_files):
    """Pricing in temporary tables ends with a rollback: the next summary on the same (pooled) connection creates
    them afresh, and the registry's own tables are untouched."""
    from registry.interfaces.contract import summarize

    assert run_command(["ingest", str(report_files["standard"]), "--db", registry_url]).exit_code == 0
    report_id = json.loads(report_files["standard"].read_text())["report_id"]
    registry = Registry(registry_url)
    try:
        first = summarize(registry, report_id)
        second = summarize(registry, report_id, hardware="h100-sxm")
        assert summarize(registry, report_id) == first
        assert second.predicted_total_time_ms > first.predicted_total_time_ms  # the H100 is slower than the H200
    finally:
        registry.dispose()
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM scenario_points") == [(0,)]


def test_every_view_and_column_has_a_comment(registry_url):
    result = run_command(["schema", "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    views = json.loads(result.stdout)
    assert [v["view"] for v in views] == view_names()
    for view in views:
        assert view["comment"] and len(view["comment"]) > 20, view["view"]
        assert view["columns"], view["view"]
        for column in view["columns"]:
            assert column["comment"], (view["view"], column["column"])
    by_name = {v["view"]: v for v in views}
    assert "what-if scenarios only" in by_name["v_point_summary"]["comment"]
    kind = next(c for c in by_name["v_point_summary_all"]["columns"] if c["column"] == "kind")
    assert kind["comment"].startswith("What the scenario is: what-if")
    csv_out = run_command(["schema", "--db", registry_url, "--format", "csv"]).stdout.splitlines()
    assert csv_out[0] == "view,column,type,comment"
    assert len(csv_out) == 1 + sum(1 + len(v["columns"]) for v in views)
    table = run_command(["schema", "--db", registry_url]).stdout
    assert "gpu_seconds_per_page" in table and "GPU seconds per page" in table


@pytest.mark.parametrize("statement", [
    "INSERT INTO scenarios (name, definition, created_at) VALUES ('x', '{}', CURRENT_TIMESTAMP)",
    "UPDATE hardware SET memory_bytes = 1",
    "DELETE FROM hardware",
    "CREATE TABLE intruder (x INTEGER)",
    "DROP VIEW v_reports",
])
def test_sql_refuses_writes(registry_url, statement):
    before = rows(registry_url, "SELECT COUNT(*), SUM(memory_bytes) FROM hardware")
    result = run_command(["sql", statement, "--db", registry_url])
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert "sql runs queries only" in message and "nothing was changed" in message and "\n" not in message
    assert rows(registry_url, "SELECT COUNT(*), SUM(memory_bytes) FROM hardware") == before
    assert rows(registry_url, "SELECT COUNT(*) FROM scenarios") == [(0,)]
    assert rows(registry_url, "SELECT COUNT(*) FROM v_reports") == [(0,)]


def test_sql_refuses_copy_to_a_file_on_duckdb(tmp_path):
    db = str(tmp_path / "r.duckdb")
    assert run_command(["db", "upgrade", "--db", db]).exit_code == 0
    target = tmp_path / "out.csv"
    result = run_command(["sql", f"COPY hardware TO '{target}'", "--db", db])
    assert result.exit_code != 0 and "COPY refused" in result.stderr and not target.exists()
    two = run_command(["sql", "SELECT 1; SELECT 2", "--db", db])
    assert two.exit_code != 0 and "one query at a time, got 2 statements" in two.stderr


def _view_ids(url):
    """What tells a recreated view from the old one: its catalog id on PostgreSQL; on DuckDB, whose ids are
    assigned anew each time a file is opened, a marker comment set by _mark_views (recreated views get their
    dictionary comment again)."""
    if url.startswith("postgresql"):
        return dict(rows(url, "SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'v'"))
    return dict(rows(url, "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal"))


def _mark_views(url):
    if url.startswith("postgresql"):
        return
    registry = Registry(url)
    with registry.begin() as conn:
        for view in view_names():
            conn.execute(sa.text(f"COMMENT ON VIEW {view} IS 'marker {view}'"))
    registry.dispose()


def test_upgrade_at_head_changes_nothing_and_recreates_only_changed_views(registry_url):
    _mark_views(registry_url)
    ids = _view_ids(registry_url)
    assert set(ids) == set(view_names())
    result = run_command(["db", "upgrade", "--db", registry_url])
    assert result.exit_code == 0 and "(current)" in result.output
    assert _view_ids(registry_url) == ids  # no view dropped or created
    # a view whose recorded definition differs (as after a code change) is recreated with the views after it
    registry = Registry(registry_url)
    with registry.begin() as conn:
        conn.execute(sa.text("UPDATE view_definitions SET definition_sha256 = 'old' WHERE name = 'v_point_summary'"))
    registry.dispose()
    assert run_command(["db", "upgrade", "--db", registry_url]).exit_code == 0
    after = _view_ids(registry_url)
    names = view_names()
    later = set(names[names.index("v_point_summary"):])
    assert {n for n in names if after[n] != ids[n]} == later
    assert run_command(["db", "upgrade", "--db", registry_url]).exit_code == 0
    assert _view_ids(registry_url) == after


def test_migration_0008_sets_the_kind_of_older_scenarios_and_downgrades(db_url):
    from alembic import command

    registry = Registry(db_url)
    with registry.begin() as conn:
        upgrade_to(conn, "0007")
        for sid, name in enumerate(["capacity", "summary:dsocr-1", "measurements:h200.json", "serve:probes",
                                    "serve"], start=1):
            conn.execute(sa.text("INSERT INTO scenarios (id, name, definition, created_at) "
                                 "VALUES (:i, :n, '{}', CURRENT_TIMESTAMP)"), {"i": sid, "n": name})
        upgrade_to(conn, "0008", views=True)  # as `db upgrade` does, to 0008
    registry.dispose()
    assert rows(db_url, "SELECT version_num FROM alembic_version") == [("0008",)]
    assert rows(db_url, "SELECT name, kind, content_hash FROM scenarios ORDER BY id") == [
        ("capacity", "what-if", None), ("summary:dsocr-1", "summary", None),
        ("measurements:h200.json", "measurement", None), ("serve:probes", "serving-probe", None),
        ("serve", "what-if", None)]
    # this code's views read tables of later revisions: a step to 0008 leaves them dropped
    assert rows(db_url, "SELECT COUNT(*) FROM information_schema.views WHERE table_schema = current_schema() "
                        "AND table_name LIKE 'v_%'") == [(0,)]
    registry = Registry(db_url)
    with registry.begin() as conn:
        command.downgrade(alembic_config(conn), "0007")
    registry.dispose()
    assert rows(db_url, "SELECT version_num FROM alembic_version") == [("0007",)]
    columns = {r[0] for r in rows(db_url, "SELECT column_name FROM information_schema.columns "
                                          "WHERE table_schema = current_schema() AND table_name = 'scenarios'")}
    if db_url.startswith("postgresql"):
        assert "kind" not in columns and "content_hash" not in columns
    else:  # DuckDB cannot drop a column of a referenced table: they stay, nullable and unread by 0007's code
        assert {"kind", "content_hash"} <= columns
        registry = Registry(db_url)
        with registry.begin() as conn:  # what 0007's code writes meanwhile
            conn.execute(sa.text("UPDATE scenarios SET kind = NULL"))
        registry.dispose()
    assert rows(db_url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                        "AND table_name = 'view_definitions'") == [(0,)]
    assert rows(db_url, "SELECT COUNT(*) FROM scenarios") == [(5,)]
    result = run_command(["db", "upgrade", "--db", db_url])  # and up again, to the head
    assert result.exit_code == 0 and f"0007 -> {HEAD}" in result.output, result.output
    assert rows(db_url, "SELECT COUNT(*) FROM scenarios WHERE kind = 'summary'") == [(1,)]


def _read_commands(url, report_id, tmp_path):
    """Every read command, as a reader runs it; returns the summary and the two-point scenario's output."""
    for args in (["sql", "SELECT COUNT(*) AS n FROM v_point_summary", "--format", "json"],
                 ["schema", "--format", "csv"], ["report", report_id], ["hardware", "list"],
                 ["runtime", "show", "hf-eager"], ["db", "current"]):
        result = run_command([*args, "--db", url])
        assert result.exit_code == 0, (args, result.output)
    assert json.loads(run_command(["sql", "SELECT COUNT(*) AS n FROM v_point_summary", "--format", "json",
                                   "--db", url]).stdout) == [{"n": 1}]
    summary = run_command(["summary", report_id, "--db", url])
    assert summary.exit_code == 0, summary.output
    compare = run_command(["compare", "--measurements", str(MEASUREMENTS), "--hardware", "h200", "--runtime",
                           "hf-eager", "--db", url, "--format", "json"])
    assert compare.exit_code == 0, compare.output
    assert len(json.loads(compare.stdout)["rows"]) == 28
    recorded = run_command(["whatif", "-s", str(tmp_path / "one.yaml"), "--db", url])
    assert recorded.exit_code == 0 and "recorded before" in recorded.stdout, recorded.output
    scenario = tmp_path / "two.yaml"
    scenario.write_text(SCENARIO_2)
    fresh = run_command(["whatif", "-s", str(scenario), "--db", url, "--format", "json"])
    assert fresh.exit_code == 0, fresh.output
    table = run_command(["whatif", "-s", str(scenario), "--db", url])
    assert "(id -1, not recorded: this connection may only read)" in table.stdout
    return json.loads(summary.stdout), json.loads(fresh.stdout)


def test_a_read_only_duckdb_file_answers_every_read_command(tmp_path, report_files):
    db = tmp_path / "registry.duckdb"
    scenario = tmp_path / "one.yaml"
    scenario.write_text(SCENARIO)
    assert run_command(["ingest", str(report_files["standard"]), "--db", str(db)]).exit_code == 0
    assert run_command(["whatif", "-s", str(scenario), "--db", str(db)]).exit_code == 0
    assert run_command(["ingest", "--measurements", str(MEASUREMENTS), "--hardware", "h200", "--runtime",
                        "hf-eager", "--db", str(db)]).exit_code == 0
    writable = run_command(["summary", json.loads(report_files["standard"].read_text())["report_id"],
                            "--db", str(db)])
    before = _counts(str(db))
    url = f"duckdb:///{db}?read_only=true"
    report_id = json.loads(report_files["standard"].read_text())["report_id"]
    summary, fresh = _read_commands(url, report_id, tmp_path)
    assert summary == json.loads(writable.stdout)
    assert len(fresh["points"]) == 2 and fresh["scenario_id"] == -1
    assert _counts(str(db)) == before
    # what needs writing says so in one line
    refused = run_command(["ingest", str(report_files["base"]), "--db", url])
    assert refused.exit_code != 0


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_role_given_grant_read_reads_everything_and_keeps_it_across_upgrades(db_url, report_files, tmp_path):
    scenario = tmp_path / "one.yaml"
    scenario.write_text(SCENARIO)
    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    assert run_command(["ingest", str(report_files["standard"]), "--db", db_url]).exit_code == 0
    assert run_command(["whatif", "-s", str(scenario), "--db", db_url]).exit_code == 0
    assert run_command(["ingest", "--measurements", str(MEASUREMENTS), "--hardware", "h200", "--runtime",
                        "hf-eager", "--db", db_url]).exit_code == 0
    report_id = json.loads(report_files["standard"].read_text())["report_id"]
    owner_summary = json.loads(run_command(["summary", report_id, "--db", db_url]).stdout)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    unknown = run_command(["db", "grant-read", role, "--db", db_url])
    assert unknown.exit_code != 0
    assert unknown.stderr.strip() == (f"dsocr-registry: error: no role '{role}' in {_described(db_url)}: create it "
                                      f"first (CREATE ROLE {role} LOGIN PASSWORD '...'), nothing was granted")
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    reader_url = sa.make_url(db_url).set(username=role).render_as_string(hide_password=False)
    try:
        denied = run_command(["sql", "SELECT COUNT(*) FROM v_reports", "--db", reader_url])
        assert denied.exit_code != 0
        assert "this role may not use the registry's schema: its owner can run dsocr-registry db grant-read ROLE" \
            in denied.stderr
        granted = run_command(["db", "grant-read", role, "--db", db_url])
        assert granted.exit_code == 0, granted.output
        assert f"{role} may read schema" in granted.stdout and "16 views" in granted.stdout
        before = _counts(db_url)
        summary, fresh = _read_commands(reader_url, report_id, tmp_path)
        assert summary == owner_summary
        assert len(fresh["points"]) == 2
        assert _counts(db_url) == before
        write = run_command(["ingest", str(report_files["base"]), "--db", reader_url])
        assert write.exit_code != 0 and _counts(db_url) == before
        # an upgrade that recreates views keeps the role's SELECT on them, and a grant made by hand on one view
        # (not covered by default privileges) is made again on the new view
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE ROLE {role}_one"))
            schema = sa.make_url(db_url).query["options"].split("=")[1]
            conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {role}_one"))
            conn.execute(sa.text(f"GRANT SELECT ON {schema}.v_reports TO {role}_one"))
        registry = Registry(db_url)
        with registry.begin() as conn:
            conn.execute(sa.text("UPDATE view_definitions SET definition_sha256 = 'old' WHERE name = 'v_reports'"))
        registry.dispose()
        ids = _view_ids(db_url)
        assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
        assert _view_ids(db_url)["v_reports"] != ids["v_reports"]
        for view in view_names():
            result = run_command(["sql", f"SELECT COUNT(*) FROM {view}", "--db", reader_url])
            assert result.exit_code == 0, (view, result.output)
        assert rows(db_url, f"SELECT has_table_privilege('{role}_one', 'v_reports', 'SELECT'), "
                            f"has_table_privilege('{role}_one', 'v_point_summary', 'SELECT')") == [(True, False)]
    finally:
        with admin.begin() as conn:
            for name in (role, f"{role}_one"):
                conn.execute(sa.text(f"DROP OWNED BY {name}"))
                conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


def _described(url):
    from registry.store.db import describe, resolve_url

    return describe(resolve_url(url))


def test_grant_read_on_duckdb_says_how_to_give_read_access(tmp_path):
    db = str(tmp_path / "r.duckdb")
    assert run_command(["db", "upgrade", "--db", db]).exit_code == 0
    result = run_command(["db", "grant-read", "bi", "--db", db])
    assert result.exit_code != 0
    assert "DuckDB has no roles" in result.stderr and "duckdb -readonly" in result.stderr
    assert "dsocr-registry snapshot" in result.stderr


def test_upgrade_on_a_locked_duckdb_file_says_who_holds_it(tmp_path):
    db = tmp_path / "r.duckdb"
    assert run_command(["db", "upgrade", "--db", str(db)]).exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time\n"
        f"c = duckdb.connect({str(db)!r}, read_only=True)\n"
        "c.execute('BEGIN'); c.execute('SELECT COUNT(*) FROM scenarios').fetchall()\n"
        "print('open', flush=True); time.sleep(3)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        started = time.monotonic()
        result = run_command(["db", "upgrade", "--db", str(db), "--lock-timeout", "20"])
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert result.exit_code == 0, result.output
    assert f"waiting for {db}: locked, held by PID {holder.pid}" in result.stderr
    assert result.stderr.count("waiting for") == 1 and waited > 1


@postgres_only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_upgrade_waiting_on_a_reader_says_which_connection_holds_the_lock(db_url):
    registry = Registry(db_url)
    with registry.begin() as conn:
        upgrade_to(conn, "0007")
    reader = Registry(db_url)
    conn = reader.engine.connect()
    try:
        reader_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        conn.execute(sa.text("SELECT COUNT(*) FROM scenarios")).all()  # an open transaction holding its lock
        result = run_command(["db", "upgrade", "--db", db_url, "--lock-timeout", "2"])
        assert result.exit_code != 0
        assert (f"waiting for a lock held by PID {reader_pid} (user postgres, idle in transaction"
                in result.stderr), result.stderr
        assert "last query: SELECT COUNT(*) FROM scenarios" in result.stderr
        assert "gave up after 2 s waiting for a lock held by another connection (nothing was changed" in result.stderr
        assert rows(db_url, "SELECT version_num FROM alembic_version") == [("0007",)]
    finally:
        conn.rollback()
        conn.close()
        reader.dispose()
        registry.dispose()
    result = run_command(["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0 and f"0007 -> {HEAD}" in result.output
