"""Fuzzing every input format (Hypothesis): structure-aware mutations of valid files never get past the readers
as a traceback, an internal error, a message longer than one line of 300 characters, more than 5 s, or rows of
a refused file; DuckDB and PostgreSQL give the same verdict. DSOCR_FUZZ_EXAMPLES sets the examples per format
(default 10); scripts/fuzz_campaign.py runs a longer campaign."""

import contextlib
import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzzing
from tests.conftest import POSTGRES_URL, postgres_schema
from tests.helpers import run_command

EXAMPLES = int(os.environ.get("DSOCR_FUZZ_EXAMPLES", "10"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


def _new_registry(url_of):
    result = run_command(["db", "upgrade", "--db", url_of])
    assert result.exit_code == 0, result.output
    return url_of


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """Registries on every backend the run has (DuckDB, and PostgreSQL when DSOCR_TEST_POSTGRES_URL is set)."""
    urls = [_new_registry(str(tmp_path_factory.mktemp("fuzz") / "registry.duckdb"))]
    with contextlib.ExitStack() as schemas:
        if POSTGRES_URL:
            urls.append(_new_registry(schemas.enter_context(postgres_schema("fuzz"))))
        yield urls


@pytest.fixture(scope="module")
def small_report(standard_v1_report, backends, tmp_path_factory):
    """A small valid report (the root module and its children), stored once on every backend, so that the good
    report beside each fuzzed one shares its module tree and workload and adds only its own rows."""
    data = fuzzing.small_report(standard_v1_report)
    path, _ = fuzzing.good_report_file(data, tmp_path_factory.mktemp("seed"), "seed")
    for url in backends:
        result = run_command(["ingest", str(path), "--db", url])
        assert result.exit_code == 0 and "1 new" in result.output, result.output
    return data


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_fuzzed_reports(fmt, small_report, backends, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz-{fmt}")
    verdicts = []
    serials = itertools.count()  # each example's good report is a new one, also when Hypothesis replays

    @FUZZ
    @given(raw=fuzzing.mutated_file(small_report, fmt, reidentify=True))
    def run(raw):
        serial = f"{fmt}-{next(serials)}"
        verdicts.append(fuzzing.check_report_file(raw, f".{fmt}", folder, small_report, serial, backends))

    run()
    assert "refused" in verdicts


@pytest.mark.parametrize("kind", ["hardware", "runtime"])
def test_fuzzed_catalog_files(kind, backends, tmp_path_factory):
    base = fuzzing.base_documents()[kind]
    folder = tmp_path_factory.mktemp(f"fuzz-{kind}")
    verdicts = []

    @FUZZ
    @given(raw=fuzzing.mutated_file(base, "yaml"))
    def run(raw):
        verdicts.append(fuzzing.check_catalog_file(raw, kind, folder, backends))

    run()
    assert "refused" in verdicts


@pytest.mark.parametrize("kind", ["profile", "scenario", "serving", "measurements"])
def test_fuzzed_reader_files(kind, tmp_path_factory):
    base = fuzzing.base_documents()[kind]
    folder = tmp_path_factory.mktemp(f"fuzz-{kind}")
    fmt = "json" if kind == "measurements" else "yaml"
    read, errors = fuzzing.READERS[kind], fuzzing.reader_errors()[kind]
    valid = folder / f"valid.{fmt}"
    valid.write_bytes(fuzzing.dump(base, fmt))
    read(valid)  # valid, and the reader's imports are done before anything is timed
    verdicts = []

    @FUZZ
    @given(raw=fuzzing.mutated_file(base, fmt))
    def run(raw):
        path = folder / f"fuzzed-{kind}.{fmt}"
        path.write_bytes(raw)
        verdicts.append(fuzzing.check_library_error(read, path, errors))

    run()
    assert "refused" in verdicts


def test_fuzzed_sql_files(backends, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-sql")
    verdicts = []

    @FUZZ
    @given(raw=st.sampled_from(fuzzing.SQL_QUERIES).flatmap(fuzzing.mutated_text))
    def run(raw):
        verdicts.append(fuzzing.check_sql_file(raw, folder, backends))

    run()
    assert "refused" in verdicts


def test_fuzzed_sql_statements_change_nothing(backends, small_report):
    """Dangerous statements in every disguise: `sql` prints rows or refuses in one line; the tables keep their
    rows and the database server writes no file, on DuckDB and PostgreSQL."""
    import pathlib
    import uuid

    folder = pathlib.Path("/tmp") / f"dsocr-sqlfuzz-{uuid.uuid4().hex[:12]}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # the server's own user could write here: what it would write shows
    verdicts = []

    @settings(FUZZ, max_examples=EXAMPLES * 2)
    @given(text=fuzzing.dangerous_sql())
    def run(text):
        verdicts.append(fuzzing.check_dangerous_sql(text, folder / "target", backends))

    try:
        run()
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    assert "refused" in verdicts
