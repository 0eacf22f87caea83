"""`python -m analyzer`: the seed's DeepSeekOCRAnalyticRequest on the command line."""

from __future__ import annotations

import pathlib

import click

from registry.interfaces.entry import run_and_exit


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
    from analyzer.report import format_for_path, write_report
    from analyzer.summary import format_summary
    from registry.interfaces.contract import DeepSeekOCRAnalyticRequest, run_request

    if device not in ("cpu", "meta"):
        raise click.UsageError(f"--device {device}: the analytic model runs on the CPU (cpu or meta)")
    if out is not None:
        format_for_path(out)
    request = DeepSeekOCRAnalyticRequest(model_id=model_id, workload_profile_id=workload_profile_id,
                                         profile_run_id=profile_run_id, force_rebuild=force_rebuild)
    registry = None
    if db_url:
        from registry.store.db import Registry

        registry = Registry(db_url)
        registry.ensure_schema(auto_create=True)
    try:
        report, reused = run_request(request, registry)
    finally:
        if registry is not None:
            registry.dispose()
    if out is not None:
        write_report(report, out)
    click.echo(format_summary(report))
    origin = " (reused from the registry)" if reused else ""
    click.echo(f"report {report.report_id}{origin}" + (f" -> {out}" if out else ""))


def main() -> None:
    run_and_exit(analyzer_command, "python -m analyzer")
