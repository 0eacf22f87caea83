"""The `dsocr-registry` command line."""

from __future__ import annotations

import pathlib
import sys
import time

import click

from analyzer.errors import AnalyzerInputError
from analyzer.report import ReportFormatError

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
    except (AnalyzerInputError, ReportFormatError) as exc:
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


def main() -> None:
    run_cli(cli)


# -- the seed's entry point: python -m analyzer ----------------------------------------------------------------

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--mode", "run_mode", type=click.Choice(["analytic"]), default="analytic", show_default=True,
              help="Only the analytic model exists.")
@click.option("--model", "model_id", required=True, help="deepseek-ai/DeepSeek-OCR or deepseek-ai/DeepSeek-OCR-2.")
@click.option("--device", default="cpu", show_default=True,
              help="Where the analysis runs; it needs no GPU (the model lives on the meta device).")
@click.option("--workload-profile-id", required=True, help="Named workload profile, e.g. dsocr-standard-v1.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Write the report here (.json/.yaml); default: print the summary only.")
def analyzer_command(run_mode, model_id, device, workload_profile_id, out):
    """Analyze a model for a workload profile (seed-compatible entry point)."""
    from analyzer.analysis import analyze as run_analysis
    from analyzer.architecture import variant_for_model_id
    from analyzer.report import format_for_path, write_report
    from analyzer.summary import format_summary
    from analyzer.workload import load_profile

    if device not in ("cpu", "meta"):
        raise click.UsageError(f"--device {device}: the analytic model runs on the CPU (cpu or meta)")
    if out is not None:
        format_for_path(out)
    variant = variant_for_model_id(model_id)
    workload = load_profile(workload_profile_id, variant=variant)
    report = run_analysis(workload)
    if out is not None:
        write_report(report, out)
    click.echo(format_summary(report))
    click.echo(f"report {report.report_id}" + (f" -> {out}" if out else ""))


def analyzer_entry() -> None:
    run_cli(analyzer_command, prog_name="python -m analyzer")
