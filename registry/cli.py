"""The `dsocr-registry` command line."""

from __future__ import annotations

import pathlib
import sys
import time

import click

from analyzer.errors import AnalyzerInputError
from analyzer.report import ReportFormatError
from registry.db import RegistryError

EXIT_USAGE = 2


class CliError(click.ClickException):
    """One line on stderr, a non-zero exit."""

    exit_code = EXIT_USAGE


def _fail(message: str, code: int = EXIT_USAGE, prog_name: str = "dsocr-registry") -> None:
    click.echo(f"{prog_name}: error: {message}", err=True)
    sys.exit(code)


def run_cli(command: click.Command, args=None, prog_name: str = "dsocr-registry") -> None:
    """Run a click command so that any bad input ends in exactly one line on stderr."""

    def fail(message: str, code: int = EXIT_USAGE) -> None:
        _fail(message, code, prog_name)

    try:
        command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(exc.format_message().replace("\n", " ") + hint)
    except click.ClickException as exc:
        fail(exc.format_message().replace("\n", " "), exc.exit_code)
    except (AnalyzerInputError, ReportFormatError, RegistryError) as exc:
        fail(str(exc))
    except click.exceptions.Abort:
        fail("aborted", 1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dsocr-registry", prog_name="dsocr-registry")
def cli() -> None:
    """Analytic cost model of DeepSeek-OCR and DeepSeek-OCR-2, stored in a SQL registry.

    \b
    analyze   build an AnalyticModelReport for a workload (no GPU, no weights)
    ingest    store reports as rows in the registry (DuckDB file or PostgreSQL)
    sql       run a query against the registry's tables and views
    export    write every table and view as Parquet
    snapshot  write a consistent read-only DuckDB copy for BI tools
    db        schema revisions: upgrade, current, history
    whatif    price workloads on GPUs and runtimes from a scenario file
    hardware  the GPU catalog: list, show, add
    runtime   the runtime profiles: list, show, add
    compare   measured vs predicted for a measurement file
    calibrate fit a runtime profile to stored measurements
    measure   time the real model on a CUDA GPU and write a measurement file
    summary   the summary contract of a report: predicted (and measured) time, top modules
    report    a stored report, rebuilt from its rows

    The registry is ./dsocr-registry.duckdb unless --db or DSOCR_REGISTRY_URL names another
    (a file path, or postgresql://host/dbname).
    """


# -- analyze ----------------------------------------------------------------------------------------------------

def workload_options(func):
    """Options that describe a workload; shared by the commands that analyze."""
    options = [
        click.option("--workload", "-w", "workload_profile", metavar="PROFILE",
                     help="Named workload profile (e.g. dsocr-standard-v1) or a YAML/JSON profile file; "
                          "the options below override its fields."),
        click.option("--variant", type=str, help="Model variant: v1 (DeepSeek-OCR) or ocr2 (DeepSeek-OCR-2)."),
        click.option("--mode", type=str,
                     help="Resolution mode. v1: tiny, small, base, large, gundam, gundam-m. ocr2: base, gundam."),
        click.option("--page", type=str, metavar="WxH", help="Page size in pixels (default 1654x2339, A4 at 200 dpi)."),
        click.option("--tiles", type=str, metavar="CxR",
                     help="Force a tile grid (columns x rows) instead of choosing it from the page."),
        click.option("--min-tiles", type=int, help="Smallest tile count the grid rule considers (default 2)."),
        click.option("--max-tiles", type=int, help="Largest tile count (default 9 for v1, 6 for ocr2)."),
        click.option("--prompt-tokens", type=int, help="Text tokens of the prompt besides the image (default 9)."),
        click.option("--new-tokens", type=int, help="Output tokens generated (default 512)."),
        click.option("--batch", type=int, help="Pages per batch (default 1)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_workload(workload_profile, variant, mode, page, tiles, min_tiles, max_tiles, prompt_tokens, new_tokens,
                   batch):
    from analyzer.workload import Workload, load_profile, parse_page, parse_tiles

    page_size = parse_page(page) if page is not None else None
    overrides = dict(variant=variant, mode=mode, min_tiles=min_tiles, max_tiles=max_tiles,
                     tile_grid=parse_tiles(tiles) if tiles is not None else None, prompt_text_tokens=prompt_tokens,
                     new_tokens=new_tokens, batch=batch)
    if page_size is not None:
        overrides.update(page_width_px=page_size[0], page_height_px=page_size[1])
    if workload_profile:
        return load_profile(workload_profile, **overrides)
    if variant is None or mode is None:
        raise click.UsageError("give --workload PROFILE, or --variant and --mode")
    defaults = dict(page_width_px=1654, page_height_px=2339, prompt_text_tokens=9, new_tokens=512, batch=1)
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    return Workload(**defaults)


@cli.command()
@workload_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Write the report here: .json, .yaml or .yml.")
@click.option("--quiet", "-q", is_flag=True, help="Print no summary.")
def analyze(workload_profile, variant, mode, page, tiles, min_tiles, max_tiles, prompt_tokens, new_tokens, batch,
            out, quiet):
    """Build the analytic model of one workload and write an AnalyticModelReport.

    \b
    Examples:
      dsocr-registry analyze --workload dsocr-standard-v1 --out report.json
      dsocr-registry analyze --variant ocr2 --mode gundam --page 1654x2339 --new-tokens 1024 --batch 8 --out r.yaml
    """
    from analyzer.report import format_for_path, write_report

    if out is not None:
        format_for_path(out)  # reject an unknown extension before any work
    workload = build_workload(workload_profile, variant, mode, page, tiles, min_tiles, max_tiles, prompt_tokens,
                              new_tokens, batch)
    from analyzer.analysis import analyze as run_analysis
    from analyzer.summary import format_summary

    started = time.perf_counter()
    report = run_analysis(workload)
    elapsed = time.perf_counter() - started
    if out is not None:
        write_report(report, out)
    if not quiet:
        click.echo(format_summary(report))
        where = f" -> {out}" if out is not None else ""
        click.echo(f"report {report.report_id}{where} ({elapsed:.2f} s)")


# -- registry commands ------------------------------------------------------------------------------------------

def db_options(func):
    options = [
        click.option("--db", "db_url", envvar="DSOCR_REGISTRY_URL", metavar="URL_OR_PATH",
                     help="DuckDB file or postgresql:// URL [env DSOCR_REGISTRY_URL; default ./dsocr-registry.duckdb]."),
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     metavar="SECONDS", help="How long to retry a DuckDB file locked by another process."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def open_registry(db_url, lock_timeout, create: bool = False, check: bool = True):
    """The registry named by --db; only commands that write (`create`) make a new DuckDB file."""
    from registry.db import Registry

    registry = Registry(db_url, lock_timeout_s=lock_timeout)
    if check:
        registry.ensure_schema(auto_create=create)
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
def ingest(paths, db_url, lock_timeout, force, progress, measurement_file, hardware, runtime_name):
    """Store reports (JSON or YAML files, directories, globs, or - for stdin) as rows in the registry.

    Each report goes in one transaction (all its rows or none); a report already present (same content hash)
    is skipped unless --force. A bad file gets one line naming it and the problem; the others still go in.

    \b
    Examples:
      dsocr-registry ingest report.json more-reports/ 'runs/*.yaml'
      dsocr-registry analyze -w dsocr-standard-v1 -o /dev/stdout -q | dsocr-registry ingest -
      dsocr-registry ingest --db postgresql://127.0.0.1/test reports/
    """
    from registry.db import describe
    from registry.ingest import discover, ingest_sources, summarize

    if measurement_file is not None:
        if paths:
            raise click.UsageError("give report paths or --measurements FILE, not both")
        _ingest_measurements(measurement_file, hardware, runtime_name, db_url, lock_timeout, progress)
        return
    if not paths:
        raise click.UsageError("give at least one report path (or - for stdin), or --measurements FILE")
    registry = open_registry(db_url, lock_timeout, create=True)
    sources = discover(list(paths))
    show_progress = progress if progress is not None else (len(sources) > 1 and sys.stderr.isatty())
    started = time.perf_counter()
    try:
        outcomes = ingest_sources(registry, sources, force=force, progress=show_progress)
    finally:
        registry.dispose()
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        if outcome.status == "failed":
            click.echo(f"{outcome.source}: {outcome.message}", err=True)
        elif outcome.status == "skipped":
            click.echo(f"{outcome.source}: {outcome.report_id} already present, skipped", err=True)
    click.echo(summarize(outcomes, elapsed, describe(registry.url)))
    if any(o.status == "failed" for o in outcomes):
        sys.exit(1)


def _ingest_measurements(path, hardware, runtime_name, db_url, lock_timeout, progress):
    from registry.measurements import ingest_measurements

    if not hardware or not runtime_name:
        raise click.UsageError("--measurements needs --hardware and --runtime")
    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        set_id, new, rows = ingest_measurements(registry, path, hardware, runtime_name,
                                                progress=bool(progress) or (progress is None and sys.stderr.isatty()))
    finally:
        registry.dispose()
    compared = sum(1 for r in rows if r.compared and r.workload is not None)
    state = "stored" if new else "already present"
    click.echo(f"measurements: {path} {state} as set {set_id}: {len(rows)} rows, {compared} timed rows to compare")
    return set_id


def _format_value(value):
    import datetime
    import decimal

    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()
    return "" if value is None else str(value)


def print_rows(columns: list[str], rows: list[tuple], fmt: str) -> None:
    import csv
    import datetime
    import decimal
    import json

    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    elif fmt == "json":
        def plain(value):
            if isinstance(value, decimal.Decimal):
                return int(value) if value == value.to_integral_value() else float(value)
            if isinstance(value, (datetime.datetime, datetime.date)):
                return value.isoformat()
            return value

        click.echo(json.dumps([{c: plain(v) for c, v in zip(columns, row)} for row in rows], indent=1))
    else:
        cells = [[_format_value(v) for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        numeric = [all(isinstance(row[i], (int, float, decimal.Decimal)) or row[i] is None for row in rows)
                   for i in range(len(columns))]

        def line(values):
            return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

        click.echo(line(columns))
        click.echo("  ".join("-" * w for w in widths))
        for row in cells:
            click.echo(line(row))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


@cli.command()
@click.argument("query")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def sql(query, db_url, lock_timeout, fmt):
    """Run one SQL query against the registry and print its rows.

    \b
    Views: v_reports, v_module_tree, v_stage_totals, v_category_breakdown, v_module_hotspots.
    Example:
      dsocr-registry sql "SELECT stage, view_kind, predicted_flops FROM v_stage_totals" --format csv
    """
    import sqlalchemy as sa

    registry = open_registry(db_url, lock_timeout)
    try:
        with registry.begin() as conn:
            try:
                result = conn.execute(sa.text(query))
            except sa.exc.DBAPIError as exc:
                message = str(exc.orig or exc).strip().splitlines()[0]
                raise RegistryError(f"query failed: {message}") from None
            if not result.returns_rows:
                raise RegistryError("the query returned no rows to print (sql runs queries, not changes)")
            columns = list(result.keys())
            rows = [tuple(r) for r in result.all()]
            conn.rollback()  # queries only: nothing a statement changed is kept
    finally:
        registry.dispose()
    print_rows(columns, rows, fmt)


@cli.command()
@click.option("--parquet", "parquet_dir", required=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Folder for <table>.parquet and <view>.parquet files.")
@db_options
def export(parquet_dir, db_url, lock_timeout):
    """Write every table and view as Parquet, read in one consistent transaction."""
    from registry.export import export_parquet

    registry = open_registry(db_url, lock_timeout)
    try:
        written = export_parquet(registry, parquet_dir)
    finally:
        registry.dispose()
    total = sum(rows for _, rows in written)
    click.echo(f"export: {len(written)} files, {total:,} rows -> {parquet_dir}")


@cli.command()
@click.argument("target", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@db_options
def snapshot(target, db_url, lock_timeout):
    """Write a consistent copy of the registry to a new DuckDB file for BI tools.

    Open the copy read-only (e.g. duckdb -readonly TARGET); the registry itself stays free for ingest.
    DuckDB 2.0 files cannot be read by DuckDB 1.5 or older: BI drivers that bundle an old DuckDB need
    `dsocr-registry export --parquet` instead.
    """
    from registry.export import snapshot as write_snapshot

    registry = open_registry(db_url, lock_timeout)
    try:
        copied = write_snapshot(registry, target)
    finally:
        registry.dispose()
    click.echo(f"snapshot: {len(copied)} tables, {sum(n for _, n in copied):,} rows -> {target}")


@cli.group()
def db():
    """Schema revisions of the registry (Alembic)."""


@db.command("upgrade")
@db_options
def db_upgrade(db_url, lock_timeout):
    """Create or upgrade the schema to this code's revision (one transaction)."""
    from registry.db import describe

    registry = open_registry(db_url, lock_timeout, check=False)
    try:
        before, after = registry.upgrade()
    finally:
        registry.dispose()
    if before == after:
        click.echo(f"{describe(registry.url)} is at revision {after} (current)")
    else:
        click.echo(f"{describe(registry.url)}: upgraded {before or '(empty)'} -> {after}")


@db.command("current")
@db_options
def db_current(db_url, lock_timeout):
    """Print the database's revision and the code's."""
    from registry.db import describe, duckdb_path

    registry = open_registry(db_url, lock_timeout, check=False)
    path = duckdb_path(registry.url)
    if path is not None and not path.exists():
        raise RegistryError(f"{path} does not exist")
    try:
        with registry.begin() as conn:
            current = registry.current_revision(conn)
        head = registry.head_revision()
    finally:
        registry.dispose()
    state = "current" if current == head else "needs: dsocr-registry db upgrade"
    click.echo(f"{describe(registry.url)}: revision {current or '(empty)'}; code {head} ({state})")


@db.command("history")
def db_history():
    """List the schema revisions, newest first."""
    from registry.db import revision_history

    for revision, down, doc in revision_history():
        click.echo(f"{down or '<base>'} -> {revision}: {doc}")


# -- what-if ----------------------------------------------------------------------------------------------------

_WHATIF_TABLE = [("hardware", "hardware", "{}"), ("runtime", "runtime", "{}"), ("variant", "variant", "{}"),
                 ("mode", "mode", "{}"), ("tiles", "tiles", "{}"), ("batch", "batch", "{}"),
                 ("new_tokens", "new", "{}"), ("page_latency_s", "page s", "{:.2f}"),
                 ("pages_per_s", "pages/s", "{:.2f}"), ("pages_per_gpu_day", "pages/GPU-day", "{:,.0f}"),
                 ("gpu_seconds_per_page", "GPU-s/page", "{:.3f}"), ("gpus_needed", "GPUs", "{:.0f}"),
                 ("fits_in_memory", "fits", "{}"), ("max_batch_in_memory", "max batch", "{:.0f}")]


def _cell(value, fmt):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


@cli.command()
@click.option("--scenario", "-s", "scenario_path", required=True, type=click.Path(dir_okay=False),
              help="Scenario YAML file (see queries/examples/capacity.yaml and registry/data/scenario.schema.json).")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Also draw a roofline and the page latency by stage to this PNG.")
@click.option("--progress/--no-progress", default=None, help="Progress bar while analyzing new workloads.")
def whatif(scenario_path, db_url, lock_timeout, fmt, plot, progress):
    """Price a scenario: workloads x GPUs x runtimes, sorted by GPU-seconds per page.

    Workloads not yet in the registry are analyzed and ingested first (reused on later runs); the scenario and
    its points are recorded, and every number comes from the views v_point_summary and v_point_stage_time.

    \b
    A scenario file:
      name: capacity-1m-pages
      base: {profile: dsocr-standard-v1}          # or variant/mode/page/new_tokens/batch fields
      sweep: {hardware: [h100-sxm, h200], runtime: [hf-eager, vllm], mode: [base, gundam], batch: [1, 16]}
      overrides: {peak_tflops: 800, memory_tb_per_s: 3.0, memory_gb: 80, efficiency_scale: 0.9}
      target: {pages_per_day: 1000000, page_latency_s: 30}
    """
    from registry.whatif import load_scenario, read_stage_times, run_scenario

    if plot is not None and plot.suffix.lower() != ".png":
        raise click.UsageError(f"--plot {plot}: the plot is written as PNG (use a .png name)")
    scenario = load_scenario(scenario_path)
    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        from registry.whatif import expand_workloads

        expand_workloads(scenario)  # validate before anything is written
        show = progress if progress is not None else sys.stderr.isatty()
        scenario_id, points = run_scenario(registry, scenario, progress=show)
        stage_times = read_stage_times(registry, scenario_id) if plot is not None else None
        if plot is not None:
            from registry.plots import plot_scenario

            plot_scenario(registry, scenario_id, points, stage_times, plot)
    finally:
        registry.dispose()
    if fmt == "json":
        import json

        click.echo(json.dumps({"scenario_id": scenario_id, "name": scenario.name, "points": points}, indent=1,
                              default=str))
        return
    if fmt == "csv":
        from registry.whatif import SUMMARY_COLUMNS

        print_rows(SUMMARY_COLUMNS, [tuple(p[c] for c in SUMMARY_COLUMNS) for p in points], "csv")
        return
    header = [title for _, title, _ in _WHATIF_TABLE]
    cells = [[_cell(p[key], fmt_) for key, _, fmt_ in _WHATIF_TABLE] for p in points]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    click.echo(f"scenario {scenario.name} (id {scenario_id}): {len(points)} points; those that fit in memory first, "
               f"then by GPU-seconds per page")
    click.echo("  ".join(h.rjust(w) if i >= 5 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in cells:
        click.echo("  ".join(c.rjust(w) if i >= 5 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    feasible = [p for p in points if p["fits_in_memory"]]
    if feasible:
        best = feasible[0]
        gpus = f"{best['gpus_needed']:.0f} GPUs for the target, " if best.get("gpus_needed") is not None else ""
        click.echo(f"cheapest that fits: {best['hardware']} / {best['runtime']} / {best['mode']} at batch "
                   f"{best['batch']}: {best['gpu_seconds_per_page']:.3f} GPU-s per page, {gpus}"
                   f"{best['page_latency_s']:.2f} s per batch")
    else:
        click.echo("no point fits in its GPU's memory")
    if plot is not None:
        click.echo(f"plot -> {plot}")


@cli.command()
@click.option("--measurements", "measurement_file", required=True, type=click.Path(dir_okay=False),
              help="Measurement file (JSON {env, rows}); stored first if the registry lacks it.")
@click.option("--hardware", "hardware_name", required=True, help="GPU the measurements were taken on.")
@click.option("--runtime", "runtime_name", required=True, help="Runtime profile (NAME or NAME@VERSION).")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def compare(measurement_file, hardware_name, runtime_name, db_url, lock_timeout, fmt):
    """Measured vs predicted for every timed row of a measurement file.

    Each row is matched to the workload and stage it times (analyzed if the registry lacks it) and priced on
    the same GPU and runtime by the views v_predicted_vs_measured and v_prediction_error_summary.
    """
    import json

    from registry.measurements import COMPARE_COLUMNS, ingest_measurements
    from registry.measurements import compare as compare_rows

    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        set_id, _, _ = ingest_measurements(registry, measurement_file, hardware_name, runtime_name,
                                           progress=sys.stderr.isatty())
    finally:
        registry.dispose()
    registry = open_registry(db_url, lock_timeout)
    try:
        result = compare_rows(registry, set_id)
    finally:
        registry.dispose()
    if fmt == "json":
        click.echo(json.dumps(result, indent=1, default=str))
        return
    rows = [tuple(r[c] for c in COMPARE_COLUMNS) for r in result["rows"]]
    print_rows(COMPARE_COLUMNS, rows, fmt)
    if fmt == "table":
        summary = result["summary"]
        for kind, s in sorted(summary["by_kind"].items()):
            click.echo(f"{kind:<18} {s['rows']:>3} rows  median APE {s['median_ape_pct']:6.1f}%  "
                       f"mean APE {s['mape_pct']:6.1f}%  max {s['max_ape_pct']:6.1f}%")
        if summary["rows"]:
            click.echo(f"{'all':<18} {summary['rows']:>3} rows  median APE {summary['median_ape_pct']:6.1f}%  "
                       f"mean APE {summary['mape_pct']:6.1f}%  max {summary['max_ape_pct']:6.1f}%")


@cli.command()
@click.option("--hardware", "hardware_name", required=True, help="GPU whose measurements to fit.")
@click.option("--runtime", "runtime_name", required=True, help="Runtime profile to start from (NAME or NAME@VERSION).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Write the calibrated profile here (YAML, loadable by `runtime add`).")
@click.option("--name", "profile_name", help="Name of the calibrated profile (default: the runtime's name; "
                                             "stored as its next version).")
@db_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def calibrate(hardware_name, runtime_name, out, profile_name, db_url, lock_timeout, fmt):
    """Fit a runtime profile to the stored measurements of one GPU x runtime (least squares).

    Fits matmul/attention/conv compute efficiency, a bandwidth-efficiency scale, the per-kernel launch cost and the
    host time per stage call and per decode step; reports the error before and after on the rows used and on rows
    held out (each kind of measurement predicted by a fit to the other kinds); stores the result as a new profile
    version and writes it to --out.
    """
    import json

    import yaml

    from registry import calibrate as cal
    from registry.catalog import parse_runtimes, upsert_runtime
    from registry.measurements import compare as compare_rows
    from registry.measurements import resolve

    if out.suffix.lower() not in (".yaml", ".yml"):
        raise click.UsageError(f"--out {out}: the profile is written as YAML (.yaml or .yml)")
    registry = open_registry(db_url, lock_timeout)
    try:
        with registry.begin() as conn:
            hardware_id, runtime_id, runtime_label = resolve(conn, hardware_name, runtime_name)
        rows = cal.load_rows(registry, hardware_id, runtime_id)
        base = cal.Profile.load(registry, runtime_id)
        result = cal.calibrate(rows, base)
        name = (profile_name or runtime_label.split("@")[0]).strip().lower()
        with registry.begin() as conn:
            version = 1 + (conn.execute(sa_text("SELECT COALESCE(MAX(version), 0) FROM runtime_profiles "
                                                "WHERE name = :n"), {"n": name}).scalar() or 0)
        document = cal.profile_document(
            name, version, result["profile"], f"{runtime_label} calibrated on {hardware_name}",
            cal.describe_fit(result, rows, hardware_name, runtime_label))
        profile = parse_runtimes(document, str(out))[0]
        with registry.begin() as conn:
            new_runtime_id = upsert_runtime(conn, profile, "calibrated")
        new_sets = cal.copy_sets_for_profile(registry, hardware_id, runtime_id, new_runtime_id)
        after_views = [compare_rows(registry, s)["summary"] for s in new_sets]
    finally:
        registry.dispose()
    import os
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump([document], handle, sort_keys=False, width=110)
    os.replace(tmp, out)
    if fmt == "json":
        click.echo(json.dumps({"profile": f"{name}@{version}", "parameters": result["parameters"],
                               "before": result["before"], "after": result["after"],
                               "held_out": result["held_out"], "after_from_views": after_views}, indent=1))
        return
    click.echo(f"calibrated {runtime_label} on {hardware_name} from {len(rows.measured_s)} timed rows -> "
               f"{name}@{version} (stored) and {out}")
    for key, value in result["parameters"].items():
        click.echo(f"  {key:<32} {value:.6g}")
    click.echo(f"{'kind':<18}{'rows':>5}{'MAPE before':>13}{'MAPE after':>12}{'MAPE held out':>15}")
    for kind in result["before"]:
        b, a, h = result["before"][kind], result["after"][kind], result["held_out"][kind]
        held = f"{h['mape_pct']:.1f}%" if h["mape_pct"] is not None else "-"
        click.echo(f"{kind:<18}{b['rows']:>5}{b['mape_pct']:>12.1f}%{a['mape_pct']:>11.1f}%{held:>15}")


@cli.command()
@click.option("--variant", required=True, help="v1 or ocr2.")
@click.option("--device", default="cuda:0", show_default=True, help="CUDA device to time on.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Measurement file to write (JSON {env, rows}).")
@click.option("--reps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed repetitions per row.")
@click.option("--quick", is_flag=True, help="Fewer sizes and batches (a few minutes on one GPU).")
def measure(variant, device, out, reps, quick):
    """Time the real model on a CUDA GPU (random bf16 weights) and write a measurement file.

    Then: dsocr-registry compare --measurements OUT --hardware GPU --runtime hf-eager
    """
    from registry.measure import measure as run_measure

    count = run_measure(variant, device, out, reps=reps, quick=quick)
    click.echo(f"measure: {count} rows -> {out}")


def _dump(data, fmt: str) -> str:
    import json

    import yaml

    if fmt == "json":
        return json.dumps(data, indent=1)
    return yaml.safe_dump(data, sort_keys=False, width=110).rstrip()


@cli.command()
@click.argument("report_ref", metavar="REPORT_ID_OR_FILE")
@db_options
@click.option("--hardware", "hardware_name", default="h200", show_default=True, help="GPU to price on.")
@click.option("--runtime", "runtime_name", default="hf-eager-h200", show_default=True, help="Runtime profile.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Modules to list.")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json", show_default=True)
def summary(report_ref, db_url, lock_timeout, hardware_name, runtime_name, top, fmt):
    """Print the DeepSeekOCRAnalyticReportSummary of a stored report (by id) or of a report file.

    A file is ingested first (idempotent). The time is priced by the registry's views on --hardware under
    --runtime; the measured time and the ratio are filled when the registry holds an end-to-end measurement of the
    same workload on that GPU and runtime.
    """
    from registry.contract import _plain, summarize

    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        path = pathlib.Path(report_ref)
        if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
            from analyzer.report import load_report
            from registry.ingest import write_report

            try:
                report = load_report(path)
            except OSError as exc:
                raise RegistryError(f"{report_ref}: cannot read: {exc.strerror or exc}") from None
            write_report(registry, report, str(path))
            report_ref = report.report_id
        result = summarize(registry, report_ref, hardware_name, runtime_name, top=top)
    finally:
        registry.dispose()
    click.echo(_dump(_plain(result), fmt))


@cli.command()
@click.argument("report_id")
@db_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Write to a file (.json/.yaml) instead of standard output.")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json", show_default=True)
def report(report_id, db_url, lock_timeout, out, fmt):
    """Print a stored AnalyticModelReport, rebuilt from its rows (checked against its content hash)."""
    from analyzer.report import dumps, format_for_path, write_report
    from registry.stored import load_stored_report

    if out is not None:
        format_for_path(out)
    registry = open_registry(db_url, lock_timeout)
    try:
        stored = load_stored_report(registry, report_id)
    finally:
        registry.dispose()
    if out is not None:
        write_report(stored, out)
        click.echo(f"report {report_id} -> {out}")
    else:
        click.echo(dumps(stored, fmt).rstrip())


def sa_text(query: str):
    import sqlalchemy as sa

    return sa.text(query)


def query_registry(db_url, lock_timeout, query: str, params: dict | None = None) -> list[tuple]:
    """Rows of one query against the registry (created at the current revision if it is a new file)."""
    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        with registry.begin() as conn:
            return [tuple(r) for r in conn.execute(sa_text(query), params or {}).all()]
    finally:
        registry.dispose()


@cli.group()
def hardware():
    """The GPU catalog (decimal units: 1 TB/s = 1e12 bytes/s, 1 GB = 1e9 bytes)."""


@hardware.command("list")
@db_options
def hardware_list(db_url, lock_timeout):
    """List the GPUs the registry knows."""
    rows = query_registry(db_url, lock_timeout,
                          "SELECT name, display_name, peak_bf16_flops_per_s / 1e12, memory_bandwidth_bytes_per_s / 1e12, "
                          "memory_bytes / 1e9, origin FROM hardware ORDER BY name")
    print_rows(["name", "display_name", "bf16_tflops", "memory_tb_per_s", "memory_gb", "origin"], rows, "table")


@hardware.command("show")
@click.argument("name")
@db_options
def hardware_show(name, db_url, lock_timeout):
    """Show one GPU, with the source of its figures."""
    from registry.catalog import resolve_hardware

    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        with registry.begin() as conn:
            hardware_id, _ = resolve_hardware(conn, name)
            row = conn.execute(sa_text("SELECT name, display_name, peak_bf16_flops_per_s, "
                                       "memory_bandwidth_bytes_per_s, memory_bytes, source, origin FROM hardware "
                                       "WHERE id = :i"), {"i": hardware_id}).one()
    finally:
        registry.dispose()
    click.echo(f"{row[0]}: {row[1]}\n  dense bf16      {row[2] / 1e12:,.1f} TFLOP/s\n"
               f"  memory          {row[4] / 1e9:,.0f} GB ({row[4]:,} bytes)\n"
               f"  bandwidth       {row[3] / 1e12:,.3f} TB/s (1 TB = 1e12 bytes)\n"
               f"  source          {row[5]}\n  origin          {row[6]}")


@hardware.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@db_options
def hardware_add(path, db_url, lock_timeout):
    """Add or update GPUs from a YAML file with the catalog's keys (name, dense_bf16_tflops, ...)."""
    from registry.catalog import parse_hardware, upsert_hardware

    rows = _add_from_file(path, parse_hardware, upsert_hardware, db_url, lock_timeout)
    click.echo(f"hardware: {len(rows)} added or updated ({', '.join(r['name'] for r in rows)})")


def _add_from_file(path, parse, upsert, db_url, lock_timeout) -> list[dict]:
    """Entries of a catalog file, validated whole, then upserted in one transaction as the user's own."""
    from registry.catalog import _read

    entries = parse(_read(pathlib.Path(path), path), path)
    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        with registry.begin() as conn:
            for entry in entries:
                upsert(conn, entry, "user")
    finally:
        registry.dispose()
    return entries


@cli.group()
def runtime():
    """Runtime profiles: per-category efficiency, launch cost, host overhead, fused categories."""


@runtime.command("list")
@db_options
def runtime_list(db_url, lock_timeout):
    """List the runtime profiles."""
    rows = query_registry(db_url, lock_timeout,
                          "SELECT name, version, kernel_launch_s * 1e6, stage_call_overhead_s * 1e3, "
                          "decode_step_overhead_s * 1e3, fused_bytes_factor, origin FROM runtime_profiles "
                          "ORDER BY name, version")
    print_rows(["name", "version", "launch_us", "call_overhead_ms", "decode_step_ms", "fused_bytes_factor",
                "origin"], rows, "table")


@runtime.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@db_options
def runtime_add(path, db_url, lock_timeout):
    """Add or update runtime profiles from a YAML file in the format of `calibrate --out` / runtimes.yaml."""
    from registry.catalog import parse_runtimes, upsert_runtime

    profiles = _add_from_file(path, parse_runtimes, upsert_runtime, db_url, lock_timeout)
    labels = [f"{p['name']}@{p['version']}" for p in profiles]
    click.echo(f"runtime: {', '.join(labels)} added or updated")


@runtime.command("show")
@click.argument("name")
@db_options
def runtime_show(name, db_url, lock_timeout):
    """Show a runtime profile (NAME or NAME@VERSION) with its per-category efficiencies."""
    from registry.catalog import resolve_runtime

    registry = open_registry(db_url, lock_timeout, create=True)
    try:
        with registry.begin() as conn:
            runtime_id, _, _ = resolve_runtime(conn, name)
            profile = conn.execute(sa_text(
                "SELECT id, name, version, description, source FROM runtime_profiles WHERE id = :i"),
                {"i": runtime_id}).one()
            categories = conn.execute(sa_text(
                "SELECT c.name, rc.compute_efficiency, rc.bandwidth_efficiency, rc.fused FROM "
                "runtime_profile_categories rc JOIN operator_categories c ON c.id = rc.category_id "
                "WHERE rc.runtime_profile_id = :p ORDER BY c.id"), {"p": runtime_id}).all()
    finally:
        registry.dispose()
    click.echo(f"{profile[1]}@{profile[2]}: {profile[3]}\nsource: {profile[4]}")
    print_rows(["category", "compute_efficiency", "bandwidth_efficiency", "fused"], [tuple(c) for c in categories],
               "table")


def _exit_without_teardown(code: int) -> None:
    """Leave without interpreter teardown: all work is done and flushed, and DuckDB's bindings print spurious
    reference-leak reports when they are torn down in a process that also loaded torch."""
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _run_and_exit(command: click.Command, prog_name: str) -> None:
    try:
        run_cli(command, prog_name=prog_name)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        _exit_without_teardown(code)
    _exit_without_teardown(0)


def main() -> None:
    _run_and_exit(cli, "dsocr-registry")


# -- the seed's entry point: python -m analyzer ----------------------------------------------------------------

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--mode", "run_mode", type=click.Choice(["analytic"]), default="analytic", show_default=True,
              help="Only the analytic model exists.")
@click.option("--model", "model_id", required=True, help="deepseek-ai/DeepSeek-OCR or deepseek-ai/DeepSeek-OCR-2.")
@click.option("--device", default="cpu", show_default=True,
              help="Where the analysis runs; it needs no GPU (the model lives on the meta device).")
@click.option("--workload-profile-id", required=True, help="Named workload profile, e.g. dsocr-standard-v1.")
@click.option("--profile-run-id", help="Free-form id of the run that asked (kept in the request).")
@click.option("--force-rebuild", is_flag=True, help="Analyze again even if the registry holds this report.")
@click.option("--db", "db_url", envvar="DSOCR_REGISTRY_URL", metavar="URL_OR_PATH",
              help="Registry to reuse reports from and store them in [env DSOCR_REGISTRY_URL; default: none].")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Write the report here (.json/.yaml); default: print the summary only.")
def analyzer_command(run_mode, model_id, device, workload_profile_id, profile_run_id, force_rebuild, db_url, out):
    """Analyze a model for a workload profile (the seed's DeepSeekOCRAnalyticRequest on the command line).

    With --db, a report already in the registry for the same request is reused unless --force-rebuild.
    """
    from analyzer.analysis import analyze as run_analysis
    from analyzer.report import format_for_path, write_report
    from analyzer.summary import format_summary
    from analyzer.workload import load_profile
    from registry.contract import DeepSeekOCRAnalyticRequest

    if device not in ("cpu", "meta"):
        raise click.UsageError(f"--device {device}: the analytic model runs on the CPU (cpu or meta)")
    if out is not None:
        format_for_path(out)
    request = DeepSeekOCRAnalyticRequest(model_id=model_id, workload_profile_id=workload_profile_id,
                                         profile_run_id=profile_run_id, force_rebuild=force_rebuild)
    workload = load_profile(request.workload_profile_id, variant=request.model_variant)
    report, reused = None, False
    registry = None
    if db_url:
        from registry.stored import load_stored_report
        from registry.whatif import find_report

        registry = open_registry(db_url, 30.0, create=True)
        if not request.force_rebuild:
            with registry.begin() as conn:
                pk = find_report(conn, workload)
                stored_id = conn.execute(sa_text("SELECT report_id FROM reports WHERE id = :p"),
                                         {"p": pk}).scalar() if pk is not None else None
            if stored_id is not None:
                report, reused = load_stored_report(registry, stored_id), True
    try:
        if report is None:
            report = run_analysis(workload)
            if registry is not None:
                from registry.ingest import write_report as store

                store(registry, report, f"python -m analyzer {request.workload_profile_id}",
                      force=request.force_rebuild)
    finally:
        if registry is not None:
            registry.dispose()
    if out is not None:
        write_report(report, out)
    click.echo(format_summary(report))
    origin = " (reused from the registry)" if reused else ""
    click.echo(f"report {report.report_id}{origin}" + (f" -> {out}" if out else ""))


def analyzer_entry() -> None:
    _run_and_exit(analyzer_command, "python -m analyzer")
