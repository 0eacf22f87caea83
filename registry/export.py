"""Parquet export and read-only DuckDB snapshots, each read in one consistent transaction."""

from __future__ import annotations

import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analyzer.fileio import atomic_path
from registry import views
from registry.db import DEFAULT_STORAGE_VERSION, Registry, RegistryError
from registry.models import Base


def table_names() -> list[str]:
    return [table.name for table in Base.metadata.sorted_tables]


def _read_arrow(conn: Connection, name: str) -> pa.Table:
    if conn.dialect.name == "duckdb":
        raw = conn.connection.driver_connection
        return raw.sql(f"SELECT * FROM {name}").to_arrow_table()
    result = conn.execute(sa.text(f"SELECT * FROM {name}"))
    columns = list(result.keys())
    rows = result.all()
    return pa.table({col: pa.array([row[i] for row in rows]) for i, col in enumerate(columns)})


def _consistent(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def export_parquet(registry: Registry, out_dir: pathlib.Path) -> list[tuple[str, int]]:
    """Every table and view as out_dir/<name>.parquet; returns (name, rows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with registry.begin() as conn:
        _consistent(conn)
        for name in table_names() + views.view_names():
            arrow_table = _read_arrow(conn, name)
            with atomic_path(out_dir / f"{name}.parquet", suffix=".parquet") as tmp:
                pq.write_table(arrow_table, tmp)
            written.append((name, arrow_table.num_rows))
    return written




def _check_storage_version(storage_version: str) -> None:
    """Refuse a storage version this DuckDB cannot write before anything is created (DuckDB's own message lists
    every release it knows, on one very long line)."""
    import duckdb

    try:
        duckdb.connect(":memory:", config={"storage_compatibility_version": storage_version}).close()
    except duckdb.Error:
        raise RegistryError(f"unknown DuckDB storage version {storage_version!r} (give a DuckDB release such as "
                            f"{DEFAULT_STORAGE_VERSION}, or latest)") from None


def snapshot(registry: Registry, target: pathlib.Path, storage_version: str = DEFAULT_STORAGE_VERSION,
             force: bool = False) -> list[tuple[str, int]]:
    """A new DuckDB file at the current schema revision holding a consistent copy of every table.

    `storage_version`: the oldest DuckDB release that must read the file (`latest`: this DuckDB's own format).
    Written beside the target and renamed into place, so a BI tool never sees a half-written file; an existing
    target is replaced only with `force`.
    """
    _check_storage_version(storage_version)
    target = target.resolve()
    if registry.url.get_backend_name() == "duckdb" and registry.url.database and \
            pathlib.Path(registry.url.database).resolve() == target:
        raise RegistryError("the snapshot must be a different file from the registry")
    if target.is_dir():
        raise RegistryError(f"{target} is a directory, not a DuckDB file")
    if target.exists() and not force:
        raise RegistryError(f"{target} exists; add --force to replace it")
    copied = []
    with atomic_path(target, suffix=".duckdb") as tmp:
        tmp.unlink()  # DuckDB creates the file itself
        wal = tmp.with_name(tmp.name + ".wal")
        try:
            _copy_into(registry, tmp, storage_version, copied)
        finally:
            wal.unlink(missing_ok=True)  # the copy is checkpointed when it is closed; a failed one is dropped
    return copied


def _copy_into(registry: Registry, tmp: pathlib.Path, storage_version: str, copied: list[tuple[str, int]]) -> None:
    """Every table of the registry into a new DuckDB file at `tmp`, in one consistent read."""
    copy = Registry(str(tmp), duckdb_config={"storage_compatibility_version": storage_version})
    try:
        copy.upgrade(seed_catalogs=False)  # the catalogs are copied from the source like every other table
        with registry.begin() as source, copy.begin() as dest:
            _consistent(source)
            raw = dest.connection.driver_connection
            for name in table_names():
                if name in ("operator_categories", "view_definitions"):
                    # filled by the migrations (from TargetOperatorList; the views' definitions) in both databases
                    copied.append((name, raw.execute(f"SELECT COUNT(*) FROM {name}").fetchall()[0][0]))
                    continue
                arrow_table = _read_arrow(source, name)
                if arrow_table.num_rows:
                    raw.register("_snapshot_rows", arrow_table)
                    columns = ", ".join(arrow_table.column_names)
                    raw.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM _snapshot_rows")
                    raw.unregister("_snapshot_rows")
                copied.append((name, arrow_table.num_rows))
            for sequence, table in (("architectures_id_seq", "architectures"), ("modules_id_seq", "modules"),
                                    ("workloads_id_seq", "workloads"), ("reports_id_seq", "reports"),
                                    ("hardware_id_seq", "hardware"), ("runtime_profiles_id_seq", "runtime_profiles"),
                                    ("scenarios_id_seq", "scenarios")):
                # keep the copy's sequences past the copied ids, should anyone write to it
                top = raw.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchall()[0][0]
                if top:
                    raw.execute(f"SELECT nextval('{sequence}') FROM range({int(top)})").fetchall()
    finally:
        copy.dispose()
