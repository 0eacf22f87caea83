import atexit
import contextlib
import os
import shutil
import tempfile

import pytest

from tests.helpers import run_command

# The tests' reports use a trace cache of their own, never the user's (and commands they run inherit it). The
# process that starts the run makes it; its pytest-xdist workers, started from it, inherit the folder and share it
# (entries are written whole and renamed into place), so a family one worker traced is a hit for the other.
_SHARED_CACHE_ENV = "DSOCR_TEST_RUN_CACHE_DIR"
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_SHARED_CACHE_ENV):
    _TEST_CACHE_DIR = os.environ[_SHARED_CACHE_ENV]
else:
    _TEST_CACHE_DIR = tempfile.mkdtemp(prefix="dsocr-test-cache-")
    os.environ[_SHARED_CACHE_ENV] = _TEST_CACHE_DIR
    atexit.register(shutil.rmtree, _TEST_CACHE_DIR, ignore_errors=True)
os.environ["DSOCR_CACHE_DIR"] = _TEST_CACHE_DIR


@pytest.fixture(scope="session")
def standard_v1_report():
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    return analyze(load_profile("dsocr-standard-v1"))


@pytest.fixture(scope="session")
def standard_ocr2_report():
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    return analyze(load_profile("dsocr-standard-ocr2"))


# -- registry fixtures: every registry test runs on DuckDB, and on PostgreSQL when DSOCR_TEST_POSTGRES_URL is set --

POSTGRES_URL = os.environ.get("DSOCR_TEST_POSTGRES_URL")
BACKENDS = ["duckdb", pytest.param("postgresql", marks=pytest.mark.skipif(
    not POSTGRES_URL, reason="set DSOCR_TEST_POSTGRES_URL to run the PostgreSQL tests"))]


@contextlib.contextmanager
def postgres_schema(prefix: str):
    """The URL of a fresh schema in the PostgreSQL test database (its search_path), dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg").update_query_dict(
            {"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A URL of an empty database: a new DuckDB file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "duckdb":
        yield str(tmp_path / "registry.duckdb")
        return
    with postgres_schema("t") as url:
        yield url


@pytest.fixture(scope="session")
def report_files(tmp_path_factory):
    """Reports of a few distinct workloads, written as JSON and YAML."""
    from analyzer.analysis import analyze
    from analyzer.report import write_report
    from analyzer.workload import load_profile

    folder = tmp_path_factory.mktemp("reports")
    files = {}
    for name, profile, overrides, suffix in [
        ("standard", "dsocr-standard-v1", {}, ".json"),
        ("standard_256", "dsocr-standard-v1", {"new_tokens": 256}, ".json"),
        ("base", "dsocr-base-v1", {"new_tokens": 64}, ".yaml"),
        ("ocr2", "dsocr-standard-ocr2", {"batch": 4}, ".json"),
    ]:
        path = folder / f"{name}{suffix}"
        write_report(analyze(load_profile(profile, **overrides)), path)
        files[name] = path
    return files


@pytest.fixture(scope="session")
def upgraded_duckdb_file(tmp_path_factory):
    """A DuckDB registry `dsocr-registry db upgrade` made, once per test process."""
    path = tmp_path_factory.mktemp("upgraded") / "registry.duckdb"
    result = run_command(["db", "upgrade", "--db", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def registry_url(db_url, request):
    """`db_url` after `dsocr-registry db upgrade` (what a PostgreSQL user does first). On DuckDB a copy of a file
    the command made once: the same bytes, without the migrations' half second per test."""
    if not db_url.startswith("postgresql"):
        shutil.copyfile(request.getfixturevalue("upgraded_duckdb_file"), db_url)
        return db_url
    result = run_command(["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0, result.output
    return db_url


def pytest_unconfigure(config):
    """DuckDB's bindings print reference-leak reports when torn down in a process that also loaded torch; the
    run is over and reported, so leave without that teardown (as the CLI does)."""
    import sys

    status = getattr(config, "_dsocr_exit_status", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))


def pytest_sessionfinish(session, exitstatus):
    session.config._dsocr_exit_status = exitstatus
