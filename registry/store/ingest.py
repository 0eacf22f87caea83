"""Reports -> normalized rows: idempotent by content hash, all of a report's rows or none, bulk rows in one statement.

Rows go in as Arrow tables on DuckDB (`INSERT ... SELECT ... FROM arrow_table`) and through binary COPY on
PostgreSQL. Many reports (a directory, a glob) go in batches: one transaction and one bulk statement per table for
the whole batch, so the fixed cost of a transaction is paid once per batch, not once per report. Every value is
checked against its column before it is written (`check_columns`). A batch refused (a value a column cannot hold, a
statement the database refuses) is written again one report per transaction, so that one bad report names itself
(a refused value by its key path in the report) and the others still go in; a batch that fails because the
database is gone (a lost connection, a full disk) stores nothing and every report of it is named as failed.

Architectures (module trees) and workloads are shared by content hash; a report whose `report_id` is already
present is skipped, or with `force` has its rows replaced in place (the report row is kept: DuckDB cannot delete a
referenced row in the transaction that deletes the rows referencing it).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import glob
import hashlib
import itertools
import json
import operator
import pathlib
import sys
import traceback
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from analyzer.categories import CATEGORY_POSITION, CategoryId, OperatorCategory
from analyzer.fileio import MAX_INPUT_FILES, key_path, one_line, printable, quote
from analyzer.report import (OPERATOR_COUNT_FIELDS, OPERATOR_KV_FIELDS, AnalyticModelReport, ReportFormatError,
                             load_report)
from registry.store.db import DatabaseError, Registry, RegistryError
from registry.interfaces.entry import debug_enabled
from registry.store.models import (UNKNOWN_KV_BYTES, Architecture, ColumnValueError, Report, Workload,
                                   check_columns, check_row)

REPORT_SUFFIXES = (".json", ".yaml", ".yml")


@attrs.frozen
class Source:
    label: str
    path: pathlib.Path | None  # None: standard input
    error: str | None = None


@attrs.frozen
class IngestOutcome:
    source: str
    status: str  # new | replaced | skipped | failed
    report_id: str | None = None
    rows: int = 0
    message: str = ""


def discover(paths: list[str], max_files: int | None = None) -> list[Source]:
    """Files, directories (searched recursively for .json/.yaml/.yml), globs, and '-' for standard input. More
    than `max_files` files in all (default MAX_INPUT_FILES) is refused as a whole (RegistryError naming the path
    that passed the limit), before anything is read. Walks and globs follow no symlinked directory (pathlib's
    rglob and `**` do not), so a link loop ends; what they find that is not a regular file (a FIFO, a device) is
    left out."""
    limit = MAX_INPUT_FILES if max_files is None else max_files
    sources: list[Source] = []
    found_files = 0

    def too_many(raw: str) -> RegistryError:
        return RegistryError(f"{printable(raw)}: more than {limit:,} input files; name fewer (a narrower folder or "
                             f"pattern)")

    for raw in paths:
        if raw == "-":
            sources.append(Source("<stdin>", None))
            continue
        path = pathlib.Path(raw)
        if path.is_dir():
            found, more = _bounded((p for p in path.rglob("*") if p.suffix.lower() in REPORT_SUFFIXES
                                    and p.is_file()), limit - found_files)
            if more:
                raise too_many(raw)
            if not found:
                sources.append(Source(raw, path, "directory holds no .json, .yaml or .yml file"))
            sources.extend(Source(str(p), p) for p in sorted(found))
            found_files += len(found)
        elif path.exists():
            sources.append(Source(raw, path))
            found_files += 1
        elif glob.has_magic(raw):
            try:
                matches, more = _bounded(_glob(raw), limit - found_files)
            except ValueError as exc:
                sources.append(Source(raw, None, f"invalid pattern ({exc})"))
                continue
            if more:
                raise too_many(raw)
            files = sorted(m for m in matches if m.is_file())
            if not files:
                sources.append(Source(raw, None, "pattern matches no regular file" if matches
                                      else "pattern matches no file"))
            sources.extend(Source(str(m), m) for m in files)
            found_files += len(files)
        else:
            sources.append(Source(raw, path, "no such file or directory"))
        if found_files > limit:
            raise too_many(raw)
    return sources


def _bounded(items, limit: int) -> tuple[list, bool]:
    """The first `limit` items of an iterator, and whether there were more."""
    taken = list(itertools.islice(items, max(limit, 0) + 1))
    return taken[:max(limit, 0)], len(taken) > limit


def _glob(pattern: str):
    """The paths a shell-style pattern matches (`**`: any folders below), through pathlib, whose `**` does not
    follow symlinked folders (glob.glob's does, without end on a link loop). Like glob.glob, a `*` matches no
    name that starts with a dot unless the pattern's part does."""
    parts = pathlib.PurePath(pattern).parts
    first = next(index for index, part in enumerate(parts) if glob.has_magic(part))
    root = pathlib.Path(*parts[:first]) if first else pathlib.Path()
    rest = list(parts[first:])
    if rest[-1] == "**":  # glob.glob's 'folder/**' names the files below too; pathlib's names only folders
        rest.append("*")
    dotted = any(part.startswith(".") for part in rest)
    for match in root.glob("/".join(rest)):
        if dotted or not any(part.startswith(".") for part in match.relative_to(root).parts):
            yield match


def read_source(source: Source) -> AnalyticModelReport:
    """The report of one source, within the input limits of analyzer.fileio (standard input included)."""
    try:
        return load_report(source.path)
    except OSError as exc:
        raise ReportFormatError(exc.strerror or str(exc)) from None


# -- rows -------------------------------------------------------------------------------------------------------

def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# The digest of the module trees met (by the tree tuple's identity, held with its digest): a sweep's reports share
# one tree object, whose hundreds of nodes need not be read again for each of them.
_TREE_DIGESTS: dict[int, tuple[tuple, str, bytes]] = {}
TREE_DIGEST_ENTRIES = 16


def _tree_digest(header: bytes, modules: tuple) -> str:
    held = _TREE_DIGESTS.get(id(modules))
    if held is not None and held[0] is modules and held[2] == header:
        return held[1]
    digest = hashlib.sha256(header)
    for m in modules:
        digest.update(f"{m.path}|{m.parent_path}|{m.class_name}|{m.depth}|{m.parameters}|{m.parameters_self}|"
                      f"{m.weight_bytes}|{','.join(s.value for s in m.stages)}\n".encode())
    if len(_TREE_DIGESTS) >= TREE_DIGEST_ENTRIES:
        _TREE_DIGESTS.clear()
    _TREE_DIGESTS[id(modules)] = (modules, digest.hexdigest(), header)
    return digest.hexdigest()


def architecture_values(report: AnalyticModelReport) -> dict[str, Any]:
    header = (f"{report.model_id}|{report.transformers_model}|{report.transformers_version}|{report.dtype}|"
              f"{report.parameters}|{report.checkpoint_parameters}\n").encode()
    return dict(tree_hash=_tree_digest(header, report.modules), model_id=report.model_id, variant=report.variant,
                transformers_model=report.transformers_model, transformers_version=report.transformers_version,
                dtype=report.dtype, parameters=report.parameters,
                checkpoint_parameters=report.checkpoint_parameters, weight_bytes=report.weight_bytes,
                kv_cache_bytes_per_token=report.kv_cache_bytes_per_token, module_count=len(report.modules))


def workload_hash(record) -> str:
    return _hash(attrs.asdict(record))


def workload_values(report: AnalyticModelReport) -> dict[str, Any]:
    values = attrs.asdict(report.workload)
    return dict(workload_hash=_hash(values), **values)


def report_values(report: AnalyticModelReport, architecture_id: int, workload_id: int, source: str
                  ) -> dict[str, Any]:
    return dict(
        report_id=report.report_id, schema_version=report.schema_version, architecture_id=architecture_id,
        workload_id=workload_id, model_id=report.model_id, variant=report.variant,
        analyzer_version=report.analyzer_version, torch_version=report.torch_version,
        routing_experts=report.routing.experts, routing_experts_per_token=report.routing.experts_per_token,
        routing_shared_experts=report.routing.shared_experts, routing_assumption=report.routing.assumption,
        routing_counting_implementation=report.routing.counting_implementation,
        parameters_note=report.parameters_note, notes="\n".join(report.notes), total_flops=report.total_flops,
        total_bytes=report.total_bytes, total_kernel_launches=sum(s.kernel_launches for s in report.stages),
        source=source[:1000], ingested_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
        execution=report.execution.value, category_records=category_records(report),
        matmul_weight_bytes=report.matmul_weight_bytes)


def category_records(report: AnalyticModelReport) -> str | None:
    """The report's own category records as stored with it (JSON), so that it rebuilds exactly whatever later
    revisions do to operator_categories; version-1 reports carry none (they derive today's)."""
    if report.schema_version < 2:
        return None
    return _category_records_of(tuple(report.categories))


@functools.lru_cache(maxsize=8)
def _category_records_of(categories: tuple[OperatorCategory, ...]) -> str:
    from analyzer.report import CONVERTER

    return json.dumps([CONVERTER.unstructure(c) for c in categories], sort_keys=True, separators=(",", ":"))


_STAGE_FIELDS = ("view_px", "calls", "items", "tokens_per_item", "context_start", "context_end", "flops",
                 "bytes_read", "bytes_written", "weight_bytes_read", "kernel_launches", "op_calls",
                 "activation_peak_bytes", "kv_cache_bytes", "distinct_experts_per_call", "step_flops_base",
                 "step_flops_per_context_token", "step_bytes_base", "step_bytes_per_context_token")


def stage_columns(report: AnalyticModelReport, report_pk: int) -> dict[str, list]:
    stages = report.stages
    cols: dict[str, list] = {"report_id": [report_pk] * len(stages), "stage": [s.stage.value for s in stages],
                             "view_kind": [s.view_kind.value for s in stages]}
    for name in _STAGE_FIELDS:
        cols[name] = [getattr(s, name) for s in stages]
    return cols


def module_columns(report: AnalyticModelReport, architecture_id: int, ids: list[int]) -> dict[str, list]:
    nodes = report.modules
    return {
        "id": list(ids), "architecture_id": [architecture_id] * len(nodes), "path": [n.path for n in nodes],
        "parent_path": [n.parent_path for n in nodes], "name": [n.name for n in nodes],
        "class_name": [n.class_name for n in nodes], "depth": [n.depth for n in nodes],
        "parameters": [n.parameters for n in nodes], "parameters_self": [n.parameters_self for n in nodes],
        "weight_bytes": [n.weight_bytes for n in nodes],
        "stages": [",".join(s.value for s in n.stages) for n in nodes],
    }


def metric_columns(report: AnalyticModelReport, report_pk: int, module_ids: dict[str, int],
                   category_ids: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The module_metrics and operator_metrics rows of a report, as columns: lists, or numpy arrays of int64 for
    integer columns (what bulk_insert and check_columns take; a value past int64 stays a Python int in a list, for
    check_columns to refuse by name).

    The rows come from the report's snapshots, run by run (a stage and view kind each); a run of snapshot objects
    met before (the stages a sweep's points share: one set of objects, see analyzer.frame.assemble_report) has its
    rows from SNAPSHOT_RUNS instead of reading its thousands of objects again."""
    module_parts: list[dict[str, Any]] = []
    operator_parts: list[dict[str, Any]] = []
    category_lookup = _category_lookup(category_ids)
    for run in _snapshot_runs(report.module_metrics):
        snapshot_module_ids = run.module_ids(module_ids)
        module_parts.append({"report_id": _repeated(report_pk, len(run.snapshots)), "module_id": snapshot_module_ids,
                             "stage": [run.stage] * len(run.snapshots),
                             "view_kind": [run.view_kind] * len(run.snapshots), **run.module_counts})
        operator_rows = len(run.operator_snapshot)
        operator_category_ids = _take(category_lookup, run.operator_category)
        if operator_rows and min(operator_category_ids.min() if hasattr(operator_category_ids, "min")
                                 else min(operator_category_ids), 0) < 0:
            missing = sorted({category.value for category, registry_id in zip(CategoryId, category_lookup)
                              if registry_id < 0})
            raise ReportFormatError(f"categories {', '.join(missing)} are not in the registry (upgrade it)")
        operator_parts.append({"report_id": _repeated(report_pk, operator_rows),
                               "module_id": _take(snapshot_module_ids, run.operator_snapshot),
                               "stage": [run.stage] * operator_rows, "view_kind": [run.view_kind] * operator_rows,
                               "category_id": operator_category_ids, **run.operator_counts})
    return concatenate_columns(module_parts, _MODULE_COLUMNS), concatenate_columns(operator_parts, _OPERATOR_COLUMNS)


_SNAPSHOT_COUNT_FIELDS = ("forward_calls", "inclusive_flops", "inclusive_bytes", "inclusive_kernel_launches")
_MODULE_COLUMNS = ("report_id", "module_id", "stage", "view_kind", *_SNAPSHOT_COUNT_FIELDS)
_OPERATOR_COUNT_COLUMNS = (*OPERATOR_COUNT_FIELDS, *OPERATOR_KV_FIELDS)
_OPERATOR_COLUMNS = ("report_id", "module_id", "stage", "view_kind", "category_id", *_OPERATOR_COUNT_COLUMNS)
_SNAPSHOT_COUNTS = operator.attrgetter(*_SNAPSHOT_COUNT_FIELDS)
_OPERATOR_COUNTS = operator.attrgetter(*_OPERATOR_COUNT_COLUMNS)
_CATEGORY_OF = operator.attrgetter("category_id")


def _integer_column(values: list) -> Any:
    """int64 numpy array of `values`, or the list itself when a value is None or past int64."""
    import numpy as np

    try:
        return np.array(values, dtype=np.int64) if None not in values else values
    except OverflowError:
        return values


def _integer_columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, Any]:
    """Columns `names` of `rows` (tuples of integers, in that order), read in one pass: int64 numpy arrays, or
    per column as _integer_column gives it where a value is None or past int64."""
    import numpy as np

    try:
        matrix = np.array(rows, dtype=np.int64).reshape(len(rows), len(names))
    except (TypeError, ValueError, OverflowError):
        return {name: _integer_column([row[position] for row in rows]) for position, name in enumerate(names)}
    by_column = np.ascontiguousarray(matrix.T)
    return {name: by_column[position] for position, name in enumerate(names)}


def _repeated(value: int, count: int) -> Any:
    import numpy as np

    return np.full(count, value, dtype=np.int64)


def _take(lookup, positions) -> Any:
    """lookup[positions] for a numpy array or a list of either."""
    import numpy as np

    if isinstance(lookup, np.ndarray) and isinstance(positions, np.ndarray):
        return lookup[positions]
    return [lookup[p] for p in positions]


@functools.lru_cache(maxsize=8)
def _category_lookup_of(pairs: tuple[tuple[str, int], ...]) -> Any:
    import numpy as np

    ids = dict(pairs)
    # a category the registry lacks maps to -1 (metric_columns refuses a row of it; check_categories, a report of it)
    return np.array([ids.get(category.value, -1) for category in CategoryId], dtype=np.int64)


def _category_lookup(category_ids: dict[str, int]) -> Any:
    """The registry's category id of each CategoryId, by its position in CategoryId."""
    return _category_lookup_of(tuple(sorted(category_ids.items())))


class SnapshotRun:
    """The rows of consecutive snapshots of one stage and view kind, with the snapshots they are read from (held,
    so that their identities are not reused while the run is kept)."""

    def __init__(self, snapshots: tuple) -> None:
        import numpy as np

        self.snapshots = snapshots
        self.stage, self.view_kind = snapshots[0].stage.value, snapshots[0].view_kind.value
        self.module_counts = _integer_columns(list(map(_SNAPSHOT_COUNTS, snapshots)), _SNAPSHOT_COUNT_FIELDS)
        operators = [op for snapshot in snapshots for op in snapshot.operators]
        self.operator_snapshot = np.repeat(np.arange(len(snapshots), dtype=np.int64),
                                           [len(snapshot.operators) for snapshot in snapshots])
        self.operator_category = np.fromiter(map(CATEGORY_POSITION.__getitem__, map(_CATEGORY_OF, operators)),
                                             dtype=np.int64, count=len(operators))
        self.operator_counts = _integer_columns(list(map(_OPERATOR_COUNTS, operators)), _OPERATOR_COUNT_COLUMNS)
        self._module_ids: tuple[dict, Any] | None = None

    def module_ids(self, module_ids: dict[str, int]) -> Any:
        """The registry's module id of each snapshot (kept for the last tree asked about, by its identity)."""
        if self._module_ids is None or self._module_ids[0] is not module_ids:
            self._module_ids = (module_ids, _integer_column([module_ids[s.module_path] for s in self.snapshots]))
        return self._module_ids[1]


# Runs of snapshots by the identity of their first snapshot, most recently used last: a sweep's points share their
# vision, projector and prefill runs (a few per point), so a few dozen suffice.
SNAPSHOT_RUNS: dict[int, SnapshotRun] = {}
SNAPSHOT_RUN_ENTRIES = 64


def _snapshot_runs(snapshots: tuple) -> list[SnapshotRun]:
    runs = []
    start, count = 0, len(snapshots)
    while start < count:
        first = snapshots[start]
        run = SNAPSHOT_RUNS.pop(id(first), None)
        if run is not None:
            end = start + len(run.snapshots)
            if not (end <= count and all(a is b for a, b in zip(run.snapshots, snapshots[start:end]))):
                run = None  # the same first object in another run: read this one afresh
        if run is None:
            end = start + 1
            while end < count and (snapshots[end].stage, snapshots[end].view_kind) == (first.stage, first.view_kind):
                end += 1
            run = SnapshotRun(snapshots[start:end])
        SNAPSHOT_RUNS[id(first)] = run
        if len(SNAPSHOT_RUNS) > SNAPSHOT_RUN_ENTRIES:
            SNAPSHOT_RUNS.pop(next(iter(SNAPSHOT_RUNS)), None)  # the least recently used
        runs.append(run)
        start = end
    return runs


def concatenate_columns(parts: list[dict[str, Any]], names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Columns of the rows of `parts` in order: a numpy array where every part has one, else a list."""
    import numpy as np

    if not parts:
        return {name: [] for name in names or ()}
    columns = {}
    for name in names or parts[0]:
        pieces = [part[name] for part in parts]
        if all(isinstance(piece, np.ndarray) for piece in pieces):
            columns[name] = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        else:
            columns[name] = list(itertools.chain.from_iterable(
                piece.tolist() if isinstance(piece, np.ndarray) else piece for piece in pieces))
    return columns


def _category_order(category: OperatorCategory) -> int:
    return CATEGORY_POSITION[category.category_id]


def stored_categories(registry: Registry, conn: Connection) -> tuple[OperatorCategory, ...]:
    """The registry's operator categories as report records, in the order of `TargetOperatorList` (ids follow the
    order categories were added in, not the list's)."""
    return tuple(sorted((OperatorCategory(category_id=CategoryId(name), display_name=display_name or "",
                                          description=description, match_classes=json.loads(match_classes or "[]"))
                         for name, display_name, description, match_classes in registry.category_rows(conn)),
                        key=_category_order))


def check_categories(report: AnalyticModelReport, stored: tuple[OperatorCategory, ...]) -> None:
    """A report of the current schema version is stored against the registry's category rows, so its categories
    must be those rows. A report of an older version keeps its own records (reports.category_records, or derived
    for version 1): its category ids must be rows of the registry."""
    from analyzer.report import SCHEMA_VERSION

    by_id = {c.category_id: c for c in stored}
    if report.schema_version < SCHEMA_VERSION:
        unknown = [c.category_id.value for c in report.categories if c.category_id not in by_id]
        if unknown:
            raise ReportFormatError(f"categories {', '.join(unknown)} are not in the registry (upgrade it)")
        return
    if sorted(report.categories, key=_category_order) == sorted(stored, key=_category_order):
        return
    for category in report.categories:
        if by_id.get(category.category_id) != category:
            raise ReportFormatError(f"category {category.category_id.value!r} differs from the registry's "
                                    f"definition (analyzer and registry disagree; upgrade the older one)")
    raise ReportFormatError("the report's categories are not the registry's: "
                            f"{', '.join(c.category_id.value for c in report.categories)}")


# -- writing ----------------------------------------------------------------------------------------------------

# The rows a report owns besides its reports row, in the order they are deleted when a report is replaced.
REPORT_ROW_TABLES = ("operator_cost_groups", "operator_metrics", "module_metrics", "report_stages")
_COST_GROUP_KEYS = ("report_id, stage, view_kind, category_id, op_calls, kernel_launches, flops, bytes_read, "
                    "bytes_written, weight_bytes_read, kv_cache_bytes_read, kv_cache_bytes_written")
# what each key takes from the operator rows: unknown KV bytes (NULL) are UNKNOWN_KV_BYTES, as a key cannot be NULL
_COST_GROUP_VALUES = ("report_id, stage, view_kind, category_id, op_calls, kernel_launches, flops, bytes_read, "
                      f"bytes_written, weight_bytes_read, COALESCE(kv_cache_bytes_read, {UNKNOWN_KV_BYTES}), "
                      f"COALESCE(kv_cache_bytes_written, {UNKNOWN_KV_BYTES})")


def store_cost_groups(conn: Connection, report_pks: list[int]) -> None:
    """The operator cost groups of reports whose operator rows were just written (same transaction): one GROUP BY
    over those rows, keyed on the counts and the bytes by role. The range bound lets DuckDB skip the older rows by
    their zone maps; PostgreSQL uses the key."""
    if not report_pks:
        return
    conn.execute(sa.text(
        f"INSERT INTO operator_cost_groups ({_COST_GROUP_KEYS}, operator_rows) "
        f"SELECT {_COST_GROUP_VALUES}, COUNT(*) FROM operator_metrics "
        f"WHERE report_id BETWEEN :low AND :high AND report_id IN :pks GROUP BY {_COST_GROUP_VALUES}"
    ).bindparams(sa.bindparam("pks", expanding=True)),
        {"low": min(report_pks), "high": max(report_pks), "pks": sorted(report_pks)})


_VALUES_LIMIT = 2_000  # values (rows x columns) up to which DuckDB gets one VALUES statement instead of Arrow


def bulk_insert(conn: Connection, table: str, columns: dict[str, list]) -> int:
    """Insert column lists in one statement: Arrow on DuckDB, binary COPY on PostgreSQL; a value its column cannot
    hold is refused first (`check_columns`, a ColumnValueError), so both backends give the same verdict."""
    names = list(columns)
    count = len(columns[names[0]]) if names else 0
    if count == 0:
        return 0
    check_columns(table, columns)
    column_list = ", ".join(names)
    dialect = conn.dialect.name
    raw = conn.connection.driver_connection
    if dialect != "duckdb" or count * len(names) <= _VALUES_LIMIT:  # numpy arrays go to Arrow only
        columns = {name: values.tolist() if hasattr(values, "tolist") else values for name, values in columns.items()}
    if dialect == "duckdb" and count * len(names) <= _VALUES_LIMIT:
        # a few rows (a scenario's points, a new workload): one VALUES statement, which spares loading pyarrow
        row_marks = "(" + ", ".join("?" * len(names)) + ")"
        raw.execute(f"INSERT INTO {table} ({column_list}) VALUES {', '.join([row_marks] * count)}",
                    [value for row in zip(*(columns[name] for name in names)) for value in row])
    elif dialect == "duckdb":
        import pyarrow as pa

        arrow_rows = pa.table(columns)
        view = f"_ingest_{table}"
        raw.register(view, arrow_rows)
        # Not in a `finally`: after a failed insert the transaction is aborted, unregistering fails too and would
        # hide the insert's own error (the registration goes with the connection, which is then closed).
        raw.execute(f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {view}")
        raw.unregister(view)
    elif dialect == "postgresql":
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(copy_types(table, names))
                for row in zip(*(columns[name] for name in names)):
                    copy.write_row(row)
    else:  # pragma: no cover - resolve_url admits only these two
        raise RegistryError(f"bulk insert is not implemented for {dialect}")
    return count


# Binary COPY sends each value in its column's own binary form, so the types are the columns' exact ones
# (varchar's binary form is text's).
_COPY_TYPES = ((sa.SmallInteger, "int2"), (sa.BigInteger, "int8"), (sa.Integer, "int4"), (sa.Double, "float8"),
               (sa.Float, "float8"), (sa.Boolean, "bool"), (sa.DateTime, "timestamp"), (sa.String, "text"))


def copy_types(table: str, names: list[str]) -> list[str]:
    """PostgreSQL type names of a table's columns, as the models declare them."""
    from registry.store.models import Base

    columns = Base.metadata.tables[table].c
    types = []
    for name in names:
        column_type = columns[name].type
        types.append(next(pg for kind, pg in _COPY_TYPES if isinstance(column_type, kind)))
    return types


def allocate_ids(conn: Connection, sequence: str, count: int) -> list[int]:
    if count == 0:
        return []
    series = "range(:n)" if conn.dialect.name == "duckdb" else "generate_series(1, :n)"
    rows = conn.execute(sa.text(f"SELECT nextval('{sequence}') FROM {series}"), {"n": count}).all()
    return sorted(int(r[0]) for r in rows)


def _find_or_create(conn: Connection, model, key: str, values: dict[str, Any]) -> tuple[int, bool]:
    table = model.__table__
    check_row(table.name, values)
    column = table.c[key]
    found = conn.execute(sa.select(table.c.id).where(column == values[key])).scalar()
    if found is not None:
        return int(found), False
    inserted = conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
                            .returning(table.c.id)).scalar()
    if inserted is not None:
        return int(inserted), True
    # another writer created it between our select and insert
    return int(conn.execute(sa.select(table.c.id).where(column == values[key])).scalar_one()), False


_REPORT_TOTALS = {"total_flops": "stages[].flops", "total_bytes": "stages[].bytes_read + bytes_written",
                  "total_kernel_launches": "stages[].kernel_launches"}


def column_key_path(report: AnalyticModelReport, error: ColumnValueError) -> str:
    """Where in the report the value a column refused comes from (the row builders above, read backwards)."""
    table, column, index = error.table, error.column, error.index
    if table == "reports":
        if column in _REPORT_TOTALS:
            return f"{_REPORT_TOTALS[column]} (their sum)"
        return f"routing.{column.removeprefix('routing_')}" if column.startswith("routing_") else column
    if table == "architectures":
        return "modules (their count)" if column == "module_count" else column
    if table == "workloads":
        return f"workload.{column}"
    if table == "report_stages":
        return key_path(("stages", index, column))
    if table == "modules":
        return key_path(("modules", index, column))
    if table == "module_metrics":
        return key_path(("module_metrics", index, column))
    if table == "operator_metrics":
        for snapshot_index, snapshot in enumerate(report.module_metrics):
            if index < len(snapshot.operators):
                return key_path(("module_metrics", snapshot_index, "operators", index, column))
            index -= len(snapshot.operators)
    return f"{table}.{column}"  # pragma: no cover - every table a report writes is named above


def write_report(registry: Registry, report: AnalyticModelReport, source: str, force: bool = False,
                 keep_open: bool = False) -> IngestOutcome:
    """All rows of one report in one transaction, or none. A value that does not fit its column is a
    ReportFormatError naming its key path, and nothing of the report is stored."""
    try:
        return _write_report(registry, report, source, force, keep_open)
    except ColumnValueError as exc:
        raise ReportFormatError(f"{column_key_path(report, exc)}: {quote(exc.value)} does not fit the registry "
                                f"(column {exc.table}.{exc.column} holds {exc.limit})") from None


def _write_report(registry: Registry, report: AnalyticModelReport, source: str, force: bool,
                  keep_open: bool) -> IngestOutcome:
    architecture = architecture_values(report)
    cached = registry.architecture_cache.get(architecture["tree_hash"])
    with registry.begin(keep_open=keep_open) as conn:
        category_ids = registry.category_ids(conn)
        check_categories(report, stored_categories(registry, conn))
        rows = 0
        if cached is not None:
            architecture_id, module_ids = cached
        else:
            architecture_id, new_architecture = _find_or_create(conn, Architecture, "tree_hash", architecture)
            if new_architecture:
                ids = allocate_ids(conn, "modules_id_seq", len(report.modules))
                rows += 1 + bulk_insert(conn, "modules", module_columns(report, architecture_id, ids))
            module_ids = dict(conn.execute(sa.text("SELECT path, id FROM modules WHERE architecture_id = :a"),
                                           {"a": architecture_id}).all())
        missing = {snap.module_path for snap in report.module_metrics} - set(module_ids)
        if missing:
            raise ReportFormatError(f"metrics name modules absent from the stored tree: {sorted(missing)[:3]}")
        workload_id, new_workload = _find_or_create(conn, Workload, "workload_hash", workload_values(report))
        rows += int(new_workload)

        values = report_values(report, architecture_id, workload_id, source)
        check_row("reports", values)
        reports = Report.__table__
        report_pk = conn.execute(pg_insert(reports).values(**values)
                                 .on_conflict_do_nothing(index_elements=["report_id"])
                                 .returning(reports.c.id)).scalar()
        status = "new"
        outcome = None
        if report_pk is None:
            report_pk = conn.execute(sa.select(reports.c.id).where(reports.c.report_id == report.report_id)
                                     ).scalar_one()
            if not force:
                status = "skipped"
                outcome = IngestOutcome(source, status, report.report_id, 0, "already present")
            else:
                _replace_rows(conn, report_pk, values)
                status = "replaced"
        if status in ("new", "replaced"):
            rows += 1
            rows += bulk_insert(conn, "report_stages", stage_columns(report, report_pk))
            module_rows, operator_rows = metric_columns(report, report_pk, module_ids, category_ids)
            rows += bulk_insert(conn, "module_metrics", module_rows)
            rows += bulk_insert(conn, "operator_metrics", operator_rows)
            store_cost_groups(conn, [report_pk])
            outcome = IngestOutcome(source, status, report.report_id, rows)
    # committed: the tree's ids are now safe to reuse
    registry.architecture_cache[architecture["tree_hash"]] = (architecture_id, module_ids)
    return outcome


# A batch is written in one transaction, which holds a DuckDB file for its length: about half a second of DuckDB's
# own insert rate, and few enough reports that a failed batch is cheap to write again one by one. Each commit costs
# a part of its own besides its rows (a sweep of 1,000 points stored about 10% faster in batches of this size than
# of half of it).
BATCH_METRIC_ROWS = 500_000
BATCH_REPORTS = 500


def metric_row_count(report: AnalyticModelReport) -> int:
    """report_stages + module_metrics + operator_metrics rows of a report."""
    return (len(report.stages) + len(report.module_metrics)
            + sum(len(snapshot.operators) for snapshot in report.module_metrics))


def _connection_lost(exc: BaseException) -> bool:
    """The database itself failed (a lost connection, a full disk, an invalidated DuckDB file) rather than refusing
    a row: writing the batch's reports again one by one would fail the same way, or half-succeed."""
    import duckdb

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    cause = getattr(cause, "orig", None) or cause
    if isinstance(cause, (duckdb.IOException, duckdb.FatalException, duckdb.ConnectionException,
                          sa.exc.OperationalError, sa.exc.InterfaceError)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError))


def _ids_by(conn: Connection, table: str, key: str, values: list[str]) -> dict[str, int]:
    if not values:
        return {}
    statement = sa.text(f"SELECT {key}, id FROM {table} WHERE {key} IN :values").bindparams(
        sa.bindparam("values", expanding=True))
    return {found: int(pk) for found, pk in conn.execute(statement, {"values": values}).all()}


def _extend(target: dict[str, list], columns: dict[str, list]) -> None:
    for name, values in columns.items():
        target.setdefault(name, []).extend(values)


def _replace_rows(conn: Connection, report_pk: int, values: dict[str, Any]) -> None:
    reports = Report.__table__
    check_row("reports", values)
    for table in REPORT_ROW_TABLES:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE report_id = :r"), {"r": report_pk})
    conn.execute(reports.update().where(reports.c.id == report_pk)
                 .values(source=values["source"], ingested_at=values["ingested_at"],
                         execution=values["execution"], category_records=values["category_records"],
                         matmul_weight_bytes=values["matmul_weight_bytes"]))


def write_batch(registry: Registry, items: list[tuple[AnalyticModelReport, str]], force: bool = False
                ) -> list[IngestOutcome]:
    """Many reports in one transaction, one bulk statement per table; an outcome per item, in order.

    A report the registry refuses on its own (categories, a tree that lacks its modules) fails alone, before
    anything is written. A batch refused as a whole (a value a column cannot hold, a statement the database
    refuses, an unexpected error) is written again one report per transaction, so that the bad report names itself
    (a refused value by its key path) and the others still go in, and a report a concurrent writer stored meanwhile
    is skipped; a batch whose database fails under it stores nothing, and each of its reports is named failed with
    the database's line. A registry that cannot be used at all (locked, wrong revision) stops the caller.
    """
    if not items:
        return []
    if len(items) == 1:
        report, source = items[0]
        try:
            return [write_report(registry, report, source, force, keep_open=True)]
        except Exception as exc:
            return [failed_outcome(source, exc)]
    try:
        return _write_batch(registry, items, force)
    except DatabaseError as exc:
        if _connection_lost(exc):
            return [IngestOutcome(source, "failed", report.report_id, message=str(exc)) for report, source in items]
    except RegistryError:
        raise
    except ColumnValueError:
        pass  # the report that holds the value names it by its key path below
    except Exception:
        if debug_enabled():
            traceback.print_exc()
    return [outcome for item in items for outcome in write_batch(registry, [item], force)]


def failed_outcome(source: str, exc: Exception) -> IngestOutcome:
    """What went wrong with one source as its one line (status "failed"), so the other sources of the command
    still go in; a registry that cannot be used at all (locked, wrong revision) is raised again. DSOCR_DEBUG=1 (or
    --debug) also prints the traceback of an unexpected error."""
    if isinstance(exc, (ReportFormatError, DatabaseError)):
        message = str(exc)
    elif isinstance(exc, RegistryError):
        raise exc
    else:  # a bug or a resource limit: still this file's line, not the command's end
        if debug_enabled():
            traceback.print_exception(exc)
        message = f"internal error: {type(exc).__name__}: {exc} (DSOCR_DEBUG=1 shows the traceback)"
    return IngestOutcome(source, "failed", message=one_line(message))


def _write_batch(registry: Registry, items: list[tuple[AnalyticModelReport, str]], force: bool
                 ) -> list[IngestOutcome]:
    outcomes: list[IngestOutcome | None] = [None] * len(items)
    rows = [0] * len(items)
    trees: dict[str, tuple[int, dict[str, int]]] = {}
    with registry.begin(keep_open=True) as conn:
        category_ids = registry.category_ids(conn)
        stored = stored_categories(registry, conn)
        accepted: list[int] = []
        tree_of: dict[int, str] = {}
        for index, (report, source) in enumerate(items):
            try:
                check_categories(report, stored)
                architecture = architecture_values(report)
                tree_hash = architecture["tree_hash"]
                if tree_hash not in trees:
                    cached = registry.architecture_cache.get(tree_hash)
                    if cached is None:
                        architecture_id, created = _find_or_create(conn, Architecture, "tree_hash", architecture)
                        if created:
                            ids = allocate_ids(conn, "modules_id_seq", len(report.modules))
                            rows[index] += 1 + bulk_insert(conn, "modules",
                                                           module_columns(report, architecture_id, ids))
                        module_ids = dict(conn.execute(sa.text(
                            "SELECT path, id FROM modules WHERE architecture_id = :a"), {"a": architecture_id}).all())
                        cached = (architecture_id, module_ids)
                    trees[tree_hash] = cached
                missing = {snap.module_path for snap in report.module_metrics} - set(trees[tree_hash][1])
                if missing:
                    raise ReportFormatError(f"metrics name modules absent from the stored tree: {sorted(missing)[:3]}")
            except ReportFormatError as exc:
                outcomes[index] = IngestOutcome(source, "failed", message=str(exc))
                continue
            accepted.append(index)
            tree_of[index] = tree_hash

        # workloads: the new ones in one statement (ON CONFLICT: a concurrent writer may add the same one)
        workload_of = {index: workload_values(items[index][0]) for index in accepted}
        by_hash = {values["workload_hash"]: values for values in workload_of.values()}
        workload_ids = _ids_by(conn, "workloads", "workload_hash", list(by_hash))
        new_workloads = [values for key, values in by_hash.items() if key not in workload_ids]
        if new_workloads:
            check_columns("workloads", {name: [values[name] for values in new_workloads] for name in new_workloads[0]})
            conn.execute(pg_insert(Workload.__table__).values(new_workloads)
                         .on_conflict_do_nothing(index_elements=["workload_hash"]))
            created = {key for key in by_hash if key not in workload_ids}
            workload_ids.update(_ids_by(conn, "workloads", "workload_hash", sorted(created)))
            for index in accepted:  # the first report of a new workload counts its row
                key = workload_of[index]["workload_hash"]
                if key in created:
                    rows[index] += 1
                    created.discard(key)

        # reports: present ones are skipped (or replaced), the new ones go in as one bulk insert
        present = _ids_by(conn, "reports", "report_id", sorted({items[i][0].report_id for i in accepted}))
        seen: set[str] = set()
        fresh: list[int] = []
        targets: dict[int, int] = {}
        for index in accepted:
            report, source = items[index]
            if report.report_id in seen or (report.report_id in present and not force):
                outcomes[index] = IngestOutcome(source, "skipped", report.report_id, 0, "already present")
                continue
            seen.add(report.report_id)
            if report.report_id in present:
                targets[index] = present[report.report_id]
                _replace_rows(conn, targets[index], report_values(
                    report, trees[tree_of[index]][0], workload_ids[workload_of[index]["workload_hash"]], source))
            else:
                fresh.append(index)
        report_columns: dict[str, list] = {}
        for index, report_pk in zip(fresh, allocate_ids(conn, "reports_id_seq", len(fresh))):
            report, source = items[index]
            targets[index] = report_pk
            values = report_values(report, trees[tree_of[index]][0],
                                   workload_ids[workload_of[index]["workload_hash"]], source)
            _extend(report_columns, {"id": [report_pk], **{name: [value] for name, value in values.items()}})
        bulk_insert(conn, "reports", report_columns)

        stage_rows: dict[str, list] = {}
        module_parts: list[dict] = []
        operator_parts: list[dict] = []
        for index, report_pk in targets.items():
            report, source = items[index]
            stages = stage_columns(report, report_pk)
            modules, operators = metric_columns(report, report_pk, trees[tree_of[index]][1], category_ids)
            _extend(stage_rows, stages)
            module_parts.append(modules)
            operator_parts.append(operators)
            rows[index] += 1 + len(stages["stage"]) + len(modules["stage"]) + len(operators["stage"])
            outcomes[index] = IngestOutcome(source, "new" if index in fresh else "replaced", report.report_id,
                                            rows[index])
        bulk_insert(conn, "report_stages", stage_rows)
        bulk_insert(conn, "module_metrics", concatenate_columns(module_parts))
        bulk_insert(conn, "operator_metrics", concatenate_columns(operator_parts))
        store_cost_groups(conn, list(targets.values()))
    # committed: the trees' ids are now safe to reuse
    registry.architecture_cache.update(trees)
    return outcomes


def ingest_sources(registry: Registry, sources: list[Source], force: bool = False, progress: bool = False
                   ) -> list[IngestOutcome]:
    """Read every source (a bad one fails alone) and write the reports in batches of at most BATCH_REPORTS
    reports and about BATCH_METRIC_ROWS metric rows; outcomes in the order of the sources."""
    outcomes: list[IngestOutcome | None] = [None] * len(sources)
    pending: list[tuple[int, AnalyticModelReport, str]] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending_rows
        if pending:
            written = write_batch(registry, [(report, label) for _, report, label in pending], force)
            registry.release()  # the file is not held while the next batch is read
            for (index, _, _), outcome in zip(pending, written):
                outcomes[index] = outcome
        pending.clear()
        pending_rows = 0

    with batches(registry, flush, total=len(sources), unit="report", disable=not progress) as bar:
        for index, source in enumerate(sources):
            if source.error is not None:
                outcomes[index] = IngestOutcome(source.label, "failed", message=source.error)
            else:
                try:
                    report = read_source(source)
                except Exception as exc:
                    outcomes[index] = failed_outcome(source.label, exc)
                else:
                    pending.append((index, report, source.label))
                    pending_rows += metric_row_count(report)
                    if len(pending) >= BATCH_REPORTS or pending_rows >= BATCH_METRIC_ROWS:
                        flush()
            bar.update(1)
    return outcomes


@contextlib.contextmanager
def batches(registry: Registry, flush, **bar_options):
    """A progress bar (tqdm, on stderr) over work written in batches by `flush`: the last batch is flushed when
    the work ends, and the registry's connection is let go however it ends."""
    from tqdm import tqdm

    bar = tqdm(file=sys.stderr, leave=False, **bar_options)
    try:
        yield bar
        flush()
    finally:
        bar.close()
        registry.release()


def summarize(outcomes: list[IngestOutcome], seconds: float, where: str) -> str:
    counts = {status: sum(1 for o in outcomes if o.status == status)
              for status in ("new", "replaced", "skipped", "failed")}
    rows = sum(o.rows for o in outcomes)
    rate = f" ({rows / seconds:,.0f} rows/s)" if seconds > 0 and rows else ""
    parts = [f"{counts['new']} new"]
    if counts["replaced"]:
        parts.append(f"{counts['replaced']} replaced")
    parts.append(f"{counts['skipped']} skipped (already present)")
    parts.append(f"{counts['failed']} failed")
    return f"ingest: {', '.join(parts)}; {rows:,} rows in {seconds:.2f} s{rate} -> {where}"
