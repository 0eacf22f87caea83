"""Rough edges a newcomer hits: bad input that ended in an internal error, messages that misled, and files a
failed command left behind. Each answer is one line and exit 1 or 2."""

import pytest

from tests.helpers import run_command

LONG_NAME = "a" * 300  # longer than any file system takes as one name (255 bytes)


@pytest.mark.parametrize("profile,problem", [
    (LONG_NAME, "unknown workload profile 'aaaa"),
    (LONG_NAME + ".yaml", "aaa.yaml (305 characters): cannot read: File name too long"),
])
def test_a_profile_name_too_long_for_a_file_is_one_line(profile, problem):
    result = run_command(["analyze", "-w", profile, "-q"])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert problem in line


def test_a_scenario_profile_name_too_long_for_a_file_is_an_unknown_profile(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"name: x\nbase: {{profile: {LONG_NAME}}}\nsweep: {{hardware: [h200], runtime: [vllm]}}\n")
    result = run_command(["whatif", "-s", str(scenario), "--db", str(tmp_path / "r.duckdb")])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert "base: unknown workload profile 'aaaa" in line and "(300 characters)" in line
    assert not (tmp_path / "r.duckdb").exists()


def test_an_output_name_too_long_for_a_file_is_one_line(tmp_path):
    result = run_command(["analyze", "-w", "dsocr-base-v1", "-q", "-o", str(tmp_path / (LONG_NAME + ".json"))])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith("dsocr-registry: error: file name too long: ") and "at most 255 bytes per name" in line


@pytest.mark.parametrize("query,parameter", [
    ("SELECT * FROM v_reports WHERE variant = :variant", ":variant"),
    ("SELECT * FROM v_reports WHERE variant = ?", "?"),
    ("SELECT * FROM v_reports WHERE variant = $1", "$1"),
    ("SELECT * FROM v_reports WHERE variant = %(variant)s", "%(variant)s"),
])
def test_a_query_with_a_bind_parameter_says_sql_takes_no_parameters(db_url, query, parameter):
    """SQL pasted from a BI tool carries its parameters; the answer names the parameter, not a syntax error."""
    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    result = run_command(["sql", query, "--db", db_url])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"dsocr-registry: error: query failed: the query has the parameter {parameter}, and sql "
                           "takes no parameter values: write the value into the query")


