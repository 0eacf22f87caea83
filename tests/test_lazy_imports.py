"""Commands load only what they use: `--help` no database code, and commands over stored reports (sql, schema,
summary, whatif) and an analyze of a cached family neither torch nor transformers, nor a database driver or
SQLAlchemy dialect the registry's backend does not use. Checked with `python -X importtime`, as a user would."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, run_command

HEAVY = {"torch", "transformers"}
# On DuckDB: the PostgreSQL drivers and the dialects of other databases. (duckdb_engine's dialect is built on
# SQLAlchemy's PostgreSQL dialect, so that one is in use.)
UNUSED_ON_DUCKDB = {"psycopg", "psycopg2", "psycopg_binary", "asyncpg", "pg8000", "sqlalchemy.dialects.sqlite",
                    "sqlalchemy.dialects.mysql", "sqlalchemy.dialects.mssql", "sqlalchemy.dialects.oracle"}
DATABASE = {"sqlalchemy", "duckdb", "duckdb_engine", "alembic"} | UNUSED_ON_DUCKDB


def imported_modules(args, cwd, env=None) -> set[str]:
    """The modules `dsocr-registry ARGS` imports, read from `python -X importtime`'s report."""
    entry = shutil.which("dsocr-registry") or pytest.fail("dsocr-registry is not installed")
    result = subprocess.run([sys.executable, "-X", "importtime", entry, *args], capture_output=True, text=True,
                            cwd=cwd, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    assert "registry.interfaces.cli" in modules
    return modules


def test_help_imports_no_database_code_and_no_torch(tmp_path):
    modules = imported_modules(["--help"], tmp_path)
    assert not modules & (HEAVY | DATABASE)


SCENARIO = """name: lazy-imports
base: {profile: dsocr-standard-v1, mode: tiny, new_tokens: 16}
sweep: {hardware: [h100-sxm, h200], runtime: [hf-eager]}
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A DuckDB registry holding the scenario's one report (analyzed here), and its report id."""
    folder = tmp_path_factory.mktemp("lazy")
    (folder / "s.yaml").write_text(SCENARIO)
    db = str(folder / "r.duckdb")
    result = run_command(["whatif", "--db", db, "--scenario", str(folder / "s.yaml")])
    assert result.exit_code == 0, result.output
    report_id = run_command(["sql", "--db", db, "SELECT report_id FROM reports", "--format", "csv"]
                            ).output.split()[-1]
    return folder, db, report_id


@pytest.mark.parametrize("command", ["whatif", "summary", "sql", "schema"])
def test_commands_over_stored_reports_import_no_torch_and_no_unused_dialect(stored, command):
    folder, db, report_id = stored
    args = {"whatif": ["whatif", "--db", db, "--scenario", "s.yaml"],
            "summary": ["summary", "--db", db, report_id],
            "sql": ["sql", "--db", db, "SELECT COUNT(*) FROM v_operator_metrics"],
            "schema": ["schema", "--db", db]}[command]
    modules = imported_modules(args, folder)
    assert not modules & (HEAVY | UNUSED_ON_DUCKDB)


def test_analyze_of_a_cached_family_imports_no_torch(tmp_path):
    """Another batch and length of a family analyzed before: derived from the cache entry alone."""
    env = {"DSOCR_CACHE_DIR": str(tmp_path / "cache")}
    first = ["analyze", "--variant", "v1", "--mode", "tiny", "--batch", "2", "-q"]
    subprocess.run([shutil.which("dsocr-registry"), *first], cwd=tmp_path, env={**os.environ, **env}, check=True,
                   capture_output=True)
    modules = imported_modules(["analyze", "--variant", "v1", "--mode", "tiny", "--batch", "9", "--new-tokens",
                                "333", "-q"], tmp_path, env)
    assert not modules & (HEAVY | DATABASE)
