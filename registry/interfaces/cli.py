"""The `dsocr-registry` command line: thin click commands over the library (analyzer, registry)."""

from __future__ import annotations

import pathlib
import sys
import time

import click

from analyzer import ranges, variants
from analyzer.execution import DEFAULT_EXECUTION, EXECUTION_SPECS
from analyzer.fileio import one_of
from analyzer.measure import KINDS as MEASURE_KINDS
from registry.defaults import DEFAULT_STORAGE_VERSION, DEFAULT_SUMMARY_HARDWARE
from registry.store.errors import RegistryError
from registry.interfaces.entry import run_and_exit
from registry.interfaces.output import Column, plural, render_document, render_rows, render_table

EXECUTIONS = tuple(EXECUTION_SPECS)


def _set_debug(ctx, param, value):
    if value:
        import os

        from registry.interfaces.entry import DEBUG_ENV

        os.environ[DEBUG_ENV] = "1"
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dsocr-registry", prog_name="dsocr-registry")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
              help="Print the traceback of an unexpected error (for a bug report); same as DSOCR_DEBUG=1.")
def cli() -> None:
    """Analytic cost model of DeepSeek-OCR and DeepSeek-OCR-2, stored in a SQL registry.

    \b
    capacity:     plan (GPUs, settings and money for a load within SLOs), whatif (scenario files: serving
                  points, or static batches), serve-sim (one serving point and its pages)
    profiles:     hardware (GPUs and prices), runtime, engine, host (list, show, add)
    analysis:     analyze (a workload's AnalyticModelReport, no GPU), cache (the trace cache)
    registry:     ingest, sql, schema, export, snapshot, db (upgrade, current, history, vacuum, grant-read)
    measurements: measure, compare, calibrate (GPU runs; --serving: serving benchmarks), measure-host
    reports:      summary, report, serve (the HTTP service of contracts/openapi.yaml)

    The registry is ./dsocr-registry.duckdb unless --db or DSOCR_REGISTRY_URL names another
    (a file path, or postgresql://host/dbname).
    """


# -- analyze ----------------------------------------------------------------------------------------------------

def workload_options(func):
    """Options that describe a workload; shared by the commands that analyze."""
    from analyzer import defaults

    page = f"{defaults.DEFAULT_PAGE_WIDTH_PX}x{defaults.DEFAULT_PAGE_HEIGHT_PX}"
    options = [
        click.option("--workload", "-w", "workload_profile", metavar="PROFILE",
                     help="Named workload profile (e.g. dsocr-standard-v1) or a YAML/JSON profile file; "
                          "the options below override its fields."),
        click.option("--variant", type=str, help=variants.variant_help()),
        click.option("--mode", type=str, help=variants.mode_help()),
        click.option("--page", type=str, metavar="WxH", help=f"Page size in pixels (default {page}, A4 at 200 dpi)."),
        click.option("--tiles", type=str, metavar="CxR",
                     help="Force a tile grid (columns x rows) instead of choosing it from the page."),
        click.option("--min-tiles", type=int, help="Smallest tile count the grid rule considers (default 2)."),
        click.option("--max-tiles", type=int, help=variants.max_tiles_help()),
        click.option("--prompt-tokens", type=int, help="Text tokens of the prompt besides the image "
                                                          f"(default {defaults.DEFAULT_PROMPT_TEXT_TOKENS})."),
        click.option("--new-tokens", type=int, help=f"Output tokens generated (default {defaults.DEFAULT_NEW_TOKENS})."),
        click.option("--batch", type=int, help=f"Pages per batch (default {defaults.DEFAULT_BATCH})."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_workload(workload_profile, variant, mode, page, tiles, min_tiles, max_tiles, prompt_tokens, new_tokens,
                   batch):
    from analyzer.workload import Workload, load_profile, parse_page, parse_tiles

    overrides = dict(variant=variant, mode=mode, min_tiles=min_tiles, max_tiles=max_tiles,
                     tile_grid=parse_tiles(tiles) if tiles is not None else None, prompt_text_tokens=prompt_tokens,
                     new_tokens=new_tokens, batch=batch)
    if page is not None:
        overrides["page_width_px"], overrides["page_height_px"] = parse_page(page)
    overrides = {k: v for k, v in overrides.items() if v is not None}  # left out: the profile's or Workload's
    if workload_profile:
        return load_profile(workload_profile, **overrides)
    if variant is None or mode is None:
        raise click.UsageError("give --workload PROFILE, or --variant and --mode")
    return Workload(**overrides)


@cli.command()
@workload_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True, path_type=pathlib.Path),
              help="Write the report here: .json, .yaml or .yml; - writes JSON to standard output (the summary then "
                   "goes to standard error).")
@click.option("--quiet", "-q", is_flag=True, help="Print no summary.")
@click.option("--execution", type=click.Choice(EXECUTIONS), default=DEFAULT_EXECUTION.value, show_default=True,
              help="What the runtime executes, as traced: "
                   + one_of(f"{e.name} ({e.summary})" for e in EXECUTION_SPECS.values()) + ".")
@click.option("--no-cache", is_flag=True,
              help="Trace this workload afresh: neither read nor write the trace cache (see `cache info`).")
def analyze(workload_profile, variant, mode, page, tiles, min_tiles, max_tiles, prompt_tokens, new_tokens, batch,
            out, quiet, execution, no_cache):
    """Build the analytic model of one workload and write an AnalyticModelReport.

    \b
    Examples:
      dsocr-registry analyze --workload dsocr-standard-v1 --out report.json
      dsocr-registry analyze --variant ocr2 --mode gundam --page 1654x2339 --new-tokens 1024 --batch 8 --out r.yaml
      dsocr-registry analyze -w dsocr-base-v1 -o - -q | dsocr-registry ingest -
    """
    from analyzer.report import dumps, format_for_path, write_report

    to_stdout = out is not None and str(out) == "-"
    if out is not None and not to_stdout:
        format_for_path(out)  # reject an unknown extension before any work
    workload = build_workload(workload_profile, variant, mode, page, tiles, min_tiles, max_tiles, prompt_tokens,
                              new_tokens, batch)
    from analyzer.analysis import analyze as run_analysis, analyze_traced
    from analyzer.summary import format_summary

    started = time.perf_counter()
    report = analyze_traced(workload, execution) if no_cache else run_analysis(workload, execution)
    elapsed = time.perf_counter() - started
    if to_stdout:
        click.echo(dumps(report, "json"), nl=False)
    elif out is not None:
        write_report(report, out)
    if not quiet:
        click.echo(format_summary(report), err=to_stdout)
        where = " -> standard output" if to_stdout else f" -> {out}" if out is not None else ""
        click.echo(f"report {report.report_id}{where} ({elapsed:.2f} s)", err=to_stdout)


@cli.group()
def cache() -> None:
    """The trace cache: each traced family's frame, from which `analyze` derives its reports.

    \b
    It lives in $DSOCR_CACHE_DIR, else dsocr-registry/ in the user's cache directory (~/.cache). An entry is used
    only by the analyzer, torch and transformers that wrote it; a damaged entry is traced again.
    """


@cache.command("info")
def cache_info() -> None:
    """Where the cache is, and its entries (family and size)."""
    from analyzer import trace_cache

    entries = trace_cache.entries()
    total_bytes = sum(path.stat().st_size for path in entries)
    click.echo(f"trace cache: {trace_cache.cache_dir()} ({len(entries)} {'entry' if len(entries) == 1 else 'entries'}, "
               f"{total_bytes / 1e6:.1f} MB)")
    for path in entries:
        click.echo(f"  {path.name}  {path.stat().st_size / 1e3:,.0f} kB")


@cache.command("clear")
def cache_clear() -> None:
    """Remove every entry: the next report of each family traces it again."""
    from analyzer import trace_cache

    removed, removed_bytes = trace_cache.clear()
    click.echo(f"trace cache: removed {plural(removed, 'file')} ({removed_bytes / 1e6:.1f} MB) from "
               f"{trace_cache.cache_dir()}")


# -- registry commands ------------------------------------------------------------------------------------------

