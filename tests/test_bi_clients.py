"""What BI clients read: the snapshot opened by an older DuckDB and reflected by SQLAlchemy 1.4 + duckdb-engine
(each installed from the package index into a folder of its own and run in a subprocess, never into this
environment), snapshot refusals, file modes of exports and snapshots."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from registry.store.export import table_names
from registry.store.models import Base
from registry.store.views import view_names
from tests.helpers import REPO, rows, run_command

CLIENTS = REPO / "tests" / "clients"
# What BI tools and older Python environments bundle: the oldest DuckDB the snapshot promises to serve, with the
# SQLAlchemy line Superset-style tools ship (1.4) and the last 2.0 release before the reflection regression
# (README, "BI clients"), each with the latest duckdb-engine.
CLIENT_SETS = {
    "sqlalchemy-1.4": ["duckdb==1.1.3", "sqlalchemy==1.4.54", "duckdb-engine==0.17.0"],
    "sqlalchemy-2.0": ["duckdb==1.1.3", "sqlalchemy==2.0.30", "duckdb-engine==0.17.0"],
}
SCENARIO = """\
name: bi-clients
base:
  profile: dsocr-standard-v1
sweep:
  hardware: [h200, a100-80g]
  runtime: [hf-eager]
  batch: [1]
"""


def install(requirements: list[str], folder) -> None:
    """pip install REQUIREMENTS --target FOLDER, retried: the test needs these clients, so a failed install fails
    it (with pip's last lines) rather than skipping it."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
               "--timeout", "60", "--retries", "5", "--target", str(folder), *requirements]
    last = None
    for attempt in range(3):
        try:
            last = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            last = exc
            continue
        if last.returncode == 0:
            return
        time.sleep(5 * (attempt + 1))
    tail = (last.stderr or "")[-2000:] if isinstance(last, subprocess.CompletedProcess) else str(last)
    pytest.fail(f"could not install {' '.join(requirements)} into {folder}: {tail}")


@pytest.fixture(scope="session")
def client_sets(tmp_path_factory):
    """name -> a folder holding that set of CLIENT_SETS, installed on first use, once per test session."""
    installed = {}

    def folder(name):
        if name not in installed:
            target = tmp_path_factory.mktemp(name)
            install(CLIENT_SETS[name], target)
            installed[name] = target
        return installed[name]

    return folder


@pytest.fixture(scope="session")
def old_clients(client_sets):
    return client_sets("sqlalchemy-1.4")


def run_client(folder, script: str, *args) -> dict:
    """A client script under the packages of `folder` alone: -S leaves this environment's site-packages (and its
    DuckDB 2) off the path."""
    done = subprocess.run([sys.executable, "-S", str(CLIENTS / script), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(folder)))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture
