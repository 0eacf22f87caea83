"""Project one report's per-module and total time under modified parameters.

    python scripts/analytical/dsocr_analytic_what_if.py --report report.json --peak-tflops 989 --batch-scale 8

The report is priced by the registry's own SQL views in a private in-memory registry (no file is written); with
--batch-scale the report's workload is analyzed again at batch x scale first.
"""

from __future__ import annotations

import argparse
import sys


def price(registry, report, args) -> tuple[dict, list[tuple], list[tuple]]:
    """The priced point, its stage times and the top modules by FLOPs, through the registry's views."""
    import sqlalchemy as sa

    from registry.pricing.points import read_stage_breakdown
    from registry.pricing.whatif import Scenario, price_scenario

    w = report.workload
    base = dict(variant=w.variant, mode=w.mode, page=f"{w.page_width_px}x{w.page_height_px}",
                prompt_text_tokens=w.prompt_text_tokens, new_tokens=w.new_tokens)
    if w.tiles_wide:
        base.update(tiles=f"{w.tiles_wide}x{w.tiles_high}")
    overrides = {"peak_tflops": args.peak_tflops, "memory_tb_per_s": args.bandwidth_tb_per_s}
    data = {"name": "what-if", "base": base,
            "sweep": {"hardware": [args.hardware], "runtime": [args.runtime or report.execution.value],
                      "batch": [w.batch * args.batch_scale]},
            "overrides": {k: v for k, v in overrides.items() if v is not None}}
    priced = price_scenario(registry, Scenario(name="what-if", source="(command line)", data=data, lines={}))
    scenario_id, points = priced.scenario_id, priced.points
    point = points[0]
    with registry.begin() as conn:
        modules = conn.execute(sa.text(
            "SELECT m.path, o.stage, SUM(o.flops), SUM(o.bytes_read + o.bytes_written), SUM(o.kernel_launches) "
            "FROM operator_metrics o JOIN modules m ON m.id = o.module_id "
            "JOIN reports r ON r.id = o.report_id WHERE r.report_id = :r "
            "GROUP BY m.path, o.stage ORDER BY SUM(o.flops) DESC LIMIT :n"),
            {"r": point["report_id"], "n": args.top}).all()
    return point, read_stage_breakdown(registry, scenario_id), modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", required=True, help="an AnalyticModelReport (.json/.yaml)")
    parser.add_argument("--hardware", default="h100-sxm", help="catalog GPU name (default h100-sxm)")
    parser.add_argument("--runtime", help="runtime profile, NAME or NAME@VERSION, of the report's execution (default: "
                                          "the shipped profile of that execution, hf-eager or vllm)")
    parser.add_argument("--peak-tflops", type=float, help="override the dense bf16 peak (1e12 FLOP/s)")
    parser.add_argument("--bandwidth-tb-per-s", type=float, help="override the memory bandwidth (1e12 bytes/s)")
    parser.add_argument("--batch-scale", type=int, default=1, help="price the workload at batch x this")
    parser.add_argument("--top", type=int, default=15, help="modules to list (default 15)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from analyzer.report import ReportFormatError, load_report
    from registry.store.db import RegistryError
    from registry.interfaces.output import Column, render_table
    from registry.store.analyzed import private_registry

    try:
        report = load_report(args.report)
    except (ReportFormatError, OSError) as exc:
        print(f"{args.report}: {exc}", file=sys.stderr)
        return 2
    if args.batch_scale < 1:
        print("--batch-scale must be >= 1", file=sys.stderr)
        return 2
    try:
        with private_registry(report, args.report) as (registry, _):
            point, stages, modules = price(registry, report, args)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    w = report.workload
    print(f"{report.model_id} {w.mode} batch {point['batch']} on {point['hardware']} / {point['runtime']}"
          + (f", peak {args.peak_tflops:g} TFLOP/s" if args.peak_tflops else "")
          + (f", bandwidth {args.bandwidth_tb_per_s:g} TB/s" if args.bandwidth_tb_per_s else ""))
    seconds = "{:.3f}"
    print(render_table([Column("stage"), Column("view"), Column("time_s", "time s", seconds),
                        Column("kernel_s", "kernels s", seconds), Column("dispatch_s", "dispatch s", seconds),
                        Column("op_time_s", "operators s", seconds), Column("host_s", "host s", seconds)],
                       [(stage, view or "-", *times) for stage, view, *times in stages], count=False))
    print(f"page latency {point['page_latency_s']:.3f} s; {point['pages_per_s']:.2f} pages/s; "
          f"{point['tokens_per_s']:.0f} tokens/s; memory {point['memory_needed_bytes'] / 1e9:.1f} GB "
          f"({'fits' if point['fits_in_memory'] else 'does not fit'})")
    print(f"\ntop {len(modules)} modules by FLOPs:")
    print(render_table([Column("stage"), Column("module"), Column("gflop", "GFLOP", "{:,.1f}"),
                        Column("gb", "GB moved", "{:,.2f}"), Column("launches", "launches", "{:,}")],
                       [(stage, path or "(root)", flops / 1e9, nbytes / 1e9, launches)
                        for path, stage, flops, nbytes, launches in modules], count=False))
    return 0


if __name__ == "__main__":
    from registry.interfaces.entry import run_script_and_exit

    run_script_and_exit(main)
