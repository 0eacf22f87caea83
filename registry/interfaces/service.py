"""The HTTP service: contracts/openapi.yaml served by Starlette (run by uvicorn: `dsocr-registry serve`).

Every endpoint calls the library functions the command line calls (registry.interfaces.contract, registry.pricing.whatif,
registry.serving.scenario, registry.store.stored); this module adds only what HTTP needs:

- One registry per process. Writes (run states, stored reports, scenarios) go through one writer thread; reads run
  on a thread pool and never wait behind an analysis, which runs in a worker process (it imports torch and takes
  seconds) under a time limit. On DuckDB the process owns the file (DuckDB lets one process open it); on
  PostgreSQL several processes or hosts share one registry, and identical runs are joined across them.
- `POST .../run` answers 202 at once with the run's id and status URL; the analysis is stored in one transaction
  (no half-stored report). A run's state is a row (analysis_runs): a run cut off by a stop reads as failed, or done
  if its report was stored.
- Bounded work: the event loop only routes. Bodies are parsed and scenarios checked on threads; a sweep past the
  per-request limits is refused (422) from its list lengths before anything is expanded; analyses and serving
  simulations run in worker processes under time limits (a simulation under a memory limit too), and the writer
  thread only writes what they computed.
- Safe defaults: write endpoints need `Authorization: Bearer TOKEN` when a token is set (`serve` refuses to listen
  beyond loopback without one); request bodies are JSON only (415), limited in size, nesting and read time; the
  Host header must name the bound address or an --allowed-host (421: no DNS rebinding); no CORS headers unless
  --cors-origin; headers must arrive within --header-timeout and connections waiting for theirs are bounded; a
  profile is a shipped name or an inline mapping, never a server path; every error is JSON `{"error": "one line"}`
  with its status and never a stack trace (those go to the log); one JSON log line per request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import decimal
import hmac
import importlib.resources
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import threading
import time
from typing import Any

import attrs
from uvicorn.protocols.http.h11_impl import H11Protocol

from analyzer.errors import AnalyzerInputError
from analyzer.execution import DEFAULT_EXECUTION
from analyzer.fileio import InputLimitError, decode_text, one_line, parse_document, quote
from analyzer.report import ReportFormatError
from registry.store.db import RegistryError
from registry.pricing.points import DEFAULT_SUMMARY_HARDWARE as DEFAULT_HARDWARE

log = logging.getLogger("dsocr_registry.service")
access_log = logging.getLogger("dsocr_registry.service.access")

MAX_BODY_BYTES = 64 * 1024  # a run request is ~200 bytes and a large scenario a few KiB
MAX_BODY_DEPTH = 16  # nesting of a request body (a scenario is 4 deep)
MAX_SCENARIO_ANALYSES = 32  # workloads a scenario request may analyze (the rest must be stored already)
DEFAULT_ANALYSIS_TIMEOUT_S = 600.0
DEFAULT_SIMULATION_TIMEOUT_S = 120.0  # a serving request's simulations together
DEFAULT_SIMULATION_MEMORY_BYTES = 4 * 1024 ** 3  # address space of a simulation worker
DEFAULT_HEADER_TIMEOUT_S = 10.0  # from a connection's first byte (or its last response) to its request's headers
DEFAULT_BODY_TIMEOUT_S = 30.0  # to read a whole request body
DEFAULT_MAX_CONNECTIONS = 1000  # open connections; past it requests are answered 503 (uvicorn's limit_concurrency)
WORKER_START_ALLOWANCE_S = 30.0  # a worker's start-up (imports) under a timer of its own
WORKER_NICENESS = 10  # added to analysis and simulation workers' niceness
MAX_HEADER_BYTES = 16 * 1024  # a request's head (h11 refuses a larger one with 400)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
DEFAULT_SHUTDOWN_GRACE_S = 30.0
HEARTBEAT_S = 5.0
STOPPED = "failed: the service stopped before the analysis ended"
SUMMARY_CACHE_TTL_S = 5.0
SUMMARY_CACHE_ENTRIES = 4096
BASE = "/analytic/deepseek-ocr"


@attrs.frozen
class ServiceConfig:
    db: str | None = None  # as --db: a DuckDB file, a postgresql:// URL, or None (env or ./dsocr-registry.duckdb)
    token: str | None = None  # write endpoints need it as a bearer token when set
    analysis_timeout_s: float = DEFAULT_ANALYSIS_TIMEOUT_S
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    analysis_workers: int = 1
    max_body_bytes: int = MAX_BODY_BYTES
    simulation_timeout_s: float = DEFAULT_SIMULATION_TIMEOUT_S
    simulation_memory_bytes: int | None = DEFAULT_SIMULATION_MEMORY_BYTES  # None: no limit
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Host headers answered: the loopback names, `bind_host` and these (names or addresses, any case), at `port`
    # (None: any port; `serve` sets the port it listens on)
    bind_host: str = "127.0.0.1"
    port: int | None = None
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # none: no CORS headers at all


class ApiError(Exception):
    """An answer other than success: HTTP status and one line."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class AnalysisTimeout(RegistryError):
    http_status = 504


class WorkLimitError(RegistryError):
    """Work a request may not have: more than its limits allow."""

    http_status = 422


class WorkerStoppedError(RegistryError):
    """A worker process ended under its work (killed, or out of memory): the service's, not the request's."""

    http_status = 503


