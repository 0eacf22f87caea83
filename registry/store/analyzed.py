"""The stored report of a workload: found by its content (this analyzer, this transformers version, the
execution it was traced under), or analyzed and stored. Pricing reads reports by their key and never analyzes: a
what-if, a measurement file and the serving probes ask here for the reports they price first."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import sqlalchemy as sa

from analyzer.execution import DEFAULT_EXECUTION
from registry.store.db import Registry, RegistryError, ReportNotFoundError


def _execution(execution) -> str:
    from analyzer.execution import Execution, parse_execution

    return parse_execution(execution.value if isinstance(execution, Execution) else execution).value


@functools.cache
def transformers_version() -> str:
    """The installed transformers' version, read from its package metadata: the same string as
    transformers.__version__, without importing transformers (and torch) to learn it."""
    import importlib.metadata

    return importlib.metadata.version("transformers")


def find_report(conn, workload, execution=DEFAULT_EXECUTION) -> int | None:
    """The key of a stored report of this workload traced under `execution`, made by this analyzer on this
    transformers version (the newest schema version first). Reports stored before revision 0006 are hf-eager."""
    return find_reports(conn, [workload], execution)[0]


FIND_CHUNK = 1_000  # workload hashes a lookup statement names at most


def find_reports(conn, workloads: list, execution=DEFAULT_EXECUTION) -> list[int | None]:
    """find_report of each workload, in one statement per FIND_CHUNK distinct workloads (a sweep of thousands of
    points looks its reports up at once, not one statement each)."""
    from analyzer import __version__
    from analyzer.workload import workload_record
    from registry.store.ingest import workload_hash

    hashes = [workload_hash(workload_record(workload)) for workload in workloads]
    distinct = sorted(set(hashes))
    found: dict[str, int] = {}
    statement = sa.text(
        "SELECT w.workload_hash, r.id FROM reports r JOIN workloads w ON w.id = r.workload_id "
        "JOIN architectures a ON a.id = r.architecture_id "
        "WHERE w.workload_hash IN :hashes AND r.analyzer_version = :v AND a.transformers_version = :t "
        "AND r.execution = :e "
        "ORDER BY w.workload_hash, r.schema_version DESC, r.id").bindparams(sa.bindparam("hashes", expanding=True))
    for start in range(0, len(distinct), FIND_CHUNK):
        for workload_key, report_key in conn.execute(statement, {
                "hashes": distinct[start:start + FIND_CHUNK], "v": __version__, "t": transformers_version(),
                "e": _execution(execution)}).all():
            found.setdefault(workload_key, int(report_key))  # the first row of each: the newest schema version
    return [found.get(key) for key in hashes]


def ensure_reports(registry: Registry, workloads: list, label: str, progress: bool = False,
                   execution=DEFAULT_EXECUTION, analyze=None) -> list[int]:
    """The key of the stored report of each workload traced under `execution`, analyzing (analyze(workload,
    execution); the service passes one that runs in a worker process, with a time limit) and ingesting those not
    stored yet.

    The workloads to analyze go family by family (analyzer/frame.py: each family's frame is read or traced once,
    and its reports are derived from it), and their reports go into the registry as they are, without a JSON round
    trip, in batches as `ingest` writes them (at most BATCH_REPORTS reports and about BATCH_METRIC_ROWS metric
    rows, one transaction each), with a progress bar when asked for."""
    execution = _execution(execution)
    with registry.begin(keep_open=True) as conn:
        report_keys = find_reports(conn, workloads, execution)
    missing = [i for i, key in enumerate(report_keys) if key is None]
    if not missing:
        return report_keys
    registry.release()  # the file is not held while workloads are analyzed
    # only analyzing loads the analyzer's traces: a sweep whose reports are all stored never does
    from analyzer.execution import parse_execution
    from analyzer.frame import FamilyKey
    from analyzer.workload import workload_record
    from registry.store.ingest import BATCH_METRIC_ROWS, BATCH_REPORTS, batches, metric_row_count, workload_hash, \
        write_batch

    if analyze is None:
        from analyzer.analysis import analyze

    family_of = {index: FamilyKey.of(workloads[index], parse_execution(execution)) for index in missing}
    rank = {family: n for n, family in enumerate(dict.fromkeys(family_of.values()))}
    order = sorted(missing, key=lambda index: rank[family_of[index]])  # stable: a family's points in their order
    pending: list = []
    pending_rows = 0

    def write(batch: list) -> None:
        for outcome in write_batch(registry, batch):
            if outcome.status == "failed":
                raise RegistryError(f"{label}: {outcome.message}")

    writer = WriteBehind(write)

    def flush(behind: bool = False) -> None:
        """Write the pending reports: behind the analysis of the next batch (`behind`), or now."""
        nonlocal pending_rows
        batch = list(pending)
        pending.clear()
        pending_rows = 0
        if behind:
            writer.submit(batch)
        else:
            writer.wait()
            if batch:
                write(batch)

    analyzed: set[str] = set()
    with batches(registry, flush, total=len(missing), unit="workload", desc=f"analyzing ({execution})",
                 disable=not progress or len(missing) < 2) as bar, without_cycle_collection():
        try:
            for index in order:
                key = workload_hash(workload_record(workloads[index]))
                if key not in analyzed:  # an earlier duplicate in this list is analyzed once
                    analyzed.add(key)
                    try:
                        report = analyze(workloads[index], execution)
                    except BaseException:
                        # the reports analyzed so far are kept: the sweep run again analyzes only what is left
                        with contextlib.suppress(Exception):
                            flush()
                        raise
                    pending.append((report, label))
                    pending_rows += metric_row_count(report)
                    if len(pending) >= BATCH_REPORTS or pending_rows >= BATCH_METRIC_ROWS:
                        flush(behind=True)
                bar.update(1)
        finally:
            writer.close()  # the batch in flight, written (or refused) before the registry is let go
    with registry.begin() as conn:
        for index, key in zip(missing, find_reports(conn, [workloads[index] for index in missing], execution)):
            report_keys[index] = key
    return report_keys


@contextlib.contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused: a sweep makes hundreds of thousands of report rows (acyclic, freed by their
    reference counts), and the collector would walk all of them again and again as they are made. Restored as it
    was however the block ends."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class WriteBehind:
    """Writes one batch of reports in a thread of its own while the next batch is analyzed: the database's insert
    (C code, which lets the interpreter go) runs beside the analysis. One batch in flight at most, so memory stays
    bounded; a batch that fails raises its error at the next submit, wait or close, and no later batch is written."""

    def __init__(self, write) -> None:
        self._write = write
        self._executor = None
        self._future = None

    def submit(self, batch: list) -> None:
        self.wait()
        if not batch:
            return
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsocr-writer")
        self._future = self._executor.submit(self._write, batch)

    def wait(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


@contextlib.contextmanager
def private_registry(report, label: str) -> Iterator[tuple[Registry, int]]:
    """A registry in memory (DuckDB) holding only `report`, for pricing a report file without a registry;
    yields the registry and the report's key."""
    from registry.store.ingest import write_report

    registry = Registry("duckdb:///:memory:")
    try:
        registry.upgrade()
        write_report(registry, report, label, keep_open=True)
        with registry.begin() as conn:
            key = conn.execute(sa.text("SELECT id FROM reports WHERE report_id = :r"),
                               {"r": report.report_id}).scalar()
        if key is None:
            raise RegistryError(f"report {report.report_id} was not stored")
        yield registry, int(key)
    finally:
        registry.dispose()


def stored_report_key(conn, report_id: str) -> tuple[int, str, str | None, str]:
    """(key, variant, workload profile id, execution) of a stored report by its content hash."""
    row = conn.execute(sa.text(
        "SELECT r.id, r.variant, w.profile_id, r.execution FROM reports r "
        "JOIN workloads w ON w.id = r.workload_id WHERE r.report_id = :r"), {"r": report_id}).first()
    if row is None:
        raise ReportNotFoundError(f"no report {report_id!r} in the registry")
    from registry.pricing.catalog import known_execution

    return int(row[0]), row[1], row[2], known_execution(row[3], f"report {report_id}").name


def report_id_of(conn, report_key: int) -> str:
    """The content hash of a stored report, by its key."""
    return conn.execute(sa.text("SELECT report_id FROM reports WHERE id = :k"), {"k": report_key}).scalar_one()