def bi_registry(registry_url, report_files, tmp_path):
    """A registry with two reports and a priced scenario, so that every pricing view has rows."""
    result = run_command(["ingest", str(report_files["standard"]), str(report_files["ocr2"]), "--db", registry_url])
    assert result.exit_code == 0, result.output
    scenario = tmp_path / "bi.yaml"
    scenario.write_text(SCENARIO)
    result = run_command(["whatif", "--scenario", str(scenario), "--db", registry_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    return registry_url


def _model_foreign_keys() -> list[list]:
    keys = []
    for table in Base.metadata.sorted_tables:
        for constraint in table.foreign_key_constraints:
            keys.append([table.name, [c.name for c in constraint.columns], constraint.referred_table.name,
                         [e.column.name for e in constraint.elements]])
    return sorted(keys)


def test_duckdb_1_1_reads_every_view_of_a_snapshot(bi_registry, old_clients, tmp_path):
    snap = tmp_path / "bi" / "registry.duckdb"
    result = run_command(["snapshot", str(snap), "--db", bi_registry])
    assert result.exit_code == 0, result.output
    assert "(DuckDB storage v1.1.0)" in result.stdout
    seen = run_client(old_clients, "read_every_view.py", snap)
    assert seen["duckdb"] == "1.1.3"
    assert sorted(seen["views"]) == sorted(view_names())
    for name in table_names():
        assert seen["tables"][name] == rows(bi_registry, f"SELECT COUNT(*) FROM {name}")[0][0], name
    # the same columns and rows as this DuckDB reads from the same file (floats to 9 digits: sums may be added in
    # another order), and as many rows as the registry's own view
    import duckdb

    sys.path.insert(0, str(CLIENTS))
    try:
        from read_every_view import plain
    finally:
        sys.path.remove(str(CLIENTS))
    with duckdb.connect(str(snap), read_only=True) as conn:
        for name in view_names():
            result = conn.execute(f"SELECT * FROM {name}")
            columns = [d[0] for d in result.description]
            expected = sorted(json.dumps([plain(v) for v in row], default=str) for row in result.fetchall())
            assert seen["views"][name]["columns"] == columns, name
            assert seen["views"][name]["rows"] == expected, name
            assert len(expected) == rows(bi_registry, f"SELECT COUNT(*) FROM {name}")[0][0], name
    assert len(seen["views"]["v_point_summary"]["rows"]) == 2 and len(seen["views"]["v_reports"]["rows"]) == 2


def test_the_current_storage_format_is_what_duckdb_1_1_cannot_read(registry_url, report_files, old_clients,
                                                                  tmp_path):
    """--storage-version latest writes this DuckDB's own format: the reason the default is DuckDB 1.1's."""
    run_command(["ingest", str(report_files["base"]), "--db", registry_url])
    snap = tmp_path / "latest.duckdb"
    result = run_command(["snapshot", str(snap), "--db", registry_url, "--storage-version", "latest"])
    assert result.exit_code == 0, result.output
    done = subprocess.run([sys.executable, "-S", str(CLIENTS / "read_every_view.py"), str(snap)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(old_clients)))
    assert done.returncode != 0 and "can only read version 64" in done.stderr
    assert rows(str(snap), "SELECT COUNT(*) FROM v_reports") == [(1,)]  # this DuckDB reads it


@pytest.mark.parametrize("client_set, sqlalchemy_version", [("sqlalchemy-1.4", "1.4.54"),
                                                             ("sqlalchemy-2.0", "2.0.30")])
def test_sqlalchemy_reflects_tables_views_columns_and_foreign_keys(bi_registry, client_sets, tmp_path, client_set,
                                                                   sqlalchemy_version):
    snap = tmp_path / "bi" / "snapshot.duckdb"
    assert run_command(["snapshot", str(snap), "--db", bi_registry]).exit_code == 0
    seen = run_client(client_sets(client_set), "reflect_schema.py", snap)
    assert seen["sqlalchemy"] == sqlalchemy_version and seen["duckdb"] == "1.1.3"
    assert seen["tables"] == sorted(table_names() + ["alembic_version"])
    assert seen["views"] == sorted(view_names())
    assert set(seen["tables"] + seen["views"]) <= set(seen["reflected"])
    for table in Base.metadata.sorted_tables:
        assert seen["columns"][table.name] == [c.name for c in table.columns], table.name
    for name in view_names():
        registry_columns = run_command(["sql", f"SELECT * FROM {name} LIMIT 0", "--db", bi_registry,
                                        "--format", "csv"]).stdout.strip().split(",")
        assert seen["columns"][name] == registry_columns, name
        assert seen["view_rows"][name] == rows(bi_registry, f"SELECT COUNT(*) FROM {name}")[0][0], name
    model_keys = _model_foreign_keys()
    assert seen["foreign_keys"] == model_keys  # duckdb_constraints(), read through the engine
    assert ["serving_requests", ["scenario_id", "point_index"], "serving_points",
            ["scenario_id", "point_index"]] in model_keys
    reflected_keys = sorted([table, *key] for table, keys in seen["inspector_foreign_keys"].items() for key in keys)
    if sqlalchemy_version.startswith("1.4"):
        # SQLAlchemy 1.4's PostgreSQL dialect joins pg_constraint.confrelid, which DuckDB leaves 0: no foreign
        # key comes back from the inspector (README, "BI clients"); duckdb_constraints() above has them
        assert reflected_keys == []
    else:
        assert reflected_keys == model_keys


def test_a_snapshot_never_overwrites_without_force(registry_url, report_files, tmp_path):
    run_command(["ingest", str(report_files["base"]), "--db", registry_url])
    out = tmp_path / "out"
    out.mkdir()
    snap = out / "snap.duckdb"
    snap.write_bytes(b"someone's file")
    refused = run_command(["snapshot", str(snap), "--db", registry_url])
    assert refused.exit_code == 2
    assert refused.stderr == f"dsocr-registry: error: {snap} exists; add --force to replace it\n"
    assert snap.read_bytes() == b"someone's file"
    assert sorted(p.name for p in out.iterdir()) == ["snap.duckdb"]  # no temporary file left beside it
    replaced = run_command(["snapshot", str(snap), "--db", registry_url, "--force"])
    assert replaced.exit_code == 0, replaced.output
    assert rows(str(snap), "SELECT COUNT(*) FROM reports") == [(1,)]
    unknown = run_command(["snapshot", str(out / "new.duckdb"), "--db", registry_url,
                           "--storage-version", "v9.9.9"])
    assert unknown.exit_code == 2
    assert unknown.stderr == ("dsocr-registry: error: unknown DuckDB storage version 'v9.9.9' (give a DuckDB "
                              "release such as v1.1.0, or latest)\n")
    folder = run_command(["snapshot", str(out), "--db", registry_url, "--force"])
    assert folder.exit_code == 2 and folder.stderr.count("\n") == 1 and "directory" in folder.stderr
    assert sorted(p.name for p in out.iterdir()) == ["snap.duckdb"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o027, 0o640)])