def error_status(exc: BaseException) -> int:
    """The HTTP status an error of the library carries (RegistryError.http_status: the request's fault, 400, 404 or
    422, or the service's, 503 when the database cannot be reached or its connection was lost, 504 past a time
    limit); the analyzer's input and report-format errors carry none and are the request's (400)."""
    return getattr(exc, "http_status", 400)


def contract_text(name: str) -> str:
    """A file of contracts/ (shipped in the package as registry.contracts)."""
    return importlib.resources.files("registry.contracts").joinpath(name).read_text("utf-8")


# -- JSON ---------------------------------------------------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _jsonable(value.item())
    return value


def json_response(payload, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    body = json.dumps(_jsonable(payload), allow_nan=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: dict | None = None):
    return json_response({"error": " ".join(str(message).split())}, status, headers)


def _depth(value, limit: int, depth: int = 1) -> int:
    if depth > limit:
        return depth
    if isinstance(value, dict):
        return max((_depth(v, limit, depth + 1) for v in value.values()), default=depth)
    if isinstance(value, list):
        return max((_depth(v, limit, depth + 1) for v in value), default=depth)
    return depth


_JSON_MEDIA = re.compile(r"application/json\s*(;\s*charset\s*=\s*\"?utf-8\"?\s*)?", re.IGNORECASE)


def check_json_content_type(request) -> None:
    """415 unless the body is declared JSON (UTF-8): a browser sends a cross-site POST without a preflight only as
    text/plain, a form or multipart, so none of those reaches a handler."""
    if not _JSON_MEDIA.fullmatch(request.headers.get("content-type", "").strip()):
        raise ApiError(415, "request bodies are JSON: send Content-Type: application/json")


async def read_json_body(request, limit_bytes: int, timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> Any:
    """The request's JSON body (Content-Type: application/json, else 415), refused (413) past `limit_bytes`
    before it is all read, (408) when it is not all read within `timeout_s`, and (400) when it is not one JSON
    value nested at most MAX_BODY_DEPTH deep. Parsed on a thread: the event loop only reads."""
    from starlette.concurrency import run_in_threadpool

    check_json_content_type(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise ApiError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit_bytes} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit_bytes:
                raise ApiError(413, f"request body exceeds the limit of {limit_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s",
                       {"Connection": "close"}) from None
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object")
    return await run_in_threadpool(parse_json_body, raw)


def parse_json_body(raw: bytes) -> dict:
    """A request body's bytes as one JSON object (400 with one line otherwise)."""
    # the same limits as a report or scenario file: UTF-8, duplicate keys, finite numbers, 64-bit integers,
    # storable strings
    try:
        body = parse_document(decode_text(raw), "json")
    except InputLimitError as exc:
        raise ApiError(400, f"request body: {one_line(str(exc))}") from None
    if _depth(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise ApiError(400, f"request body nests deeper than {MAX_BODY_DEPTH} levels")
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


# -- the worker process -----------------------------------------------------------------------------------------

class WorkerTimeLimit(Exception):
    """In a worker: its task ran past the time it was given (the worker stays usable)."""


def _expire(signum, frame):
    raise WorkerTimeLimit()


def _analyze_in_worker(kind: str, payload, time_limit_s: float | None = None):
    """Runs in a worker process: the analysis of a run request, of one workload under one execution, or the
    simulations of a serving plan (its rows); within `time_limit_s` of its own start when given (a timer in the
    worker: its start-up and the queue before it do not count)."""
    if time_limit_s is None:
        return _work(kind, payload)
    import signal

    signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    try:
        return _work(kind, payload)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _work(kind: str, payload):
    if kind == "request":
        from registry.interfaces.contract import analyze_request

        return analyze_request(payload)
    if kind == "simulate":
        from registry.serving.scenario import simulate_plan

        return simulate_plan(payload)[0]
    if kind == "plan":
        from registry.serving.plan import run_tasks

        return run_tasks(payload)
    from analyzer.analysis import analyze

    workload, execution = payload
    return analyze(workload, execution)


def _exit_with_parent(parent_pid: int) -> None:
    """In a worker: leave as soon as the service process is gone (killed), rather than linger as an orphan."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _init_worker(parent_pid: int, memory_bytes: int | None) -> None:
    """A worker's start: it leaves with its parent, and its address space is capped at `memory_bytes` (a larger
    allocation raises MemoryError in the worker rather than taking the machine's memory)."""
    _exit_with_parent(parent_pid)
    os.nice(WORKER_NICENESS)  # the service process, answering requests, comes first on a busy machine
    if memory_bytes is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


class AnalysisPool:
    """Worker processes for analyses (or simulations: `what`), each waited for at most `timeout_s` (then the
    workers are replaced), with at most `memory_bytes` of address space each when given."""

    def __init__(self, workers: int, timeout_s: float, memory_bytes: int | None = None, what: str = "analysis",
                 timeout_option: str = "", timer_in_worker: bool = False) -> None:
        self.workers, self.timeout_s, self.memory_bytes, self.what = workers, timeout_s, memory_bytes, what
        self.timeout_option = timeout_option
        # timer_in_worker: the limit counts from the task's start in the worker, which ends it there; this process
        # kills the workers only if it has not ended WORKER_START_ALLOWANCE_S later (stuck, or a slow start)
        self.timer_in_worker = timer_in_worker
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self.closed = False
        self.busy = 0  # analyses submitted and not finished

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self.closed:
                raise ApiError(503, "the service is stopping")
            if self._executor is None:
                # spawn: a fork of a process that runs DuckDB and uvicorn threads is not safe
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                    initargs=(os.getpid(), self.memory_bytes))
            return self._executor

    def run(self, kind: str, payload, heartbeat=None):
        """The analysis' result; AnalysisTimeout past the limit; `heartbeat()` every HEARTBEAT_S while waiting."""
        timer_s = self.timeout_s if self.timer_in_worker else None
        future = self._pool().submit(_analyze_in_worker, kind, payload, timer_s)
        with self._lock:
            self.busy += 1
        future.add_done_callback(lambda _: self._done())
        deadline = time.monotonic() + self.timeout_s + (WORKER_START_ALLOWANCE_S if timer_s else 0.0)
        while True:
            try:
                return future.result(timeout=max(0.0, min(HEARTBEAT_S, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                if time.monotonic() >= deadline:
                    self.restart()
                    raise AnalysisTimeout(f"{self.what} timed out after {self.timeout_s:g} s"
                                          f"{self.timeout_option}") from None
                if heartbeat is not None:
                    heartbeat()
            except WorkerTimeLimit:
                raise AnalysisTimeout(f"{self.what} timed out after {self.timeout_s:g} s{self.timeout_option}") \
                    from None
            except MemoryError:
                self.restart()  # a worker that ran out of memory is not trusted with the next request
                raise WorkLimitError(f"the {self.what} needs more memory than its limit of "
                                     f"{(self.memory_bytes or 0) / 2 ** 20:,.0f} MiB") from None
            except concurrent.futures.process.BrokenProcessPool:
                self.restart()
                raise WorkerStoppedError(f"the {self.what} worker stopped (killed, or out of memory)") from None

    def _done(self) -> None:
        with self._lock:
            self.busy -= 1

    def restart(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            _kill_workers(executor)

    def close(self) -> None:
        """No more analyses: idle workers leave cleanly; an analysis still going is ended."""
        with self._lock:
            self.closed = True
            executor, busy = self._executor, self.busy
            if not busy:
                self._executor = None
        if busy:
            self.restart()
        elif executor is not None:
            executor.shutdown(wait=True)


def _kill_workers(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    kill = getattr(executor, "kill_workers", None)  # Python 3.14
    if kill is not None:
        kill()
    else:
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


# -- the service ------------------------------------------------------------------------------------------------

class Service:
    """The registry, the writer thread, the analysis workers and the runs this process owns."""

    def __init__(self, config: ServiceConfig) -> None:
        from registry.store.db import Registry
        from registry.store.runs import new_owner

        self.config = config
        self.registry = Registry(config.db)
        self.owner = new_owner()
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry-writer")
        self.jobs = concurrent.futures.ThreadPoolExecutor(max(1, config.analysis_workers),
                                                          thread_name_prefix="analysis-run")
        self.pool = AnalysisPool(max(1, config.analysis_workers), config.analysis_timeout_s)
        self.simulations = AnalysisPool(max(1, config.analysis_workers), config.simulation_timeout_s,
                                        config.simulation_memory_bytes, "simulation", " (--simulation-timeout)",
                                        timer_in_worker=True)
        self.in_flight: dict[str, concurrent.futures.Future] = {}
        self.stopping = threading.Event()
        self._summaries: dict[tuple, tuple[float, bytes]] = {}
        self._refreshing: set[tuple] = set()
        self.refresher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="summary-refresh")
        self._anchor = None
        # A summary depends on the report's rows (immutable), the GPU and runtime catalogs and the measurements.
        # On DuckDB only this process can write them, and every write here clears the cache; on PostgreSQL other
        # processes may, so a cached summary lives SUMMARY_CACHE_TTL_S there.
        from registry.store.db import is_duckdb
        self.summary_ttl_s = math.inf if is_duckdb(self.registry.url) else SUMMARY_CACHE_TTL_S

    # The writer: every write of this process, one at a time.
    def write(self, func, *args):
        return self.writer.submit(func, *args).result()

    async def write_async(self, func, *args):
        return await asyncio.wrap_future(self.writer.submit(func, *args))

    def start(self) -> list[tuple[str, str]]:
        """Open the registry (a new DuckDB file is created at the current revision) and settle runs left active by
        a process that stopped: on DuckDB every active run (no other process can hold the file)."""
        from registry.store.db import is_duckdb
        from registry.store.runs import interrupted_runs, settle_interrupted

        self.write(self.registry.ensure_schema)
        if is_duckdb(self.registry.url):
            # held for the service's life: DuckDB keeps the file open (and locked to other processes) while any
            # connection of this process is open, so no other process writes behind the service's back
            self._anchor = self.registry.engine.connect()

        def settle():
            with self.registry.begin() as conn:
                runs = interrupted_runs(conn, every_active=is_duckdb(self.registry.url))
            return settle_interrupted(self.registry, runs)

        settled = self.write(settle)
        for run_id, status in settled:
            log.warning(json.dumps({"event": "run interrupted by a stop", "run_id": run_id, "status": status}))
        return settled

    def stop(self) -> None:
        """Finish in-flight runs within the grace period, then fail the rest cleanly (nothing half-stored: a
        report is written in one transaction, and a run whose report was stored reads as done)."""
        from registry.store.runs import interrupted_runs, settle_interrupted

        self.stopping.set()
        pending = [f for f in list(self.in_flight.values()) if not f.done()]
        if pending:
            log.info(json.dumps({"event": "waiting for runs", "runs": len(pending),
                                 "grace_s": self.config.shutdown_grace_s}))
            concurrent.futures.wait(pending, timeout=self.config.shutdown_grace_s)
        cut_off = [run_id for run_id, future in list(self.in_flight.items()) if not future.done()]
        self.pool.close()  # an analysis still going ends here; its run fails
        self.simulations.close()
        self.jobs.shutdown(wait=True, cancel_futures=True)
        self.refresher.shutdown(wait=True, cancel_futures=True)

        def settle():
            with self.registry.begin() as conn:
                runs = interrupted_runs(conn, owner=self.owner)
            return settle_interrupted(self.registry, runs, STOPPED)

        try:
            settled = self.write(settle)
            log.info(json.dumps({"event": "stopped", "runs_cut_off": sorted(set(cut_off) | {r for r, _ in settled})}))
        finally:
            self.writer.shutdown(wait=True)
            if self._anchor is not None:
                self._anchor.close()
            self.registry.dispose()

    # -- runs -------------------------------------------------------------------------------------------------
    def accept(self, request) -> tuple[dict, bool, bool]:
        """(run, created, reused) for a run request (called in the writer)."""
        from registry.interfaces.contract import plain, request_key, stored_report_id
        from registry.store.runs import accept_run

        reused = None if request.force_rebuild else stored_report_id(self.registry, request)
        with self.registry.begin() as conn:
            run, created = accept_run(conn, request_key(request), plain(request), self.owner, reused)
        return run, created, reused is not None

    def submit(self, run_id: str, request) -> None:
        future = self.jobs.submit(self._execute, run_id, request)
        self.in_flight[run_id] = future
        future.add_done_callback(lambda _: self.in_flight.pop(run_id, None))

    def _execute(self, run_id: str, request) -> None:
        from registry.store import runs
        from registry.interfaces.contract import store_request_report

        def in_tx(func, *args):
            def unit():
                with self.registry.begin() as conn:
                    func(conn, *args)
            self.write(unit)

        if self.stopping.is_set():
            return  # settled by stop()
        try:
            in_tx(runs.start, run_id)
            report = self.pool.run("request", request, heartbeat=lambda: in_tx(runs.touch, [run_id]))

            def store():
                if self.stopping.is_set() and self.pool.closed:
                    raise RegistryError("the service stopped before the analysis was stored")
                store_request_report(self.registry, request, report)  # one transaction
                self._summaries.clear()
                with self.registry.begin() as conn:
                    runs.finish(conn, run_id, "done", report_id=report.report_id)

            self.write(store)
            log.info(json.dumps({"event": "run done", "run_id": run_id, "report_id": report.report_id}))
        except BaseException as exc:  # noqa: BLE001 - any failure is the run's, stated in one line
            if self.stopping.is_set() and self.pool.closed:
                exc = RegistryError(STOPPED)
            message = str(exc) if isinstance(exc, (RegistryError, AnalyzerInputError, ApiError)) else \
                f"analysis failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if not isinstance(exc, (RegistryError, AnalyzerInputError, ApiError)):
                log.exception("run %s failed", run_id)
            with contextlib.suppress(Exception):
                in_tx(lambda conn: runs.finish(conn, run_id, "failed", error=" ".join(message.split())))

    def analyze_workload(self, workload, execution=DEFAULT_EXECUTION.value):
        """Scenarios' analyses: in the worker process, under the time limit."""
        return self.pool.run("workload", (workload, str(getattr(execution, "value", execution))))

    def prepare_analyses(self, pairs: list[tuple]) -> "PreparedAnalyses":
        """Analyze, in the worker processes and outside the writer, each (workload, execution) of `pairs` with no
        stored report: the writer then only stores them (a thread waits here, not the writer)."""
        from analyzer.workload import workload_record
        from registry.store.ingest import workload_hash
        from registry.store.analyzed import find_report

        reports: dict[tuple[str, str], Any] = {}
        with self.registry.begin() as conn:
            missing = [(w, str(getattr(ex, "value", ex))) for w, ex in pairs if find_report(conn, w, ex) is None]
        for workload, execution in missing:
            key = (workload_hash(workload_record(workload)), execution)
            if key not in reports:
                reports[key] = self.analyze_workload(workload, execution)
        return PreparedAnalyses(reports)

    async def store_prepared(self, prepared: "PreparedAnalyses", label: str) -> None:
        """The reports analyzed for a request, one writer task each: a run accepted meanwhile waits for one
        report's transaction at most, not for the request's. An error is the request's answer with its own status
        (a refused row 400, a lost database 503)."""
        from registry.store.ingest import write_report

        for report in prepared.reports.values():
            await self.write_async(lambda report=report: write_report(self.registry, report, label, keep_open=True))

    # -- reads ------------------------------------------------------------------------------------------------
    def cached_summary(self, key: tuple) -> bytes | None:
        """The JSON of a summary priced before (answered on the event loop: no thread, no query). Past its time to
        live it is still answered while one background pricing refreshes it, so that requests never queue
        behind a pricing of a summary they have."""
        cached = self._summaries.get(key)
        if cached is None:
            return None
        if time.monotonic() >= cached[0] and key not in self._refreshing:
            self._refreshing.add(key)

            def refresh():
                try:
                    self.summary(*key, use_cache=False)
                except Exception:  # noqa: BLE001 - the next request that misses the cache gets the error
                    self._summaries.pop(key, None)
                finally:
                    self._refreshing.discard(key)

            self.refresher.submit(refresh)
        return cached[1]

    def summary(self, report_id: str, hardware: str, runtime: str | None, top: int, use_cache: bool = True) -> bytes:
        from registry.interfaces.contract import plain, summarize

        key = (report_id, hardware, runtime, top)
        cached = self.cached_summary(key) if use_cache else None
        if cached is not None:
            return cached
        result = json.dumps(_jsonable(plain(summarize(self.registry, report_id, hardware, runtime, top=top))),
                            allow_nan=False, separators=(",", ":")).encode()
        if len(self._summaries) > SUMMARY_CACHE_ENTRIES:
            self._summaries.clear()
        self._summaries[key] = (time.monotonic() + self.summary_ttl_s, result)
        return result


class PreparedAnalyses:
    """Reports analyzed before the writer was taken, handed to the library as its `analyze`."""

    def __init__(self, reports: dict) -> None:
        self.reports = reports

    def analyze(self, workload, execution=DEFAULT_EXECUTION.value):
        from analyzer.workload import workload_record
        from registry.store.ingest import workload_hash

        report = self.reports.get((workload_hash(workload_record(workload)), str(getattr(execution, "value",
                                                                                          execution))))
        if report is None:  # the writer never waits on an analysis
            raise WorkerStoppedError("a workload was not analyzed before it was to be stored: send the request again")
        return report


def check_whatif(body: dict):
    """The what-if scenario of a request body, checked and its sweep bounded before anything is expanded."""
    from registry.pricing.whatif import expand_workloads, scenario_from_mapping, workload_axes_product

    scenario = scenario_from_mapping(body, "scenario", allow_profile_paths=False)
    if "serving" in scenario.data:
        raise ApiError(400, "scenario: a serving block is simulated by POST /serving/scenarios")
    workloads = workload_axes_product(scenario)
    if workloads > MAX_SCENARIO_ANALYSES:
        raise ApiError(422, f"scenario: sweeps {workloads:,} workloads; at most {MAX_SCENARIO_ANALYSES} per request")
    expand_workloads(scenario)  # every workload checked: refused before anything is written
    return scenario


def check_serving(body: dict):
    """(scenario, serving spec) of a request body, checked and bounded before anything is simulated."""
    from registry.serving.scenario import serving_spec
    from registry.pricing.whatif import scenario_from_mapping

    scenario = scenario_from_mapping(body, "scenario", allow_profile_paths=False)
    sweep = scenario.data["sweep"]
    simulations = len(sweep["hardware"]) * len(sweep.get("runtime", [None]))
    if simulations > MAX_SCENARIO_ANALYSES:  # each GPU x runtime is analyzed (probes) and simulated
        raise ApiError(422, f"scenario: sweeps {simulations:,} GPU x runtime pairs; at most {MAX_SCENARIO_ANALYSES} "
                            "per request")
    spec = serving_spec(scenario)
    if spec is None:
        raise ApiError(400, "scenario: no serving block: POST /whatif/scenarios prices a scenario without one")
    simulated_pages = spec.count * len(spec.arrivals) * simulations
    if simulated_pages > MAX_SIMULATED_PAGES:
        raise ApiError(422, f"scenario: simulates {simulated_pages} pages (count x rates x GPUs x runtimes); "
                            f"at most {MAX_SIMULATED_PAGES} per request")
    return scenario, spec


MAX_PLAN_CANDIDATES = 64  # configurations one request may search (each a dozen simulations)


def check_plan(body: dict):
    """(scenario, plan spec) of a request body: a plan scenario, checked and bounded before anything is searched."""
    import itertools

    from registry.pricing.whatif import precisions, scenario_from_mapping
    from registry.store.plans import plan_spec

    scenario = scenario_from_mapping(body, "plan", allow_profile_paths=False)
    spec = plan_spec(scenario)
    sweep = scenario.data["sweep"]
    count = len(list(itertools.product(sweep["hardware"], sweep.get("runtime") or [None], precisions(scenario),
                                       spec.engines, spec.gpu_memory_utilization, spec.max_num_seqs,
                                       spec.max_num_batched_tokens)))
    if count > MAX_PLAN_CANDIDATES:
        raise ApiError(422, f"plan: searches {count:,} configurations; at most {MAX_PLAN_CANDIDATES} per request "
                            "(dsocr-registry plan searches any number)")
    pages = (scenario.data.get("serving") or {}).get("pages") or {}
    if isinstance(pages.get("count"), int) and pages["count"] > MAX_SIMULATED_PAGES:
        raise ApiError(422, f"plan: serving.pages.count {pages['count']}; at most {MAX_SIMULATED_PAGES} per request")
    return scenario, spec


def parse_run_request(body: dict):
    """The contract's request from a JSON body, checked by the contract's own validators."""
    from analyzer.report import make_converter
    from registry.interfaces.contract import DeepSeekOCRAnalyticRequest, register_deepseek_ocr_hooks

    converter = register_deepseek_ocr_hooks(make_converter())
    missing = [f.name for f in attrs.fields(DeepSeekOCRAnalyticRequest)
               if f.default is attrs.NOTHING and f.name not in body]
    if missing:
        raise ApiError(400, f"request: missing field(s): {', '.join(missing)}")
    try:
        return converter.structure(body, DeepSeekOCRAnalyticRequest)
    except (AnalyzerInputError, TypeError, ValueError) as exc:
        message = str(exc.args[0]) if exc.args else type(exc).__name__  # attrs' validators: (message, attribute, ...)
        raise ApiError(400, f"request: {message.splitlines()[0]}") from None
    except Exception as exc:  # cattrs' grouped errors
        raise ApiError(400, f"bad request: {str(exc).splitlines()[0]}") from None


# -- the ASGI app -----------------------------------------------------------------------------------------------

def create_app(config: ServiceConfig | None = None):
    """The Starlette app of the service (uvicorn runs it; tests call it in process)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    config = config or ServiceConfig()
    holder: dict[str, Service] = {}

    def service() -> Service:
        return holder["service"]

    def require_token(request) -> None:
        if config.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), config.token.encode()):
            raise ApiError(401, "this endpoint needs Authorization: Bearer <token>",
                           {"WWW-Authenticate": 'Bearer realm="dsocr-registry"'})

    def status_url(run_id: str) -> str:
        return f"{BASE}/runs/{run_id}"

    async def run(request):
        require_token(request)
        body = await read_json_body(request, config.max_body_bytes, config.body_timeout_s)
        run_request = parse_run_request(body)
        svc = service()
        if svc.stopping.is_set():
            raise ApiError(503, "the service is stopping; retry on another instance or after the restart")
        run_row, created, reused = await svc.write_async(svc.accept, run_request)
        if created and not reused:
            svc.submit(run_row["run_id"], run_request)
        status = "reused" if reused else run_row["status"]
        return json_response({"run_id": run_row["run_id"], "report_id": run_row["report_id"], "status": status,
                              "status_url": status_url(run_row["run_id"])}, 202,
                             {"Location": status_url(run_row["run_id"])})

    async def run_status(request):
        from registry.store.runs import describe_run, get_run

        run_id = request.path_params["run_id"]

        def read():
            with service().registry.begin() as conn:
                return get_run(conn, run_id)

        row = await run_in_threadpool(read)
        if row is None:
            raise ApiError(404, f"no run {run_id!r}")
        return json_response(describe_run(row))

    async def summary(request):
        params = request.query_params
        hardware = params.get("hardware") or DEFAULT_HARDWARE
        runtime = params.get("runtime") or None
        top_text = params.get("top", "5")
        if not re.fullmatch(r"[0-9]{1,3}", top_text) or not 1 <= int(top_text) <= 100:  # ASCII digits only
            raise ApiError(400, f"top must be an integer from 1 to 100, got {quote(top_text)}")
        key = (request.path_params["report_id"], hardware, runtime, int(top_text))
        body = service().cached_summary(key) or await run_in_threadpool(service().summary, *key)
        return Response(body, media_type="application/json")

    async def model(request):
        from analyzer.report import report_to_dict
        from registry.store.stored import load_stored_report

        report = await run_in_threadpool(load_stored_report, service().registry, request.path_params["report_id"])
        return json_response(report_to_dict(report))

    async def checked_and_prepared(request, check, analyses_of, kind: str):
        """The start every scenario POST shares: the token, the JSON body checked on a thread (check gives
        (scenario, spec)), the workloads it needs analyzed in the worker processes and stored by the writer.
        Gives (service, scenario, spec, prepared analyses)."""
        require_token(request)
        body = await read_json_body(request, config.max_body_bytes, config.body_timeout_s)
        svc = service()
        scenario, spec = await run_in_threadpool(check, body)
        prepared = await run_in_threadpool(lambda: svc.prepare_analyses(analyses_of(svc.registry, scenario, spec)))
        await svc.store_prepared(prepared, f"{kind}:{scenario.name}")
        return svc, scenario, spec, prepared

    async def whatif(request):
        from registry.pricing.whatif import price_scenario, scenario_analyses

        svc, scenario, _, prepared = await checked_and_prepared(
            request, lambda body: (check_whatif(body), None), lambda registry, s, _: scenario_analyses(registry, s),
            "whatif")

        def price():
            priced = price_scenario(svc.registry, scenario, analyze=prepared.analyze)
            svc._summaries.clear()
            return priced.scenario_id, priced.points

        scenario_id, points = await svc.write_async(price)
        return json_response({"scenario_id": scenario_id, "name": scenario.name, "points": points})

    async def serving(request):
        from registry.serving.scenario import probe_analyses, read_serving, record_serving, serving_plan

        svc, scenario, spec, prepared = await checked_and_prepared(request, check_serving, probe_analyses, "serving")
        # the writer records the probe points, a thread reads the step costs, a worker process simulates, the
        # writer records the serving points
        plan = await run_in_threadpool(serving_plan, svc.registry, scenario, spec, False, None, None,
                                       prepared.analyze, svc.write)
        rows = await run_in_threadpool(svc.simulations.run, "simulate", plan)
        scenario_id = await svc.write_async(lambda: record_serving(svc.registry, scenario, spec, rows, {}))
        points = await run_in_threadpool(read_serving, svc.registry, scenario_id)
        return json_response({"scenario_id": scenario_id, "name": scenario.name, "serving": points})

    async def plans(request):
        from registry.store.plans import answer, begin_plan, candidates, plan_analyses, read_plan, store_results

        svc, scenario, spec, prepared = await checked_and_prepared(request, check_plan, plan_analyses, "plan")
        # the writer records the probes and the plan's rows; a worker process searches, under the simulation limits
        cands = await run_in_threadpool(candidates, svc.registry, scenario, spec, False, prepared.analyze,
                                        svc.write)
        plan_id, stored = await svc.write_async(begin_plan, svc.registry, scenario, spec, cands)
        todo = [c.task for c in cands if c.task is not None and c.index not in stored]
        if todo:
            results = await run_in_threadpool(svc.simulations.run, "plan", todo)
            await svc.write_async(store_results, svc.registry, plan_id, cands, results, spec)
        rows = await run_in_threadpool(read_plan, svc.registry, plan_id)
        return json_response({"plan_id": plan_id, "name": scenario.name, **answer(rows), "candidates": rows})

    async def healthz(request):
        from registry.store.db import describe, schema_revisions

        svc = service()
        try:
            current, head = await run_in_threadpool(schema_revisions, svc.registry)
        except RegistryError as exc:
            return json_response({"status": "unavailable", "database": describe(svc.registry.url),
                                  "error": str(exc)}, 503)
        ok = current == head and not svc.stopping.is_set()
        return json_response({"status": "ok" if ok else "unavailable", "database": describe(svc.registry.url),
                              "schema_revision": current, "code_revision": head,
                              "runs_in_flight": len(svc.in_flight)}, 200 if ok else 503)

    async def openapi_yaml(request):
        return Response(contract_text("openapi.yaml"), media_type="application/yaml")

    async def report_schema(request):
        return Response(contract_text("analytic-model-report.schema.json"), media_type="application/json")

    async def docs(request):
        return HTMLResponse(DOCS_HTML)

    async def on_api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    async def on_http_error(request, exc: HTTPException):
        message = {404: f"no endpoint {request.url.path}", 405: f"{request.method} is not allowed on "
                   f"{request.url.path}"}.get(exc.status_code, exc.detail)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    async def on_user_error(request, exc: Exception):
        return error_response(error_status(exc), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    async def on_unexpected(request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (logged by the service)")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        svc = Service(config)
        await asyncio.get_running_loop().run_in_executor(None, svc.start)
        holder["service"] = svc
        app.state.service = svc
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, svc.stop)

    routes = [
        Route(f"{BASE}/run", run, methods=["POST"]),
        Route(f"{BASE}/runs/{{run_id}}", run_status, methods=["GET"]),
        Route(f"{BASE}/{{report_id}}/summary", summary, methods=["GET"]),
        Route(f"{BASE}/{{report_id}}/model", model, methods=["GET"]),
        Route("/whatif/scenarios", whatif, methods=["POST"]),
        Route("/serving/scenarios", serving, methods=["POST"]),
        Route("/plans", plans, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.yaml", openapi_yaml, methods=["GET"]),
        Route("/analytic-model-report.schema.json", report_schema, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    handlers = {ApiError: on_api_error, HTTPException: on_http_error,
                AnalyzerInputError: on_user_error, ReportFormatError: on_user_error, RegistryError: on_user_error,
                Exception: on_unexpected}
    middleware = []
    if config.cors_origins:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"]))
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan, middleware=middleware)
    return AccessLog(HostCheck(app, config))


MAX_SIMULATED_PAGES = 20_000


def split_host(value: str) -> tuple[str, int | None]:
    """(name, port) of a Host header: `name`, `name:port`, `[v6]` or `[v6]:port`; the name lower-cased."""
    value = value.strip().lower()
    name, port = value, None
    if value.startswith("["):
        end = value.find("]")
        name, rest = (value[:end + 1], value[end + 1:]) if end > 0 else (value, "")
        if rest.startswith(":"):
            port = rest[1:]
        elif rest:
            return value, -1
    elif value.count(":") == 1:
        name, port = value.split(":")
    if port is None:
        return name, None
    return name, int(port) if re.fullmatch(r"[0-9]{1,5}", port) else -1


def allowed_host_names(config: ServiceConfig) -> frozenset[str]:
    import ipaddress

    names = set(LOOPBACK_HOSTS) | {n.strip().lower() for n in config.allowed_hosts}
    bind = config.bind_host.strip().lower()
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        names.add(bind)
    else:
        if not address.is_unspecified:  # 0.0.0.0 / :: is no name a client sends
            names.add(f"[{address}]" if address.version == 6 else str(address))
    return frozenset(names)


class HostCheck:
    """Requests whose Host header names neither the bound address nor an --allowed-host are answered 421: a web
    page whose name was rebound to 127.0.0.1 sends its own name as Host, and gets nothing."""

    def __init__(self, app, config: ServiceConfig) -> None:
        self.app, self.port = app, config.port
        self.names = allowed_host_names(config)

    def __getattr__(self, name):
        return getattr(self.app, name)

    def allowed(self, host: str) -> bool:
        name, port = split_host(host)
        if name not in self.names:
            return False
        return self.port is None or port is None or port == self.port  # a name alone is no other service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            hosts = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"]
            if len(hosts) != 1 or not self.allowed(hosts[0]):
                message = ("the request has no Host header" if not hosts else "the request has several Host headers"
                           if len(hosts) > 1 else f"Host {quote(hosts[0], 80)} is not served here: this service "
                           "answers its bound address and the names given by --allowed-host")
                response = error_response(421 if len(hosts) == 1 else 400, message)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class AccessLog:
    """One JSON line per request: method, path, status, duration, client."""

    def __init__(self, app) -> None:
        self.app = app

    def __getattr__(self, name):
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if status["code"] != 500:
                raise
            # Starlette re-raises an unhandled error after its 500 answer went out; it is logged already
        finally:
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(json.dumps({
                    "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                    "method": scope["method"], "path": scope["path"], "query": scope.get("query_string", b"").decode(
                        "latin-1")[:200], "status": status["code"],
                    "duration_ms": round(1000 * (time.perf_counter() - started), 3),
                    "client": f"{client[0]}:{client[1]}" if client else None}))


def configure_logging() -> None:
    """Log lines to stderr as they come: access lines are JSON already."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("dsocr_registry")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>dsocr-registry API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.yaml", dom_id: "#ui"});</script>
<noscript>The contract: <a href="/openapi.yaml">/openapi.yaml</a></noscript>
</body></html>
"""


# -- running it ---------------------------------------------------------------------------------------------------

ENV_CONFIG = "DSOCR_SERVICE_CONFIG"


def app_from_env():
    """The app of one uvicorn worker process (`serve --workers N`): its config comes from the parent as JSON."""

    configure_logging()
    return create_app(ServiceConfig(**json.loads(os.environ[ENV_CONFIG])))


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with what it lacks against slow clients: a connection gets `header_timeout_s` from
    its first byte (or its last answer) to send a request's whole head, else it is answered 408 and closed; and
    connections still waiting for their heads are at most `max_waiting`, the oldest closed first, so stalled
    connections cannot take every file descriptor (uvicorn's own limit answers 503 only once a head is in)."""

    def __init__(self, *args, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
                 max_waiting: int = DEFAULT_MAX_CONNECTIONS // 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.max_waiting = header_timeout_s, max_waiting
        self.header_timer: asyncio.TimerHandle | None = None
        waiting = getattr(self.server_state, "awaiting_headers", None)
        if waiting is None:
            waiting = self.server_state.awaiting_headers = collections.OrderedDict()  # per server
        self.waiting = waiting

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.wait_for_head()

    def wait_for_head(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_timeout_s, self.head_too_late)
            self.waiting[self] = None
            while len(self.waiting) > self.max_waiting:
                oldest = next(iter(self.waiting))
                oldest.close_waiting()

    def head_arrived(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.waiting.pop(self, None)

    def head_too_late(self) -> None:
        self.header_timer = None
        self.close_waiting(f"the request's headers did not arrive within {self.header_timeout_s:g} s")

    def close_waiting(self, message: str | None = None) -> None:
        self.head_arrived()
        if not self.transport.is_closing():
            if message is not None:
                body = json.dumps({"error": message}).encode()
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.wait_for_head()  # a new request's bytes (a kept-alive connection's next request)
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self.head_arrived()

    def connection_lost(self, exc) -> None:
        self.head_arrived()
        super().connection_lost(exc)


def uvicorn_options(config: ServiceConfig) -> dict:
    """uvicorn's limits: connections (503 past them), the head's size, keep-alive, and the head's time limit."""
    import functools

    return dict(http=functools.partial(HeaderTimeoutProtocol, header_timeout_s=config.header_timeout_s,
                                       max_waiting=max(1, config.max_connections // 2)),
                limit_concurrency=config.max_connections, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                timeout_keep_alive=5)


def serve(config: ServiceConfig, host: str, port: int, workers: int) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM (then a graceful stop)."""
    import uvicorn

    from registry.store.db import describe, is_duckdb, resolve_url

    if not is_loopback(host) and not config.token:
        raise RegistryError(f"--host {host} listens beyond loopback: set a token for the write endpoints "
                            "(--token-file FILE or DSOCR_SERVICE_TOKEN)")
    url = resolve_url(config.db)
    if workers > 1 and is_duckdb(url):
        raise RegistryError(f"--workers {workers}: a DuckDB file is opened by one process; use --workers 1, or a "
                            "postgresql:// registry for several workers")
    config = attrs.evolve(config, bind_host=host, port=port)
    print(f"dsocr-registry serving {describe(url)} on http://{host}:{port} (docs /docs, contract /openapi.yaml)",
          file=sys.stderr, flush=True)
    if workers > 1:
        os.environ[ENV_CONFIG] = json.dumps(attrs.asdict(config))
        uvicorn.run("registry.interfaces.service:app_from_env", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_level="warning", timeout_graceful_shutdown=config.shutdown_grace_s,
                    **uvicorn_options(config))
        return
    configure_logging()
    uvicorn.run(create_app(config), host=host, port=port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=config.shutdown_grace_s, **uvicorn_options(config))