def test_text_that_only_looks_like_a_parameter_runs(db_url):
    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    result = run_command(["sql", "SELECT ':hw' AS a, '?' AS b, 1::INTEGER AS c -- :x ?", "--db", db_url,
                          "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["a,b,c", ":hw,?,1"]


def _examples(name):
    from tests.helpers import REPO

    return {"scenario": REPO / "queries" / "examples" / "capacity.yaml",
            "measurements": REPO / "tests" / "data" / "h200-hf-eager-v1.json",
            "profile": REPO / "analyzer" / "profiles" / "dsocr-base-v1.yaml"}[name]


@pytest.mark.parametrize("name,what", [
    ("scenario", "not a report: this is a scenario (for whatif --scenario FILE)"),
    ("measurements", "not a report: this is a measurement file (for ingest --measurements FILE"),
    ("profile", "not a report: this is a workload profile (for analyze --workload FILE)"),
])
def test_another_file_given_to_ingest_is_named_for_what_it_is(tmp_path, name, what):
    result = run_command(["ingest", str(_examples(name)), "--db", str(tmp_path / "r.duckdb")])
    assert result.exit_code == 1
    assert f"{_examples(name)}: {what}" in result.output
    assert "schema_version None" not in result.output
    if name != "measurements":  # .json and .yaml files: summary reads them as a report file
        summary = run_command(["summary", str(_examples(name)), "--db", str(tmp_path / "r.duckdb")])
        assert summary.exit_code == 2
        assert summary.output.splitlines() == [f"dsocr-registry: error: {_examples(name)}: {what}"]


@pytest.mark.parametrize("report", ["standard", "base"])  # 1.4 MB, past a scenario's size limit; and a small one
def test_a_report_given_as_a_scenario_is_named_for_what_it_is(tmp_path, report_files, report):
    result = run_command(["whatif", "--scenario", str(report_files[report]), "--db", str(tmp_path / "r.duckdb")])
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line == (f"dsocr-registry: error: {report_files[report]}: not a scenario: this is a report "
                    "(AnalyticModelReport) (for ingest FILE, summary FILE); a scenario has name, base, sweep, target "
                    "(see queries/examples/capacity.yaml)")
    assert not (tmp_path / "r.duckdb").exists()


@pytest.mark.parametrize("command", [
    ["ingest", "{scenario}"],
    ["compare", "--measurements", "{measurements}", "--hardware", "h999", "--runtime", "hf-eager"],
    ["summary", "{scenario}"],
    ["summary", "no-such-report-id"],
    ["hardware", "price", "h999", "3"],
])
def test_a_failed_command_leaves_no_registry_behind(tmp_path, command):
    """A command that would have created the registry and failed leaves neither the file nor its new folder."""
    db = tmp_path / "new" / "folder" / "r.duckdb"
    args = [word.format(scenario=_examples("scenario"), measurements=_examples("measurements")) for word in command]
    result = run_command([*args, "--db", str(db)])
    assert result.exit_code in (1, 2), result.output
    assert list(tmp_path.iterdir()) == []


def test_a_failed_command_keeps_the_registry_it_did_not_create(tmp_path):
    db = tmp_path / "r.duckdb"
    assert run_command(["db", "upgrade", "--db", str(db)]).exit_code == 0
    assert run_command(["ingest", str(_examples("scenario")), "--db", str(db)]).exit_code == 1
    assert db.exists()


def test_comparing_under_another_runtime_than_measured_warns(tmp_path):
    """hf-eager measurements priced under vllm differ by ~90%: the runtimes differ, and the output says so."""
    from tests.helpers import REPO

    measurements = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"
    db = str(tmp_path / "r.duckdb")
    result = run_command(["compare", "--measurements", str(measurements), "--hardware", "h200", "--runtime", "vllm",
                          "--db", db, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {measurements} was measured under 'hf-eager' (env.runtime) and is priced here under vllm@3, a vllm "
        "runtime: the errors compare two runtimes, not the model with its measurement (give --runtime a 'hf-eager' "
        "profile)"]
    same = run_command(["compare", "--measurements", str(measurements), "--hardware", "h200", "--runtime",
                        "hf-eager", "--db", db, "--format", "json"])
    assert same.exit_code == 0 and same.stderr == ""


def _view_columns(db_url):
    """(view, column, type, comment) of every column of the registry's views, as the database reports them."""
    import sqlalchemy as sa

    from registry.store.db import Registry
    from registry.store.views import view_names

    with Registry(db_url) as registry, registry.begin() as conn:
        if registry.dialect == "duckdb":
            found = conn.execute(sa.text("SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
                                         "WHERE schema_name = current_schema()")).all()
        else:
            found = conn.execute(sa.text(
                "SELECT c.table_name, c.column_name, c.data_type, col_description(to_regclass(c.table_name), "
                "c.ordinal_position) FROM information_schema.columns c WHERE c.table_schema = current_schema()")).all()
    return [row for row in found if row[0] in view_names()]


def test_every_view_column_carries_its_own_comment(db_url):
    """DuckDB attaches a view column's comment by the SELECT expression's name: hardware once carried the
    runtime's text in v_serving_summary and v_predicted_vs_measured."""
    from registry.store.views import column_comment

    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    columns = _view_columns(db_url)
    assert len(columns) > 200
    wrong = [(view, column, comment) for view, column, _, comment in columns if comment != column_comment(view, column)]
    assert wrong == []


def test_no_view_column_is_a_decimal(db_url):
    """Sums of integer columns come back as BIGINT, not as 128-bit integers (DECIMAL(38,0) to BI drivers) or
    NUMERIC, which pandas reads as Decimal objects."""
    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    decimals = [(view, column, kind) for view, column, kind, _ in _view_columns(db_url)
                if kind.upper().startswith(("HUGEINT", "DECIMAL", "NUMERIC", "INT128"))]
    assert decimals == []


def test_parquet_export_types_columns_from_the_schema(db_url, tmp_path):
    """PostgreSQL's export is typed from the tables' and views' columns as DuckDB's is, not from the values: an
    empty table keeps its types (not null), an INTEGER stays int32, a BIGINT int64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = tmp_path / "reference.duckdb"
    for url, folder in ((str(reference), tmp_path / "duckdb"), (db_url, tmp_path / "export")):
        assert run_command(["db", "upgrade", "--db", url]).exit_code == 0
        assert run_command(["export", "--parquet", str(folder), "--db", url]).exit_code == 0
    files = sorted(path.name for path in (tmp_path / "duckdb").glob("*.parquet"))
    assert len(files) > 30 and files == sorted(path.name for path in (tmp_path / "export").glob("*.parquet"))
    for name in files:
        expected, got = pq.read_schema(tmp_path / "duckdb" / name), pq.read_schema(tmp_path / "export" / name)
        assert [(f.name, f.type) for f in got] == [(f.name, f.type) for f in expected], name
        assert not any(pa.types.is_null(f.type) for f in got), name


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.skipif(
    not __import__("os").environ.get("DSOCR_TEST_POSTGRES_URL"), reason="set DSOCR_TEST_POSTGRES_URL"))],
    indirect=True)
def test_grant_read_leaves_the_role_no_create_on_the_schema(db_url):
    """PostgreSQL 14 and older grant CREATE on schema public to PUBLIC: a role given grant-read could create
    tables beside the registry. Granted here to PUBLIC on the test's schema, as those releases do."""
    import os
    import uuid

    import sqlalchemy as sa

    from tests.helpers import rows

    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    schema = sa.make_url(db_url).query["options"].split("=")[1]
    role = f"reader_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sa.make_url(os.environ["DSOCR_TEST_POSTGRES_URL"]).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT CREATE ON SCHEMA {schema} TO PUBLIC, {role}"))
    try:
        granted = run_command(["db", "grant-read", role, "--db", db_url])
        assert granted.exit_code == 0, granted.output
        assert granted.stdout.splitlines()[1] == (
            f"revoked CREATE on schema {schema} from PUBLIC, so that {role} may only read (as PostgreSQL 15 does by "
            "default); grant it to the roles that create tables there")
        assert rows(db_url, f"SELECT has_schema_privilege('{role}', '{schema}', 'CREATE'), "
                            f"has_table_privilege('{role}', 'reports', 'SELECT')") == [(False, True)]
        reader_url = sa.make_url(db_url).set(username=role)
        reader = sa.create_engine(reader_url)
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema"):
            with reader.begin() as conn:
                conn.execute(sa.text("CREATE TABLE mine (x INTEGER)"))
        reader.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def test_every_base_table_carries_a_comment(db_url):
    """BI tools list the base tables beside the views: each says what a row of it is, and an upgrade at the head
    leaves them as they are."""
    import sqlalchemy as sa

    from registry.store.db import Registry
    from registry.store.models import Base
    from registry.store.views import sync_table_comments, table_comment

    assert run_command(["db", "upgrade", "--db", db_url]).exit_code == 0
    with Registry(db_url) as registry, registry.begin() as conn:
        if registry.dialect == "duckdb":
            stored = dict(conn.execute(sa.text("SELECT table_name, comment FROM duckdb_tables() "
                                               "WHERE schema_name = current_schema()")).all())
        else:
            stored = dict(conn.execute(sa.text(
                "SELECT relname, obj_description(oid, 'pg_class') FROM pg_class "
                "WHERE relnamespace = to_regnamespace(current_schema()) AND relkind = 'r'")).all())
        assert sync_table_comments(conn) == []
    tables = [table.name for table in Base.metadata.sorted_tables]
    assert len(tables) >= 20
    assert {name: stored.get(name) for name in tables} == {name: table_comment(name) for name in tables}
    assert all(table_comment(name) for name in tables)


SERVING_WITHOUT_MIX = """name: no-mix
base: {profile: dsocr-standard-v1}
sweep: {hardware: [h200], runtime: [vllm]}
serving:
  arrival: {offline_pages: 20}
  pages: {count: 20, seed: 1}
"""


def test_a_serving_scenario_without_a_page_mix_generates_the_profiles_new_tokens(tmp_path):
    """Left out, page_mix.new_tokens is the base workload's (512 for dsocr-standard-v1), not a hidden lognormal
    of median 700, p90 1600 and max 8000."""
    from registry.pricing.whatif import load_scenario
    from registry.serving.scenario import serving_spec

    path = tmp_path / "no-mix.yaml"
    path.write_text(SERVING_WITHOUT_MIX)
    mix = serving_spec(load_scenario(path)).mix
    assert (mix.median, mix.p90, mix.max_tokens) == (512, 512, 512)
    path.write_text(SERVING_WITHOUT_MIX.replace("dsocr-standard-v1}", "dsocr-standard-v1, new_tokens: 300}"))
    mix = serving_spec(load_scenario(path)).mix
    assert (mix.median, mix.p90, mix.max_tokens) == (300, 300, 300)


def test_a_page_mix_distribution_is_given_whole(tmp_path):
    path = tmp_path / "half-mix.yaml"
    path.write_text(SERVING_WITHOUT_MIX + "  page_mix: {new_tokens: {median: 700}}\n")
    result = run_command(["whatif", "-s", str(path), "--db", str(tmp_path / "r.duckdb")])
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line.endswith("serving.page_mix.new_tokens: missing key 'p90': give median, p90 and max new tokens (or "
                         "leave new_tokens out: every page then generates the base workload's 512)")


def test_the_measurement_format_is_documented_in_the_repository():
    """docs/formats.md names every row kind and every field a row is linked by, and the code points to it."""
    import re

    from registry.store.measurements import KINDS, MAPPING_FIELDS
    from tests.helpers import REPO

    text = (REPO / "docs" / "formats.md").read_text()
    section = text[text.index("## Measurement files"):]
    named = set(re.findall(r"`([a-z_0-9]+)`", section))
    assert set(KINDS) - named == set() and set(MAPPING_FIELDS) - named == set()
    assert "docs/formats.md" in (REPO / "README.md").read_text()
    assert "docs/formats.md" in (REPO / "analyzer" / "variants.py").read_text()
    for path in [*REPO.glob("analyzer/*.py"), *REPO.glob("registry/**/*.py"), REPO / "README.md",
                 *REPO.glob("docs/*.md")]:
        assert "DESIGN" not in path.read_text(), path  # a document outside the repository


SERVING_WITH_TARGETS = """name: targets
base: {profile: dsocr-base-v1}
sweep: {hardware: [h200], runtime: [vllm]}
serving:
  arrival: {rate_per_s: [1, 4]}
  pages: {count: 40, seed: 3}
target: {pages_per_day: 100000, ttft_p99_s: 2, page_latency_p99_s: 20}
"""


def test_the_serving_plot_draws_the_targets_and_a_ttft_panel(tmp_path):
    """Page latency and TTFT against throughput, side by side, each with its p99 target as a line."""
    import json

    import matplotlib.pyplot as plt

    from registry.serving.scenario import build_serving_figure

    scenario = tmp_path / "targets.yaml"
    scenario.write_text(SERVING_WITH_TARGETS)
    plot = tmp_path / "serving.png"
    result = run_command(["whatif", "-s", str(scenario), "--db", str(tmp_path / "r.duckdb"), "--format", "json",
                          "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.stat().st_size > 10_000
    points = json.loads(result.stdout)["serving"]
    fig = build_serving_figure(points, {"ttft_p99_s": 2, "page_latency_p99_s": 20})
    try:
        latency, ttft = fig.axes
        assert latency.get_ylabel() == "page latency (s)" and ttft.get_ylabel() == "time to first token (s)"
        for axes, target, measured in ((latency, 20, "page_latency_p99_s"), (ttft, 2, "ttft_p99_s")):
            [line] = [line for line in axes.get_lines() if line.get_label().startswith("target: ")]
            assert list(line.get_ydata()) == [target, target]
            [p99] = [line for line in axes.get_lines() if line.get_label() == "h200 / vllm@3 p99"]
            assert sorted(p99.get_ydata()) == sorted(p[measured] for p in points)
    finally:
        plt.close(fig)
