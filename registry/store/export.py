"""Parquet export and read-only DuckDB snapshots, each read in one consistent transaction."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analyzer.fileio import atomic_path, quote
from registry.store import views
from registry.store.db import DEFAULT_STORAGE_VERSION, Registry, RegistryError
from registry.store.models import Base


def table_names() -> list[str]:
    return [table.name for table in Base.metadata.sorted_tables]


def _read_arrow(conn: Connection, name: str) -> pa.Table:
    if conn.dialect.name == "duckdb":
        raw = conn.connection.driver_connection
        return raw.sql(f"SELECT * FROM {name}").to_arrow_table()
    # typed from the schema, not from the values: an empty table keeps its types, every integer column its width
    schema = pa.schema([(column["name"], arrow_type(column["type"]))
                        for column in sa.inspect(conn).get_columns(name)])
    result = conn.execute(sa.text(f"SELECT * FROM {name}"))
    columns = list(result.keys())
    rows = result.all()
    return pa.table({col: pa.array([_arrow_value(row[i]) for row in rows], type=schema.field(col).type)
                     for i, col in enumerate(columns)}, schema=schema)


def arrow_type(column_type: sa.types.TypeEngine) -> pa.DataType:
    """The Arrow type of a column of this SQL type, as DuckDB's own export types it (INTEGER int32, BIGINT int64,
    DOUBLE float64, TIMESTAMP microseconds, JSON as text)."""
    kind = column_type.as_generic() if not isinstance(column_type, sa.types.NullType) else column_type
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.SmallInteger):
        return pa.int16()
    if isinstance(kind, sa.BigInteger):
        return pa.int64()
    if isinstance(kind, sa.Integer):
        return pa.int32()
    if isinstance(kind, sa.Float):  # before Numeric, of which it is a kind
        return pa.float32() if getattr(column_type, "precision", None) in range(1, 25) else pa.float64()
    if isinstance(kind, sa.Numeric):
        if column_type.precision is not None and column_type.precision <= 38:
            return pa.decimal128(column_type.precision, column_type.scale or 0)
        return pa.float64()  # NUMERIC without a precision: no Arrow decimal holds every value
    if isinstance(kind, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if getattr(column_type, "timezone", False) else None)
    if isinstance(kind, sa.Date):
        return pa.date32()
    if isinstance(kind, sa.LargeBinary):
        return pa.binary()
    return pa.string()  # text, JSON (as its text) and anything else


def _arrow_value(value):
    if isinstance(value, (dict, list)):  # a JSON column's parsed value, kept as the text it was stored as
        import json

        return json.dumps(value, sort_keys=True)
    return value


def _consistent(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def _refuse_unless_an_export(out_dir: pathlib.Path) -> None:
    """An existing folder is replaced as a whole, so it must hold an export and nothing else: Parquet files only
    (what `export` writes), and not the folder the command runs in or one above it."""
    if not out_dir.exists():
        return
    if out_dir.is_symlink():
        raise RegistryError(f"{out_dir} is a symbolic link: give the folder itself (export --parquet replaces it)")
    if not out_dir.is_dir():
        raise RegistryError(f"{out_dir} is not a folder (export --parquet writes a folder of Parquet files)")
    if pathlib.Path.cwd().resolve().is_relative_to(out_dir):
        raise RegistryError(f"{out_dir} is the current folder or holds it: export into a folder of its own")
    others = sorted(entry.name for entry in out_dir.iterdir()
                    if entry.suffix != ".parquet" or entry.is_symlink() or not entry.is_file())
    if others:
        raise RegistryError(f"{out_dir} holds more than an export ({quote(others[0])}"
                            f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}), which replacing it "
                            "would remove: give a new folder, or one that holds only a previous export "
                            "(nothing was written)")


def export_parquet(registry: Registry, out_dir: pathlib.Path) -> list[tuple[str, int]]:
    """Every table and view as out_dir/<name>.parquet; returns (name, rows).

    The files are written into a new folder beside out_dir, which then takes out_dir's place: a previous export
    there is moved aside first and removed once the new folder is in place (put back if that fails). A failure at
    any point (a full disk, a database error) leaves out_dir as it was and removes what was written."""
    out_dir = pathlib.Path(os.path.abspath(out_dir))
    _refuse_unless_an_export(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    # the folder's mode: a new folder's (the umask's), or the previous export's
    mode = stat.S_IMODE(out_dir.stat().st_mode) if out_dir.exists() else 0o777 & ~umask
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".new", dir=out_dir.parent))
    try:
        written = _write_files(registry, staging)
        os.chmod(staging, mode)  # mkdtemp makes 0700
        _swap_into_place(staging, out_dir)
    except OSError as exc:
        raise RegistryError(f"cannot write the export {out_dir}: {exc.strerror or exc} (it is left as it was)"
                            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once it took out_dir's place
    return written


def _write_files(registry: Registry, folder: pathlib.Path) -> list[tuple[str, int]]:
    written = []
    with registry.begin() as conn:
        _consistent(conn)
        for name in table_names() + views.view_names():
            arrow_table = _read_arrow(conn, name)
            pq.write_table(arrow_table, folder / f"{name}.parquet")  # a new file: its mode follows the umask
            written.append((name, arrow_table.num_rows))
    return written


def _swap_into_place(staging: pathlib.Path, out_dir: pathlib.Path) -> None:
    """`staging` renamed to `out_dir`; a previous `out_dir` is renamed aside first, put back if the second rename
    fails, and removed once the new folder is in place."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    try:
        os.rename(out_dir, aside)  # onto the empty folder just made, which it replaces
    except OSError:
        aside.rmdir()
        raise
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(aside, out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)  # the export is in place; a leftover old copy is only disk space


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