def test_exports_and_snapshots_follow_the_umask(registry_url, report_files, tmp_path, umask, mode):
    """A BI service account reads what the umask lets it, as with any file the user creates."""
    run_command(["ingest", str(report_files["base"]), "--db", registry_url])
    previous = os.umask(umask)
    try:
        assert run_command(["export", "--parquet", str(tmp_path / "parquet"), "--db", registry_url]).exit_code == 0
        assert run_command(["snapshot", str(tmp_path / "snap.duckdb"), "--db", registry_url]).exit_code == 0
    finally:
        os.umask(previous)
    files = sorted((tmp_path / "parquet").glob("*.parquet")) + [tmp_path / "snap.duckdb"]
    assert len(files) == len(table_names()) + len(view_names()) + 1
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(mode)}
    assert pq.read_table(tmp_path / "parquet" / "v_reports.parquet").num_rows == 1


def test_the_readme_bi_commands_run_as_written(report_files, old_clients, tmp_path, monkeypatch):
    """The BI clients section's commands, run in a folder whose default registry holds a report; the snapshot
    they write is the one DuckDB 1.1 then reads."""
    import re
    import shlex

    text = (REPO / "docs" / "bi.md").read_text()
    section = text[text.index("## BI clients\n"):]
    section = section[:re.search(r"\n#+ ", section[1:]).start() + 1]  # up to the next heading
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 4 and all(line.startswith("dsocr-registry ") for line in lines)
    monkeypatch.chdir(tmp_path)
    assert run_command(["ingest", str(report_files["base"])]).exit_code == 0  # ./dsocr-registry.duckdb
    for line in lines:
        result = run_command(shlex.split(line, comments=True)[1:])
        assert result.exit_code == 0, (line, result.output)
    seen = run_client(old_clients, "read_every_view.py", tmp_path / "bi" / "registry.duckdb")
    assert len(seen["views"]["v_reports"]["rows"]) == 1
    assert rows(str(tmp_path / "bi" / "current.duckdb"), "SELECT COUNT(*) FROM v_reports") == [(1,)]
    assert len(list((tmp_path / "bi" / "parquet").glob("*.parquet"))) == len(table_names()) + len(view_names())