def db_options(func):
    options = [
        click.option("--db", "db_url", envvar="DSOCR_REGISTRY_URL", metavar="URL_OR_PATH",
                     help="DuckDB file or postgresql:// URL [env DSOCR_REGISTRY_URL; default ./dsocr-registry.duckdb]."),
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     metavar="SECONDS",
                     help="How long to wait for a DuckDB file locked by another process (db upgrade on PostgreSQL: "
                          "for another connection's lock)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def open_registry(db_url, lock_timeout, create: bool = False, check: bool = True, writes: bool | None = None):
    """The registry named by --db, to use as `with open_registry(...) as registry:` (its connections end with the
    block); only commands that write (`create`) make a new DuckDB file. `writes` (default: `create`) says whether
    the command changes the registry, for the message given when a DuckDB file stays locked."""
    from registry.store.db import Registry

    registry = Registry(db_url, lock_timeout_s=lock_timeout, writes=create if writes is None else writes)
    registry.discard_created_on_error = True  # a command that fails leaves no registry it created
    registry.on_wait = lambda message: click.echo(message, err=True)
    if check:
        try:
            registry.ensure_schema(auto_create=create)
        except BaseException:
            registry.discard_created()  # refused here, it reaches no `with` block that would end its connections
            raise
    return registry


@cli.command()
@click.argument("paths", nargs=-1, required=False, metavar="PATH...")
@db_options
@click.option("--force", is_flag=True, help="Replace the rows of reports already present.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal, for several files).")
@click.option("--measurements", "measurement_file", type=click.Path(dir_okay=False),
              help="Store a measurement file instead (JSON {env, rows}); needs --hardware and --runtime.")
@click.option("--hardware", help="GPU the measurements were taken on (a name from `hardware list`).")
@click.option("--runtime", "runtime_name", help="Runtime profile they were taken under (NAME or NAME@VERSION).")
@click.option("--serving-results", "serving_file", type=click.Path(dir_okay=False),
              help="Store a serving benchmark's result file instead (vllm bench serve, SGLang bench_serving, "
                   "GuideLLM); its setup from --setup and the options below.")
@click.option("--setup", "setup_file", type=click.Path(dir_okay=False),
              help="YAML file of the setup a serving benchmark ran on (hardware, engine, variant, mode, "
                   "max_num_seqs, max_num_batched_tokens, ...).")
@click.option("--engine", help="Serving results: engine profile (NAME or NAME@VERSION; engine list).")
@click.option("--variant", help="Serving results: model variant (v1 or ocr2).")
@click.option("--mode", help="Serving results: resolution mode of the requests' images.")
@click.option("--max-num-seqs", type=int, help="Serving results: the server's max running requests.")
@click.option("--max-num-batched-tokens", type=int, help="Serving results: the server's token budget per step.")
@click.option("--host", "host_name", help="Serving results: host profile (default: the engine's).")
def ingest(paths, db_url, lock_timeout, force, progress, measurement_file, hardware, runtime_name, serving_file,
           setup_file, engine, variant, mode, max_num_seqs, max_num_batched_tokens, host_name):
    """Store reports (JSON or YAML files, directories, globs, or - for stdin) as rows in the registry.

    Reports go in batches, one transaction each (every report has all its rows or none); a report already
    present (same content hash) is skipped unless --force. A bad file gets one line naming it and the problem;
    the others still go in. A batch whose database fails (a full disk, a lost connection) stores nothing.

    \b
    Examples:
      dsocr-registry ingest report.json more-reports/ 'runs/*.yaml'
      dsocr-registry analyze -w dsocr-standard-v1 -o - -q | dsocr-registry ingest -
      dsocr-registry ingest --db postgresql://127.0.0.1/test reports/
    """
    from analyzer.fileio import one_line, printable
    from registry.store.db import describe
    from registry.store.ingest import discover, ingest_sources, summarize

    if serving_file is not None:
        if paths or measurement_file:
            raise click.UsageError("give report paths, --measurements FILE or --serving-results FILE, one of them")
        options = {"hardware": hardware, "runtime": runtime_name, "engine": engine, "variant": variant,
                   "mode": mode, "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                   "host": host_name}
        _ingest_serving(serving_file, setup_file, options, db_url, lock_timeout)
        return
    serving_only = {"--setup": setup_file, "--engine": engine, "--variant": variant, "--mode": mode,
                    "--max-num-seqs": max_num_seqs, "--max-num-batched-tokens": max_num_batched_tokens,
                    "--host": host_name}
    for option, value in serving_only.items():
        if value is not None:
            raise click.UsageError(f"{option} is a setup of serving results: give --serving-results FILE")
    if measurement_file is not None:
        if paths:
            raise click.UsageError("give report paths or --measurements FILE, not both")
        _ingest_measurements(measurement_file, hardware, runtime_name, db_url, lock_timeout, progress)
        return
    if not paths:
        raise click.UsageError("give at least one report path (or - for stdin), or --measurements FILE")
    sources = discover(list(paths))  # before the registry is opened (or created): a refused walk writes nothing
    show_progress = progress if progress is not None else (len(sources) > 1 and sys.stderr.isatty())
    with open_registry(db_url, lock_timeout, create=True) as registry:
        started = time.perf_counter()
        outcomes = ingest_sources(registry, sources, force=force, progress=show_progress)
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        if outcome.status == "failed":
            click.echo(one_line(f"{printable(outcome.source)}: {outcome.message}"), err=True)
        elif outcome.status == "skipped":
            click.echo(f"{printable(outcome.source)}: {outcome.report_id} already present, skipped", err=True)
    if all(o.status == "failed" for o in outcomes):
        registry.discard_created()  # nothing went in: no registry of this command's making is left behind
    click.echo(summarize(outcomes, elapsed, describe(registry.url)))
    if any(o.status == "failed" for o in outcomes):
        sys.exit(1)


def _ingest_measurements(path, hardware, runtime_name, db_url, lock_timeout, progress):
    from registry.store.measurements import ingest_measurements

    if not hardware or not runtime_name:
        raise click.UsageError("--measurements needs --hardware and --runtime")
    with open_registry(db_url, lock_timeout, create=True) as registry:
        set_id, new, rows = ingest_measurements(registry, path, hardware, runtime_name,
                                                progress=bool(progress) or (progress is None and sys.stderr.isatty()),
                                                warn=lambda message: click.echo(message, err=True))
    compared = sum(1 for r in rows if r.compared and r.workload is not None)
    state = "stored" if new else "already present"
    click.echo(f"measurements: {path} {state} as set {set_id}: {len(rows)} rows, {compared} timed rows to compare")
    return set_id


def _ingest_serving(path, setup_file, options, db_url, lock_timeout) -> None:
    from registry.store.serving_results import ingest_serving_results, read_results, read_setup

    setup = read_setup(setup_file, options)
    runs = read_results(path)  # checked before the registry is opened (or created): a refused file writes nothing
    with open_registry(db_url, lock_timeout, create=True) as registry:
        stored = ingest_serving_results(registry, path, setup)
    by_index = {run.index: run for run in runs}
    for entry in stored:
        run = by_index[entry.run]
        load = (f"max concurrency {run.max_concurrency}" if run.max_concurrency is not None else "no concurrency "
                "limit") + (f", {run.request_rate_per_s:g} requests/s" if run.request_rate_per_s else ", rate inf")
        state = "stored as" if entry.new else "already present as"
        rows = "per-request rows" if run.per_request is not None else "aggregates only"
        click.echo(f"serving results: {path} run {entry.run} ({run.tool}, {run.completed} requests, {load}, {rows}) "
                   f"{state} serving measurement {entry.measurement_id}")


def print_rows(columns, rows, fmt: str) -> None:
    click.echo(render_rows(columns, rows, fmt))


# A query that starts with an SQL comment ("-- ...") is the query, not an unknown option.
@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("query", required=False)
@db_options
@click.option("--file", "-f", "sql_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Read the query from this file (- for standard input); comments are fine.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal (at most the first 10,000 rows), CSV, or JSON (a list of "
                   "objects); CSV and JSON print rows as they are read.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Print at most N rows; the query stops there.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, metavar="SECONDS",
              help="Stop a query the database works on longer than this (on PostgreSQL: per statement, the query "
                   "and each fetch of 10,000 rows).")
def sql(query, db_url, lock_timeout, sql_file, fmt, limit, timeout_s):
    """Run one SQL query against the registry and print its rows; the query can change nothing.

    QUERY is the SQL text; - reads it from standard input, as does --file -. In the table format no value shows
    as "-" and booleans as yes/no; CSV and JSON keep values as stored.

    \b
    Views: v_reports, v_module_tree, v_stage_totals, v_category_breakdown, v_operator_metrics,
    v_module_hotspots, v_point_cost_group_time, v_point_operator_time, v_point_stage_time, v_point_summary_all,
    v_point_summary, v_predicted_vs_measured, v_prediction_error_summary, v_serving_summary, v_serving_compare,
    v_plan_candidates (what each column means: dsocr-registry schema).

    \b
    Only queries run, and the connection itself cannot write or reach outside the database:
      DuckDB: one SELECT (SHOW, DESCRIBE, SUMMARIZE, FROM ...) or EXPLAIN, on a read-only connection with
        external access off: no COPY, ATTACH, INSTALL, LOAD, SET or PRAGMA, and no file or URL read
        (read_csv, read_text, glob).
      PostgreSQL: one SELECT, VALUES or TABLE query (no COPY, no data-modifying WITH), run as a cursor in a
        READ ONLY transaction; a role that may touch server files or programs (a superuser) runs it as role
        dsocr_sql_reader, which may read the registry only (created on first use), so pg_read_file, lo_export
        and the like are refused.
    Example:
      dsocr-registry sql "SELECT stage, view_kind, predicted_flops FROM v_stage_totals" --format csv
      dsocr-registry sql --file queries/examples/03_top_modules.sql
    """
    if (query is None) == (sql_file is None):
        raise click.UsageError("give the query as QUERY, or --file FILE, not both" if query is not None
                               else "give a query: QUERY, - (standard input) or --file FILE")
    from analyzer.fileio import MAX_SMALL_FILE_BYTES, load_text
    from registry.interfaces.output import write_rows

    if sql_file is not None or query == "-":
        path = None if sql_file in (None, "-") else sql_file
        query = load_text(path, MAX_SMALL_FILE_BYTES, RegistryError)
    elif "\x00" in query:
        raise click.UsageError("the query holds a NUL character")
    if not query.strip():
        raise click.UsageError("the query is empty")
    with open_registry(db_url, lock_timeout) as registry:
        with registry.stream_query(query, timeout_s=timeout_s) as (columns, batches):
            write_rows(columns, batches, fmt, lambda text: click.echo(text, nl=False), limit=limit)


@cli.command()
@click.option("--parquet", "parquet_dir", required=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Folder for <table>.parquet and <view>.parquet files.")
@db_options
def export(parquet_dir, db_url, lock_timeout):
    """Write every table and view as Parquet, read in one consistent transaction."""
    from registry.store.export import export_parquet

    with open_registry(db_url, lock_timeout) as registry:
        written = export_parquet(registry, parquet_dir)
    total = sum(rows for _, rows in written)
    click.echo(f"export: {plural(len(written), 'file')}, {plural(total, 'row')} -> {parquet_dir}")


@cli.command()
@click.argument("target", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@db_options
@click.option("--storage-version", default=DEFAULT_STORAGE_VERSION, show_default=True, metavar="VERSION",
              help="Oldest DuckDB release that must open the file (e.g. v1.1.0, v1.5.0); latest writes this "
                   "DuckDB's own format, which older releases cannot read.")
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
def snapshot(target, db_url, lock_timeout, storage_version, force):
    """Write a consistent copy of the registry to a new DuckDB file for BI tools.

    Open the copy read-only (e.g. duckdb -readonly TARGET); the registry itself stays free for ingest.
    The file is written in DuckDB 1.1's storage format unless --storage-version says otherwise, so the DuckDB
    that BI drivers bundle can read it. An existing TARGET is refused unless --force.
    """
    from registry.store.export import snapshot as write_snapshot

    with open_registry(db_url, lock_timeout) as registry:
        copied = write_snapshot(registry, target, storage_version=storage_version, force=force)
    rows_copied = sum(n for _, n in copied)
    click.echo(f"snapshot: {plural(len(copied), 'table')}, {plural(rows_copied, 'row')} -> {target} "
               f"(DuckDB storage {storage_version})")


@cli.group()
def db():
    """Schema revisions of the registry (Alembic), and read access for a PostgreSQL role."""


@db.command("upgrade")
@db_options
def db_upgrade(db_url, lock_timeout):
    """Create or upgrade the schema to this code's revision (one transaction).

    At the current revision it changes nothing but the views whose SQL or comments changed (their grants kept).
    A lock held by another connection is waited for up to --lock-timeout, saying which connection holds it; on
    PostgreSQL a concurrent db upgrade of the same schema is waited for too, after which the schema is current.
    """
    from registry.store.db import describe

    with open_registry(db_url, lock_timeout, check=False, writes=True) as registry:
        before, after = registry.upgrade()
    if before == after:
        click.echo(f"{describe(registry.url)} is at revision {after} (current)")
    else:
        click.echo(f"{describe(registry.url)}: upgraded {before or '(empty)'} -> {after}")


@db.command("grant-read")
@click.argument("role")
@db_options
def db_grant_read(role, db_url, lock_timeout):
    """PostgreSQL: let ROLE read the registry: USAGE on its schema, SELECT on every table and view, and on the
    tables and views created later in it (also those `db upgrade` recreates); CREATE on the schema is revoked from
    ROLE and, where every role has it (schema public before PostgreSQL 15), from PUBLIC.

    Create the role first (CREATE ROLE bi_reader LOGIN PASSWORD '...'). DuckDB has no roles: give readers the
    file read-only, or a copy (`snapshot`).
    """
    from registry.store.db import describe, grant_read

    with open_registry(db_url, lock_timeout, check=False) as registry:
        if registry.dialect == "duckdb":
            raise RegistryError(
                f"{describe(registry.url)} is a DuckDB file, and DuckDB has no roles: give readers the file "
                "read-only (chmod a-w FILE; duckdb -readonly FILE; ATTACH 'FILE' (READ_ONLY)) or a copy "
                "(dsocr-registry snapshot COPY.duckdb)")
        registry.ensure_schema(auto_create=False)
        schema, tables, views, revoked = grant_read(registry, role)
    click.echo(f"{role} may read schema {schema}: SELECT on {tables} tables and {views} views, and on those created "
               "later")
    if "PUBLIC" in revoked:  # PostgreSQL 14 and older let every role create in schema public
        click.echo(f"revoked CREATE on schema {schema} from PUBLIC, so that {role} may only read (as PostgreSQL 15 "
                   "does by default); grant it to the roles that create tables there")


@db.command("current")
@db_options
def db_current(db_url, lock_timeout):
    """Print the database's revision and the code's."""
    from registry.store.db import describe, duckdb_path, schema_revisions

    with open_registry(db_url, lock_timeout, check=False) as registry:
        path = duckdb_path(registry.url)
        if path is not None and not path.exists():
            raise RegistryError(f"{path} does not exist")
        current, head = schema_revisions(registry)
    state = "current" if current == head else "needs: dsocr-registry db upgrade"
    click.echo(f"{describe(registry.url)}: revision {current or '(empty)'}; code {head} ({state})")


@db.command("vacuum")
@db_options
def db_vacuum(db_url, lock_timeout):
    """Give back the space of replaced rows and print the registry's size per report.

    DuckDB: a checkpoint, which writes the log into the file and frees the blocks of replaced rows (from ingest
    --force) for reuse; the file shrinks where free blocks end it. PostgreSQL: VACUUM ANALYZE.
    """
    from registry.store.db import describe
    from registry.store.stored import stored_report_count

    with open_registry(db_url, lock_timeout) as registry:
        before = registry.storage_bytes()
        registry.vacuum()
        after = registry.storage_bytes()
        reports = stored_report_count(registry)
    per_report = f", {after / reports / 1e3:,.1f} kB per report" if reports else ""
    click.echo(f"{describe(registry.url)}: {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB; "
               f"{plural(reports, 'report')}{per_report}")


@db.command("history")
def db_history():
    """List the schema revisions, newest first."""
    from registry.store.db import revision_history

    for revision, down, doc in revision_history():
        click.echo(f"{down or '<base>'} -> {revision}: {doc}")


@cli.command("schema")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal, CSV, or JSON (a list of views, each with its columns).")
def schema_command(db_url, lock_timeout, fmt):
    """Print the data dictionary: every view, what a row of it is, and each column with its type and meaning.

    The text is what the database holds as COMMENT ON VIEW / COLUMN (BI tools show it too); it is kept in
    queries/views/dictionary.yaml.
    """
    from registry.store.views import data_dictionary

    with open_registry(db_url, lock_timeout) as registry:
        with registry.begin() as conn:
            views = data_dictionary(conn)
    if fmt == "json":
        click.echo(render_document(views, "json"))
        return
    rows = []
    for view in views:
        rows.append((view["view"], "", "", view["comment"]))
        rows.extend((view["view"], c["column"], c["type"], c["comment"]) for c in view["columns"])
    print_rows(["view", "column", "type", "comment"], rows, fmt)


# -- what-if ----------------------------------------------------------------------------------------------------

WHATIF_TABLE = [Column("hardware"), Column("runtime"), Column("variant"), Column("mode"), Column("tiles"),
                Column("batch"), Column("new_tokens", "new"), Column("page_latency_s", "page s", "{:.2f}"),
                Column("pages_per_s", "pages/s", "{:.2f}"), Column("pages_per_gpu_day", "pages/GPU-day", "{:,.0f}"),
                Column("gpu_seconds_per_page", "GPU-s/page", "{:.3f}"),
                Column("fits_in_memory", "fits"), Column("max_batch_in_memory", "max batch", "{:.0f}"),
                Column("weights_dtype", "weights"), Column("kv_cache_dtype", "KV"),
                Column("usd_per_1000_pages", "$/1k pages", "{:.3f}"), Column("efficiency_source", "efficiencies")]


@cli.command()
@click.option("--scenario", "-s", "scenario_path", required=True, type=click.Path(dir_okay=False),
              help="Scenario YAML file (see queries/examples/capacity.yaml and registry/data/scenario.schema.json).")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal, CSV, or JSON (a list of objects).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Also draw the scenario to this PNG: a roofline (modules where their predicted time puts them) and "
                   "the GPU-seconds per page by stage; for a serving scenario page latency and TTFT against "
                   "throughput, or, for offline points, dollars per 1,000 pages and pages/s by GPU and precision.")
@click.option("--progress/--no-progress", default=None, help="Progress bar while analyzing new workloads.")
@click.option("--new-run", is_flag=True,
              help="Record the scenario again even if the same file was already priced on the same registry state "
                   "(by default that run's scenario is reused).")
def whatif(scenario_path, db_url, lock_timeout, fmt, plot, progress, new_run):
    """Price a scenario: workloads x GPUs x runtimes, sorted by GPU-seconds per page.

    Each workload is priced under every runtime with the report of that runtime's execution (hf-eager or vllm);
    reports not yet in the registry are analyzed and ingested first (reused on later runs). The scenario and its
    points are recorded once: the same file on the same registry state reuses its scenario (same id) unless
    --new-run. Every number comes from the views v_point_summary and v_point_stage_time. Runtimes show as
    NAME@VERSION. On a registry this connection may only read (a read-only DuckDB file, a role given
    `db grant-read`), workloads already stored are priced in temporary tables and nothing is recorded.

    \b
    A scenario file:
      name: capacity-1m-pages
      base: {profile: dsocr-standard-v1}          # or variant/mode/page/new_tokens/batch fields
      sweep: {hardware: [h100-sxm, h200], runtime: [hf-eager, vllm], mode: [base, gundam], batch: [1, 16]}
      overrides: {peak_tflops: 800, memory_tb_per_s: 3.0, memory_gb: 80, efficiency_scale: 0.9}
      target: {pages_per_day: 1000000, page_latency_s: 30}
    """
    from registry.pricing.points import SUMMARY_COLUMNS, read_stage_times
    from registry.pricing.whatif import expand_workloads, load_scenario, price_scenario

    if plot is not None and plot.suffix.lower() != ".png":
        raise click.UsageError(f"--plot {plot}: the plot is written as PNG (use a .png name)")
    scenario = load_scenario(scenario_path)
    if "serving" in scenario.data:
        _whatif_serving(scenario, db_url, lock_timeout, fmt, plot, progress, new_run)
        return
    expand_workloads(scenario)  # validate before anything is written

    def draw(source, scenario_id):
        if plot is not None:
            from registry.interfaces.plots import plot_scenario

            plot_scenario(source, scenario_id, points_of(source, scenario_id), read_stage_times(source, scenario_id),
                          plot)

    def points_of(source, scenario_id):
        from registry.pricing.points import read_points

        return read_points(source, scenario_id)

    with open_registry(db_url, lock_timeout, create=True) as registry:
        show = progress if progress is not None else sys.stderr.isatty()
        priced = price_scenario(registry, scenario, progress=show, new_run=new_run, then=draw)
    scenario_id, points, recorded = priced.scenario_id, priced.points, priced.recorded_now
    if _printed_for_machines(scenario, scenario_id, "points", SUMMARY_COLUMNS, points, fmt):
        return
    state = ("" if recorded else ", not recorded: this connection may only read" if scenario_id < 0
             else ", recorded before")
    click.echo(f"scenario {scenario.name} (id {scenario_id}{state}): {plural(len(points), 'point')}, each one batch "
               f"in lock step (its pages start and end together); those that fit in memory first, then by "
               f"GPU-seconds per page")
    click.echo(render_table(WHATIF_TABLE, [tuple(p[c.key] for c in WHATIF_TABLE) for p in points], count=False))
    feasible = [p for p in points if p["fits_in_memory"]]
    if feasible:
        best = feasible[0]
        cost = (f", ${best['usd_per_1000_pages']:.3f} per 1,000 pages at ${best['usd_per_hour']:g}/h"
                if best.get("usd_per_1000_pages") is not None else "")
        click.echo(f"cheapest that fits: {best['hardware']} / {best['runtime']} / {best['mode']} at batch "
                   f"{best['batch']}: {best['gpu_seconds_per_page']:.3f} GPU-s per page{cost}, "
                   f"{best['page_latency_s']:.2f} s per batch (efficiencies {best['efficiency_source']})")
        if scenario.data.get("target", {}).get("pages_per_day") is not None:
            # a lock-step batch is no server: GPUs for a load come from a serving simulation
            click.echo("GPUs for the target: one batch in lock step is not a server under load; "
                       "`dsocr-registry plan` searches the GPUs and settings that carry it within SLOs")
    else:
        click.echo("no point fits in its GPU's memory")
    if plot is not None:
        click.echo(f"plot -> {plot}")


SERVING_TABLE = [Column("hardware"), Column("runtime"), Column("arrival_rate_per_s", "rate/s", "{:g}"),
                 Column("concurrency", "clients"),
                 Column("pages"), Column("pages_per_s", "pages/s", "{:.2f}"),
                 Column("output_tokens_per_s", "tok/s", "{:,.0f}"), Column("ttft_p50_s", "TTFT p50", "{:.2f}"),
                 Column("ttft_p99_s", "TTFT p99", "{:.2f}"), Column("tpot_p50_s", "TPOT p50 ms", "{:.1f}"),
                 Column("page_latency_p50_s", "page p50", "{:.1f}"),
                 Column("page_latency_p90_s", "page p90", "{:.1f}"),
                 Column("page_latency_p99_s", "page p99", "{:.1f}"), Column("mean_running_pages", "running", "{:.1f}"),
                 Column("kv_pool_use_peak", "KV peak", "{:.0%}"), Column("preemptions", "preempt"),
                 Column("meets_targets", "meets"), Column("best_rate_per_s", "best rate", "{:g}"),
                 Column("gpus_needed", "GPUs", "{:.0f}"), Column("weights_dtype", "weights"),
                 Column("kv_cache_dtype", "KV"), Column("usd_per_1000_pages", "$/1k pages", "{:.3f}"),
                 Column("monthly_usd", "$/month", "{:,.0f}"), Column("efficiency_source", "efficiencies"),
                 Column("cpu_utilization", "CPU pool", "{:.0%}"), Column("bound_by", "bound by")]


def _printed_for_machines(scenario, scenario_id, key: str, columns: list[str], points: list[dict], fmt: str) -> bool:
    """A scenario's rows as JSON (the scenario's id and name, the rows under `key`) or CSV (`columns`); False for
    the table, which each command prints its own way."""
    if fmt == "json":
        click.echo(render_document({"scenario_id": scenario_id, "name": scenario.name, key: points}, "json"))
    elif fmt == "csv":
        print_rows(columns, [tuple(p[c] for c in columns) for p in points], "csv")
    return fmt in ("json", "csv")


def _serving_output(scenario, scenario_id, points, fmt) -> None:
    from registry.serving.scenario import SERVING_COLUMNS

    if _printed_for_machines(scenario, scenario_id, "serving", SERVING_COLUMNS, points, fmt):
        return
    engines = ", ".join(dict.fromkeys(f"{p['engine']} engine on host {p['host']}" for p in points))
    click.echo(f"scenario {scenario.name} (id {scenario_id}): {plural(len(points), 'serving point')} (simulated "
               f"{engines}; times in seconds, TPOT in ms)")
    rows = [tuple(p[c.key] * 1000 if c.key == "tpot_p50_s" and p[c.key] is not None else p[c.key]
                  for c in SERVING_TABLE) for p in points]
    click.echo(render_table(SERVING_TABLE, rows, count=False))
    best = [p for p in points if p["best_rate_per_s"] is not None and p["arrival_rate_per_s"] == p["best_rate_per_s"]]
    for p in best:
        gpus = f", {plural(p['gpus_needed'], 'GPU')} for the target" if p["gpus_needed"] is not None else ""
        cost = f" (${p['monthly_usd']:,.0f} a month)" if p["monthly_usd"] is not None else ""
        precision = (f" ({p['weights_dtype']} weights, {p['kv_cache_dtype']} KV cache)"
                     if (p["weights_dtype"], p["kv_cache_dtype"]) != ("bf16", "bf16") else "")
        click.echo(f"{p['hardware']} / {p['runtime']}{precision}: highest rate meeting the targets "
                   f"{p['best_rate_per_s']:g} pages/s{gpus}{cost}")


def _whatif_serving(scenario, db_url, lock_timeout, fmt, plot, progress, new_run) -> None:
    from registry.serving.scenario import plot_serving, run_serving, serving_spec

    spec = serving_spec(scenario)  # validate before anything is written
    with open_registry(db_url, lock_timeout, create=True) as registry:
        show = progress if progress is not None else sys.stderr.isatty()
        scenario_id, points, _ = run_serving(registry, scenario, spec, progress=show, new_run=new_run)
    if plot is not None:
        plot_serving(points, plot, spec.target)
    _serving_output(scenario, scenario_id, points, fmt)
    if plot is not None and fmt == "table":
        click.echo(f"plot -> {plot}")


@cli.command("serve-sim")
@click.option("--scenario", "-s", "scenario_path", required=True, type=click.Path(dir_okay=False),
              help="Scenario YAML file with a serving block (see queries/examples/serving.yaml).")
@db_options
@click.option("--rate", type=click.FloatRange(min=0, max=ranges.ARRIVAL_RATE_PER_S.high, min_open=True),
              help="Arrival rate in pages/s (default: the scenario's first rate, or offline).")
@click.option("--concurrency", type=click.IntRange(min=int(ranges.CONCURRENCY.low), max=int(ranges.CONCURRENCY.high)),
              help="A closed loop of this many clients instead (each sends the next page when one finishes).")
@click.option("--hardware", "hardware_name", help="GPU (default: the scenario's first).")
@click.option("--runtime", "runtime_name", help="Runtime, NAME or NAME@VERSION (default: the scenario's first).")
@click.option("--requests-out", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Write one row per simulated page to this Parquet file (and keep them in serving_requests).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal, CSV, or JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr.")
@click.option("--new-run", is_flag=True, help="Record the point again even if the same simulation was recorded before.")
def serve_sim(scenario_path, db_url, lock_timeout, rate, concurrency, hardware_name, runtime_name, requests_out, fmt,
              progress, new_run):
    """Simulate one serving point of a scenario (one GPU x runtime x arrival rate) and optionally its pages.

    The step times come from the registry's pricing views (registry/serving/step_cost.py) and the host profile; the
    engine profile (`engine list`) says how the engine schedules (continuous batching, chunked prefill or
    prefill-first), pads decode batches to CUDA graphs and overlaps its host work. The point is recorded
    (serving_points, v_serving_summary), once: the same simulation again reuses it unless --new-run.
    """
    from registry.serving.scenario import run_serving, serving_spec, write_requests

    if rate and concurrency:
        raise click.UsageError("give --rate or --concurrency, not both")
    scenario = load_scenario_checked(scenario_path)
    spec = serving_spec(scenario, points=1)  # one GPU x runtime x rate
    if spec is None:
        raise click.UsageError(f"{scenario_path}: no serving block: serve-sim simulates a serving scenario")
    with open_registry(db_url, lock_timeout, create=True) as registry:
        show = progress if progress is not None else sys.stderr.isatty()
        scenario_id, points, requests = run_serving(
            registry, scenario, spec, progress=show,
            rates=((rate, None),) if rate else ((None, concurrency),) if concurrency else spec.arrivals[:1],
            only=(hardware_name, runtime_name),
            keep_requests=requests_out is not None, new_run=new_run)
    if requests_out is not None:
        write_requests(requests, requests_out)
    _serving_output(scenario, scenario_id, points, fmt)
    if requests_out is not None and fmt == "table":
        click.echo(f"{plural(len(requests['page']), 'page')} -> {requests_out}")


PLAN_TABLE = [Column("candidate_index", "#"), Column("hardware"), Column("engine"),
              Column("weights_dtype", "weights"), Column("kv_cache_dtype", "KV"), Column("max_num_seqs", "seqs"),
              Column("max_num_batched_tokens", "tokens/step"), Column("status"),
              Column("best_rate_per_s", "pages/s/GPU", "{:,.2f}"), Column("replicas", "GPUs"),
              Column("monthly_usd", "$/month", "{:,.0f}"), Column("usd_per_1000_pages", "$/1k pages", "{:.3f}"),
              Column("ttft_p99_s", "TTFT p99", "{:.2f}"), Column("page_latency_p99_s", "page p99", "{:.1f}"),
              Column("bound_by", "bound by"), Column("cost_rank", "rank"), Column("on_pareto_front", "front")]


@cli.command()
@click.option("--scenario", "-s", "scenario_path", required=True, type=click.Path(dir_okay=False),
              help="Plan file: a serving scenario with target.pages_per_day, SLOs and a plan: block.")
@db_options
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes for the searches (default: one per core).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run the searches as Ray tasks on the cluster at ADDRESS (HOST:PORT, or auto).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal, CSV, or JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Draw cost against page latency p99 with the Pareto front (PNG or SVG).")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr.")
@click.option("--new-run", is_flag=True, help="Search again even if this plan was searched before.")
def plan(scenario_path, db_url, lock_timeout, workers, ray_address, fmt, plot, progress, new_run):
    """How many GPUs, which engine settings, at what cost: search a deployment for a load within SLOs.

    Every configuration (the sweep's GPUs, runtimes and precisions x the plan's engines and settings) gets the
    highest Poisson rate one GPU sustains within the SLOs, found by bisection with the serving simulation (to 1%),
    then the GPUs for target.pages_per_day, the money (the catalog's or the plan's prices) and the latencies at
    that load. Prints the cheapest, the Pareto front of cost against page latency p99, and the command line that
    starts the cheapest. Each configuration is stored as its search finishes (plans, plan_candidates,
    v_plan_candidates): an interrupted plan resumes where it stopped. The searches run in local worker processes,
    or on a Ray cluster with --ray; the results are the same wherever they run.

    \b
    Example:
      dsocr-registry plan --scenario queries/examples/plan-1m-pages.yaml
    """
    import os

    from registry.store.plans import PLAN_COLUMNS, answer, plan_spec, plot_plan, run_plan

    scenario = load_scenario_checked(scenario_path)
    plan_spec(scenario)  # checked before the registry is opened (or created)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise click.UsageError(f"--plot {plot}: give a .png or .svg file")
    show = progress if progress is not None else sys.stderr.isatty()
    with open_registry(db_url, lock_timeout, create=True) as registry:
        plan_id, rows = run_plan(registry, scenario, workers=workers or os.cpu_count() or 1,
                                 ray_address=ray_address, progress=show, new_run=new_run)
    result = answer(rows)
    if plot is not None:
        plot_plan(rows, plot)
    if fmt == "json":
        click.echo(render_document({"plan_id": plan_id, **result, "candidates": rows}, "json"))
        return
    if fmt == "csv":
        print_rows(PLAN_COLUMNS, [tuple(r[c] for c in PLAN_COLUMNS) for r in rows], "csv")
        return
    click.echo(render_table(PLAN_TABLE, [tuple(r[c.key] for c in PLAN_TABLE) for r in rows]))
    counts = result["counts"]
    click.echo(f"plan {plan_id}: {counts['ok']} configurations meet the SLOs, {counts['misses-slo']} miss them, "
               f"{counts['unsupported']} cannot run")
    best = result["cheapest"]
    if best is None:
        click.echo("no configuration meets the SLOs at any rate: loosen them or add GPUs")
        sys.exit(1)
    click.echo(f"cheapest: {best['replicas']} x {best['hardware']} ({best['engine']}, {best['weights_dtype']} "
               f"weights, {best['kv_cache_dtype']} KV, max_num_seqs {best['max_num_seqs']}, "
               f"max_num_batched_tokens {best['max_num_batched_tokens']}), ${best['monthly_usd']:,.0f} a month, "
               f"${best['usd_per_1000_pages']:.3f} per 1,000 pages; {best['best_rate_per_s']:.2f} pages/s per GPU, "
               f"bound by {best['bound_by']}; at the load: TTFT p99 {best['ttft_p99_s']:.2f} s, page latency p99 "
               f"{best['page_latency_p99_s']:.1f} s")
    click.echo("Pareto front (cost vs page latency p99): " + "; ".join(
        f"#{r['candidate_index']} {r['replicas']} x {r['hardware']} ${r['monthly_usd']:,.0f} "
        f"{r['page_latency_p99_s']:.1f} s" for r in result["pareto_front"]))
    click.echo(f"start it: {best['command']}")
    if plot is not None:
        click.echo(f"plot -> {plot}")


@cli.command()
@click.option("--db", "db_url", envvar="DSOCR_REGISTRY_URL", metavar="URL_OR_PATH",
              help="DuckDB file or postgresql:// URL [env DSOCR_REGISTRY_URL; default ./dsocr-registry.duckdb].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback (e.g. 0.0.0.0) a token is required.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes (more than 1 needs a postgresql:// registry: a DuckDB file has one process).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              help="File holding the bearer token the write endpoints (POST) require [or env DSOCR_SERVICE_TOKEN].")
@click.option("--analysis-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              metavar="SECONDS", help="An analysis running longer fails its run.")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="On SIGTERM/SIGINT, how long in-flight runs may take to finish before they are failed.")
@click.option("--simulation-timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              metavar="SECONDS", help="A serving request's simulations running longer are answered 504.")
@click.option("--simulation-memory-mb", type=click.IntRange(min=256), default=4096, show_default=True,
              metavar="MIB", help="Address space of a simulation worker; past it the request is answered 422.")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              metavar="SECONDS", help="A connection's request headers arriving later are answered 408.")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              metavar="SECONDS", help="A request body arriving later is answered 408.")
@click.option("--max-connections", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Open connections; past it requests are answered 503 (half of it may wait for headers).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host header name to answer besides the bound address and loopback (repeatable).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="An origin (https://app.example) whose pages may call the service (repeatable; default none).")
def serve(db_url, host, port, workers, token_file, analysis_timeout, shutdown_grace, simulation_timeout,
          simulation_memory_mb, header_timeout, body_timeout, max_connections, allowed_hosts, cors_origins):
    """Serve contracts/openapi.yaml over HTTP: runs, summaries, reports, what-if and serving scenarios.

    POST /analytic/deepseek-ocr/run answers 202 with a run id and its status URL; the analysis runs in a worker
    process and is stored in one transaction. The contract is at /openapi.yaml and browsable at /docs; /healthz
    checks the database and its schema. One JSON log line per request goes to standard error.

    \b
    Examples:
      dsocr-registry serve --db registry.duckdb
      DSOCR_SERVICE_TOKEN=secret dsocr-registry serve --db postgresql://db/registry --host 0.0.0.0 --workers 4
    """
    import os

    from registry.interfaces.service import ServiceConfig, serve as run_service

    token = os.environ.get("DSOCR_SERVICE_TOKEN") or None
    if token_file is not None:
        from analyzer.fileio import MAX_SMALL_FILE_BYTES, load_text

        token = load_text(token_file, MAX_SMALL_FILE_BYTES, click.UsageError, f"--token-file {token_file}").strip() \
            or None
        if token is None:
            raise click.UsageError(f"--token-file {token_file}: the file is empty")
    config = ServiceConfig(db=db_url, token=token, analysis_timeout_s=analysis_timeout,
                           shutdown_grace_s=shutdown_grace, simulation_timeout_s=simulation_timeout,
                           simulation_memory_bytes=simulation_memory_mb * 2 ** 20, header_timeout_s=header_timeout,
                           body_timeout_s=body_timeout, max_connections=max_connections,
                           allowed_hosts=allowed_hosts, cors_origins=cors_origins)
    run_service(config, host, port, workers)


def load_scenario_checked(path):
    from registry.pricing.whatif import load_scenario

    return load_scenario(path)


@cli.command()
@click.option("--measurements", "measurement_file", type=click.Path(dir_okay=False),
              help="Measurement file (JSON {env, rows}); stored first if the registry lacks it.")
@click.option("--hardware", "hardware_name", help="GPU the measurements were taken on.")
@click.option("--runtime", "runtime_name", help="Runtime profile (NAME or NAME@VERSION).")
@click.option("--serving", is_flag=True,
              help="Compare the ingested serving benchmarks with the simulation of their own requests instead.")
@click.option("--measurement", "measurement_ids", type=int, multiple=True, metavar="ID",
              help="With --serving: this serving measurement only (repeatable; default: every one).")
@click.option("--host", "host_name", help="With --serving: simulate under this host profile (default: each run's).")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal, CSV, or JSON (a list of objects).")
def compare(measurement_file, hardware_name, runtime_name, serving, measurement_ids, host_name, db_url, lock_timeout,
            fmt):
    """Measured vs predicted for every timed row of a measurement file, or (--serving) for ingested serving
    benchmarks.

    Each row is matched to the workload and stage it times (analyzed if the registry lacks it) and priced on
    the same GPU and runtime by the views v_predicted_vs_measured and v_prediction_error_summary. A file already
    stored (same content, GPU and runtime) is only read, so this works under a read-only role too.

    With --serving, each serving benchmark stored by `ingest --serving-results` is replayed (its own requests, load
    and setup) by the serving simulation, once per host profile version, and printed beside its measured figures
    from the view v_serving_compare: measured, predicted, ratio and relative error per metric.
    """
    from registry.store.measurements import ingest_measurements
    from registry.pricing.points import COMPARE_COLUMNS, compare_measurements

    if serving:
        if measurement_file or hardware_name or runtime_name:
            raise click.UsageError("--serving compares the ingested serving benchmarks: no --measurements, "
                                   "--hardware or --runtime")
        _compare_serving(list(measurement_ids), host_name, db_url, lock_timeout, fmt)
        return
    if measurement_ids or host_name:
        raise click.UsageError("--measurement and --host go with --serving")
    for option, value in (("--measurements", measurement_file), ("--hardware", hardware_name),
                          ("--runtime", runtime_name)):
        if not value:
            raise click.UsageError(f"missing option {option} (or --serving)")

    with open_registry(db_url, lock_timeout, create=True) as registry:
        set_id, _, _ = ingest_measurements(registry, measurement_file, hardware_name, runtime_name,
                                           progress=sys.stderr.isatty(),
                                           warn=lambda message: click.echo(message, err=True))
    with open_registry(db_url, lock_timeout) as registry:
        result = compare_measurements(registry, set_id)
    if fmt == "json":
        click.echo(render_document(result, "json"))
        return
    rows = [tuple(r[c] for c in COMPARE_COLUMNS) for r in result["rows"]]
    print_rows(COMPARE_COLUMNS, rows, fmt)
    if fmt == "table" and result["summary"]["rows"]:
        summary = result["summary"]
        by_kind = [(kind, s["rows"], s["median_ape_pct"], s["mape_pct"], s["max_ape_pct"])
                   for kind, s in sorted(summary["by_kind"].items())]
        by_kind.append(("all", summary["rows"], summary["median_ape_pct"], summary["mape_pct"], summary["max_ape_pct"]))
        click.echo()
        click.echo(render_table(ERROR_SUMMARY_TABLE, by_kind, count=False))


SERVING_COMPARE_TABLE = [Column("measurement_id", "id"), Column("hardware"), Column("engine"),
                         Column("variant"), Column("requests"), Column("max_concurrency", "clients"),
                         Column("host"), Column("metric"), Column("measured", "measured", "{:,.2f}"),
                         Column("predicted", "predicted", "{:,.2f}"), Column("ratio", "ratio", "{:.3f}"),
                         Column("error", "error %", "{:+.1%}"), Column("bound_by", "bound by")]


def _compare_serving(ids, host_name, db_url, lock_timeout, fmt) -> None:
    from registry.store.serving_results import COMPARE_COLUMNS, compare_rows

    with open_registry(db_url, lock_timeout, writes=True) as registry:
        rows = compare_rows(registry, ids, host_name, progress=sys.stderr.isatty())
    if fmt == "table":
        click.echo(render_table(SERVING_COMPARE_TABLE, [tuple(r[c.key] for c in SERVING_COMPARE_TABLE)
                                                        for r in rows]))
        return
    if fmt == "json":
        click.echo(render_document(rows, "json"))
        return
    print_rows(COMPARE_COLUMNS, [tuple(r[c] for c in COMPARE_COLUMNS) for r in rows], fmt)


ERROR_SUMMARY_TABLE = [Column("kind"), Column("rows"), Column("median_ape_pct", "median APE %", "{:.1f}"),
                       Column("mape_pct", "mean APE %", "{:.1f}"), Column("max_ape_pct", "max APE %", "{:.1f}")]
FIT_TABLE = [Column("kind"), Column("rows"), Column("before", "MAPE before %", "{:.1f}"),
             Column("after", "MAPE after %", "{:.1f}"), Column("held_out", "MAPE held out %", "{:.1f}")]


@cli.command()
@click.option("--hardware", "hardware_name", help="GPU whose measurements to fit.")
@click.option("--runtime", "runtime_name", help="Runtime profile to start from (NAME or NAME@VERSION).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Write the calibrated profile here (YAML, loadable by `runtime add`, or `host add` with "
                   "--serving).")
@click.option("--name", "profile_name", help="Name of the calibrated profile (default: the runtime's name); "
                                             "stored as that name's next version, reached as NAME@VERSION.")
@click.option("--serving", is_flag=True,
              help="Fit a host profile's free costs to the ingested serving benchmarks instead (through the "
                   "serving simulation).")
@click.option("--host", "host_name", help="With --serving: host profile to start from (default: the runs' own).")
@click.option("--measurement", "measurement_ids", type=int, multiple=True, metavar="ID",
              help="With --serving: fit to this serving measurement (repeatable; default: every one).")
@click.option("--free", "free_costs", multiple=True, metavar="KEY",
              help="With --serving: a host cost to fit (repeatable; default: schedule_step_us and "
                   "schedule_per_request_us).")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Aligned text for the terminal, or JSON.")
def calibrate(hardware_name, runtime_name, out, profile_name, serving, host_name, measurement_ids, free_costs,
              db_url, lock_timeout, fmt):
    """Fit a runtime profile to the stored measurements of one GPU x runtime (least squares).

    Fits, through the pricing views' own formula, the compute efficiency of matmul, attention, masked attention and
    conv, a bandwidth-efficiency scale, the host time per aten call, kernel launch, module call, stage call and
    decode step (and the device time per replayed kernel with CUDA-graph decode), each within its physical range.
    Reports the parameters that end on a bound and those the rows cannot identify (kept at the prior), and the
    error before and after on the rows used and on rows held out (each kind of measurement predicted by a fit to
    the other kinds). Stores the result as a new version, reached as NAME@VERSION (a plain NAME keeps its pinned
    version), and writes it to --out.
    """
    import yaml

    from analyzer.fileio import write_text_atomic
    from registry.pricing.calibrate import calibrate_runtime

    if out.suffix.lower() not in (".yaml", ".yml"):
        raise click.UsageError(f"--out {out}: the profile is written as YAML (.yaml or .yml)")
    if serving:
        if hardware_name or runtime_name:
            raise click.UsageError("--serving fits a host profile to the ingested serving benchmarks: no --hardware "
                                   "or --runtime (each run has its setup)")
        _calibrate_serving(out, profile_name, host_name, list(measurement_ids), tuple(free_costs), db_url,
                           lock_timeout, fmt)
        return
    if host_name or measurement_ids or free_costs:
        raise click.UsageError("--host, --measurement and --free go with --serving")
    for option, value in (("--hardware", hardware_name), ("--runtime", runtime_name)):
        if not value:
            raise click.UsageError(f"missing option {option} (or --serving)")
    with open_registry(db_url, lock_timeout, writes=True) as registry:
        result = calibrate_runtime(registry, hardware_name, runtime_name, profile_name, str(out))
    write_text_atomic(out, yaml.safe_dump([result["document"]], sort_keys=False, width=110))
    if fmt == "json":
        click.echo(render_document({"profile": result["profile_label"], "plain": result["plain_label"],
                                    "parameters": result["parameters"], "bounds": result["bounds"],
                                    "on_bounds": result["on_bounds"], "fixed": result["fixed"],
                                    "before": result["before"], "after": result["after"],
                                    "held_out": result["held_out"], "after_from_views": result["after_from_views"]},
                                   "json"))
        return
    click.echo(f"calibrated {result['base_label']} on {hardware_name} from {result['timed_rows']} timed rows -> "
               f"{result['profile_label']} (stored) and {out}")
    for key, value in result["parameters"].items():
        low, high = result["bounds"][key]
        note = ("  fixed at the prior: these rows do not identify it" if key in result["fixed"]
                else f"  on its {result['on_bounds'][key]} bound" if key in result["on_bounds"] else "")
        click.echo(f"  {key:<36} {value:<12.6g} [{low:.4g}, {high:.4g}]{note}")
    click.echo(render_table(FIT_TABLE, [(kind, result["before"][kind]["rows"], result["before"][kind]["mape_pct"],
                                         result["after"][kind]["mape_pct"], result["held_out"][kind]["mape_pct"])
                                        for kind in result["before"]], count=False))
    click.echo(f"refer to it as {result['profile_label']} (a plain {result['plain_label'].split('@')[0]} still means "
               f"{result['plain_label']})")


SERVING_FIT_TABLE = [Column("measurement_id", "id"), Column("metric"), Column("before", "error before %", "{:+.1%}"),
                     Column("after", "error after %", "{:+.1%}"), Column("held_out", "held out %", "{:+.1%}")]


def _calibrate_serving(out, profile_name, host_name, ids, free, db_url, lock_timeout, fmt) -> None:
    import yaml

    from analyzer.fileio import write_text_atomic
    from registry.store.serving_results import calibrate_serving

    with open_registry(db_url, lock_timeout, writes=True) as registry:
        result = calibrate_serving(registry, ids, host_name, free, profile_name,
                                   progress=sys.stderr.isatty())
    write_text_atomic(out, yaml.safe_dump([result["document"]], sort_keys=False, width=110))
    if fmt == "json":
        click.echo(render_document({k: result[k] for k in ("profile", "base", "measurements", "parameters", "start",
                                                            "bounds", "on_bounds", "before", "after", "held_out")},
                                   "json"))
        return
    click.echo(f"calibrated host profile {result['base']} on serving measurements "
               f"{', '.join(map(str, result['measurements']))} -> {result['profile']} (stored) and {out}")
    for key, value in result["parameters"].items():
        low, high = result["bounds"][key]
        note = f"  on its {result['on_bounds'][key]} bound" if key in result["on_bounds"] else ""
        click.echo(f"  {key:<28} {value:<12.6g} (from {result['start'][key]:.6g}) [{low:.4g}, {high:.4g}]{note}")
    rows = []
    for mid in result["measurements"]:
        for metric, before in result["before"][mid].items():
            rows.append((mid, metric, before, result["after"][mid].get(metric),
                         result["held_out"].get(mid, {}).get(metric)))
    click.echo(render_table(SERVING_FIT_TABLE, rows, count=False))
    click.echo(f"held out: each run predicted by a fit to the others; refer to the profile as {result['profile']}")


@cli.command()
@click.option("--variant", required=True, help=f"{one_of(variants.VARIANT_NAMES)}.")
@click.option("--device", default="cuda:0", show_default=True, help="CUDA device to time on.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Measurement file to write (JSON {env, rows}).")
@click.option("--reps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed repetitions per row.")
@click.option("--quick", is_flag=True, help="Fewer sizes and batches (a few minutes on one GPU).")
@click.option("--kinds", default=",".join(MEASURE_KINDS), show_default=True,
              help="Comma-separated sections to run: " + ", ".join(MEASURE_KINDS) + ".")
def measure(variant, device, out, reps, quick, kinds):
    """Time the real model on a CUDA GPU (random bf16 weights) and write a measurement file.

    Then: dsocr-registry compare --measurements OUT --hardware GPU --runtime hf-eager
    """
    from analyzer.measure import measure as run_measure

    count = run_measure(variant, device, out, reps=reps, quick=quick,
                        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()))
    click.echo(f"measure: {count} rows -> {out}")


@cli.command("measure-host")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Host profile to write (YAML, a list of one profile, loadable by `host add`).")
@click.option("--quick", is_flag=True, help="Fewer repeats, page sizes and engine points (a check, ~1 minute).")
@click.option("--name", "profile_name", help="Profile name, [a-z0-9._-] (default: from the CPU and vLLM version).")
def measure_host_command(out, quick, profile_name):
    """Time the host (CPU) work of serving DeepSeek-OCR on this machine and write a host profile.

    Times page preprocessing per variant and mode, page rendering, the n-gram no-repeat processor and, where vLLM
    is installed (pip install --no-deps vllm==0.8.5), vLLM V0's own scheduler, input preparation, sampling
    metadata, sampler, bookkeeping, logits-processor loop and detokenization; without vLLM those pieces are the
    shipped default profile's, scaled by this CPU's single-thread speed. Progress goes to stderr.
    """
    import os

    import yaml

    from analyzer.fileio import write_text_atomic
    from registry.serving.measure_host import NAME_PATTERN, measure_host, profile_rows

    if out.suffix.lower() not in (".yaml", ".yml"):
        raise click.UsageError(f"--out {out}: the profile is written as YAML (.yaml or .yml)")
    folder = out.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise click.UsageError(f"--out {out}: cannot write there")
    if profile_name is not None and not NAME_PATTERN.fullmatch(profile_name):
        raise click.UsageError(f"--name {profile_name!r}: use lower-case letters, digits and . _ -")
    started = time.monotonic()
    document = measure_host(quick=quick, name=profile_name,
                            progress=lambda message: click.echo(f"measure-host: {message}", err=True))
    try:
        write_text_atomic(out, yaml.safe_dump([document], sort_keys=False, width=110))
    except OSError as exc:
        raise click.UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    rows = [(piece, value, spread, how) for piece, value, spread, how in profile_rows(document)]
    click.echo(render_table([Column("piece"), Column("value", "value", "{:.4g}"),
                             Column("spread", "spread", "{:.2g}"), Column("how")], rows, count=False))
    click.echo(f"host profile {document['name']} -> {out} ({time.monotonic() - started:.0f} s)")


@cli.command()
@click.argument("report_ref", metavar="REPORT_ID_OR_FILE")
@db_options
@click.option("--hardware", "hardware_name", default=DEFAULT_SUMMARY_HARDWARE, show_default=True, help="GPU to price on.")
@click.option("--runtime", "runtime_name",
              help="Runtime profile (NAME or NAME@VERSION) of the report's execution [default: the shipped profile "
                   f"of that execution: {one_of(e.shipped_runtime for e in EXECUTION_SPECS.values())}].")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Modules to list.")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json", show_default=True,
              help="Output format.")
def summary(report_ref, db_url, lock_timeout, hardware_name, runtime_name, top, fmt):
    """Print the DeepSeekOCRAnalyticReportSummary of a stored report (by id) or of a report file.

    A file not yet stored is ingested first. The time is priced by the registry's views on --hardware under
    --runtime, in temporary tables that are rolled back: a summary records nothing, and works on a read-only
    DuckDB file or under a role given `db grant-read`. The measured time and the ratio are filled when the
    registry holds an end-to-end measurement of the same workload on that GPU and runtime.
    """
    from registry.interfaces.contract import plain, summarize_reference

    with open_registry(db_url, lock_timeout, create=True) as registry:
        result = summarize_reference(registry, report_ref, hardware_name, runtime_name, top=top)
    click.echo(render_document(plain(result), fmt))


@cli.command()
@click.argument("report_id")
@db_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Write to a file (.json/.yaml) instead of standard output.")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json", show_default=True,
              help="Output format on standard output.")
def report(report_id, db_url, lock_timeout, out, fmt):
    """Print a stored AnalyticModelReport, rebuilt from its rows (checked against its content hash)."""
    from analyzer.report import dumps, format_for_path, write_report
    from registry.store.stored import load_stored_report

    if out is not None:
        format_for_path(out)
    with open_registry(db_url, lock_timeout) as registry:
        stored = load_stored_report(registry, report_id)
    if out is not None:
        write_report(stored, out)
        click.echo(f"report {report_id} -> {out}")
    else:
        click.echo(dumps(stored, fmt).rstrip())


def read_catalog(db_url, lock_timeout, read, *args):
    """What `read(conn, *args)` returns from the registry (created at the current revision if it is a new file)."""
    with open_registry(db_url, lock_timeout, create=True, writes=False) as registry:
        with registry.begin() as conn:
            return read(conn, *args)


def add_catalog(db_url, lock_timeout, path, kind: str) -> tuple[list[dict], list[str]]:
    from registry.pricing.catalog import add_catalog_file, read_catalog_file

    read_catalog_file(path)  # a malformed file is refused before the registry is opened (or created)
    with open_registry(db_url, lock_timeout, create=True) as registry:
        return add_catalog_file(registry, path, kind)


@cli.group()
def hardware():
    """The GPU catalog (decimal units: 1 TB/s = 1e12 bytes/s, 1 GB = 1e9 bytes)."""


@hardware.command("list")
@db_options
def hardware_list(db_url, lock_timeout):
    """List the GPUs the registry knows."""
    from registry.pricing.catalog import HARDWARE_COLUMNS, list_hardware

    print_rows(HARDWARE_COLUMNS, read_catalog(db_url, lock_timeout, list_hardware), "table")


@hardware.command("show")
@click.argument("name")
@db_options
def hardware_show(name, db_url, lock_timeout):
    """Show one GPU, with the source of its figures and of its price."""
    from registry.pricing.catalog import hardware_details

    row = read_catalog(db_url, lock_timeout, hardware_details, name)
    fp8 = (f"{row['peak_fp8_flops_per_s'] / 1e12:,.1f} TFLOP/s" if row["peak_fp8_flops_per_s"] is not None
           else "none (priced in bf16 only)")
    link = row["interconnect"] or "not stated"
    if row["interconnect_bytes_per_s"] is not None and row["interconnect"] is None:
        link = f"{row['interconnect_bytes_per_s'] / 1e9:,.0f} GB/s"
    price = (f"${row['usd_per_hour']:,.2f} per GPU-hour ({row['price_source']})" if row["usd_per_hour"] is not None
             else "none (set one with `dsocr-registry hardware price NAME USD`)")
    click.echo(f"{row['name']}: {row['display_name']}\n"
               f"  dense bf16      {row['peak_bf16_flops_per_s'] / 1e12:,.1f} TFLOP/s\n"
               f"  dense fp8       {fp8}\n"
               f"  memory          {row['memory_bytes'] / 1e9:,.0f} GB ({row['memory_bytes']:,} bytes)\n"
               f"  bandwidth       {row['memory_bandwidth_bytes_per_s'] / 1e12:,.3f} TB/s (1 TB = 1e12 bytes)\n"
               f"  interconnect    {link}\n"
               f"  price           {price}\n"
               f"  source          {row['source']}\n  origin          {row['origin']}")


@hardware.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@db_options
def hardware_add(path, db_url, lock_timeout):
    """Add or update GPUs from a YAML file with the catalog's keys (name, dense_bf16_tflops, ...; your price per
    GPU-hour as usd_per_hour).

    A shipped GPU (origin shipped in `hardware list`) keeps its datasheet figures, which `db upgrade` restores: a
    file that changes one is refused; add your figures under a new name (e.g. h100-sxm-custom), and price a shipped
    GPU with `hardware price`.
    """
    rows, unchanged = add_catalog(db_url, lock_timeout, path, "hardware")
    click.echo(f"hardware: {len(rows)} added or updated ({', '.join(r['name'] for r in rows)})"
               + (f"; shipped and unchanged: {', '.join(unchanged)}" if unchanged else ""))


# "-1" is the price argument (refused as negative), not an unknown option.
@hardware.command("price", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("usd", required=False)
@click.option("--clear", is_flag=True, help="Drop your own price: back to the catalog's dated example, or none.")
@db_options
def hardware_price(name, usd, clear, db_url, lock_timeout):
    """Set your own price for one GPU-hour of NAME in USD (kept over `db upgrade`), or go back to the example.

    The catalog ships dated example on-demand prices (registry/data/hardware.yaml), examples and not truth; USD is
    yours (price_source user). A price must be a number in (0, 10,000].
    """
    from registry.pricing.catalog import parse_price, set_hardware_price

    if clear == (usd is not None):
        raise click.UsageError("give a price in USD or --clear (not both)")
    if usd is not None:
        usd = parse_price(usd, f"hardware price {name}", "USD")  # refused before the registry is opened
    with open_registry(db_url, lock_timeout, create=True) as registry:
        with registry.begin() as conn:
            row = set_hardware_price(conn, name, usd)
    if row["usd_per_hour"] is None:
        click.echo(f"{row['name']}: no price")
    else:
        click.echo(f"{row['name']}: ${row['usd_per_hour']:,.2f} per GPU-hour ({row['price_source']})")


@cli.group()
def runtime():
    """Runtime profiles: the execution they price, per-category efficiency, host time per aten call, kernel launch,
    module call, stage call and decode step, CUDA-graph decode and the vLLM memory model.

    A plain NAME means one version: the one shipped in registry/data/runtimes.yaml (for other names, the first
    version stored). Versions that `calibrate` or `runtime add` store are reached as NAME@VERSION.
    """


@runtime.command("list")
@db_options
def runtime_list(db_url, lock_timeout):
    """List the runtime profiles as NAME@VERSION; `plain` marks the version a plain NAME means."""
    from registry.pricing.catalog import RUNTIME_COLUMNS, list_runtimes

    print_rows(RUNTIME_COLUMNS, read_catalog(db_url, lock_timeout, list_runtimes), "table")


@runtime.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@db_options
def runtime_add(path, db_url, lock_timeout):
    """Add or update runtime profiles from a YAML file in the format of `calibrate --out` / runtimes.yaml.

    The file is checked whole (known keys, a known execution, every category, each parameter in its physical
    range) and nothing is written if any entry is refused. A shipped NAME@VERSION is kept as shipped (`db upgrade`
    restores it): a file that changes one is refused; store yours as another version or under a new name.
    """
    profiles, unchanged = add_catalog(db_url, lock_timeout, path, "runtime")
    labels = [f"{p['name']}@{p['version']}" for p in profiles]
    click.echo(f"runtime: {', '.join(labels) or 'nothing'} added or updated"
               + (f"; shipped and unchanged: {', '.join(unchanged)}" if unchanged else ""))


@runtime.command("show")
@click.argument("name")
@db_options
def runtime_show(name, db_url, lock_timeout):
    """Show a runtime profile (NAME or NAME@VERSION) with its parameters and per-category efficiencies."""
    from registry.pricing.catalog import RUNTIME_CATEGORY_COLUMNS, runtime_details

    profile, categories = read_catalog(db_url, lock_timeout, runtime_details, name)
    graph = (f"yes, {profile['graph_kernel_s'] * 1e6:g} us of device time per kernel"
             if profile["cuda_graph_decode"] else "no")
    lines = [f"{profile['name']}@{profile['version']} ({profile['origin']}): {profile['description']}",
             f"source: {profile['source']}",
             f"  execution                {profile['execution']}",
             f"  aten call                {profile['aten_call_s'] * 1e6:g} us (host)",
             f"  kernel launch            {profile['kernel_launch_s'] * 1e6:g} us (host)",
             f"  module call              {profile['module_call_s'] * 1e6:g} us (host)",
             f"  stage call overhead      {profile['stage_call_overhead_s'] * 1e3:g} ms",
             f"  decode step overhead     {profile['decode_step_overhead_s'] * 1e3:g} ms",
             f"  CUDA-graph decode        {graph}",
             f"  weights / KV cache       {profile['weights_dtype']} / {profile['kv_cache_dtype']} (fp8 matmuls "
             f"reach {profile['fp8_compute_efficiency']:g} of the fp8 rate)",
             f"  efficiencies             " + (f"calibrated on {profile['calibrated_on']}" if profile["calibrated_on"]
                                               else "assumed (not calibrated)")]
    if profile["gpu_memory_utilization"] is not None:
        lines.append(f"  gpu_memory_utilization   {profile['gpu_memory_utilization']:g}")
    if profile["max_num_batched_tokens"] is not None:
        lines.append(f"  max_num_batched_tokens   {profile['max_num_batched_tokens']:,}")
    click.echo("\n".join(lines))
    print_rows(RUNTIME_CATEGORY_COLUMNS, categories, "table")


def _profile_kind_group(kind: str, summary: str) -> click.Group:
    """The `engine` or `host` group: list, show and add profiles of that kind (table serving_profiles)."""

    @cli.group(kind, help=summary)
    def group():
        pass

    @group.command("list", help=f"List the {kind} profiles as NAME@VERSION (a plain NAME means its highest version).")
    @db_options
    def list_command(db_url, lock_timeout):
        from registry.serving.profiles import list_profiles

        print_rows([kind, "description", "origin"], read_catalog(db_url, lock_timeout, list_profiles, kind), "table")

    article = "an" if kind[0] in "aeiou" else "a"

    @group.command("show", help=f"Show {article} {kind} profile (NAME or NAME@VERSION) as YAML.")
    @click.argument("name")
    @db_options
    def show_command(name, db_url, lock_timeout):
        from registry.serving.profiles import describe_profile

        click.echo(read_catalog(db_url, lock_timeout, describe_profile, kind, name).rstrip())

    @group.command("add", help=f"Add {kind} profiles from a YAML file in the format of registry/data/"
                               f"{'engines' if kind == 'engine' else 'hosts'}.yaml"
                               f"{' (what measure-host writes)' if kind == 'host' else ''}. The file is checked "
                               "whole (keys, names, every figure in its range; a bad one is named with its file "
                               "and line) and nothing is written if any entry is refused; a shipped NAME@VERSION "
                               "cannot be replaced (give yours a new version or name).")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @db_options
    def add_command(path, db_url, lock_timeout):
        from registry.serving.profiles import add_profile_file, read_profile_file

        read_profile_file(path, kind)  # a malformed file is refused before the registry is opened (or created)
        with open_registry(db_url, lock_timeout, create=True) as registry:
            added = add_profile_file(registry, path, kind)
        click.echo(f"{kind}: {', '.join(p.label for p in added)} added")

    return group


engine_group = _profile_kind_group(
    "engine", "Serving engine profiles: how an engine schedules a step (chunked-prefill or prefill-first), pads "
              "decode batches to captured CUDA graphs and overlaps its host work (registry/data/engines.yaml).")
host_group = _profile_kind_group(
    "host", "Host profiles: what each host piece of a serving engine costs on one CPU (scheduler, input "
            "preparation, sampler, logits processors, detokenization, page preprocessing), measured by "
            "measure-host.")


def main() -> None:
    run_and_exit(cli, "dsocr-registry")
