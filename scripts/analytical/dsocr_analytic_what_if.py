"""Project one report's per-module and total time under modified parameters.

    python scripts/analytical/dsocr_analytic_what_if.py --report report.json --peak-tflops 989 --batch-scale 8

The report is priced by the registry's own SQL views in an in-memory DuckDB (no file is written); with
--batch-scale the report's workload is analyzed again at batch x scale first.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", required=True, help="an AnalyticModelReport (.json/.yaml)")
    parser.add_argument("--hardware", default="h100-sxm", help="catalog GPU name (default h100-sxm)")
    parser.add_argument("--runtime", default="hf-eager", help="runtime profile (default hf-eager)")
    parser.add_argument("--peak-tflops", type=float, help="override the dense bf16 peak (1e12 FLOP/s)")
    parser.add_argument("--bandwidth-tb-per-s", type=float, help="override the memory bandwidth (1e12 bytes/s)")
    parser.add_argument("--batch-scale", type=int, default=1, help="price the workload at batch x this")
    parser.add_argument("--top", type=int, default=15, help="modules to list (default 15)")
    args = parser.parse_args(argv)

    import sqlalchemy as sa

    from analyzer.report import ReportFormatError, load_report
    from registry.db import Registry, RegistryError
    from registry.ingest import write_report
    from registry.whatif import Scenario, run_scenario

    try:
        report = load_report(args.report)
    except (ReportFormatError, OSError) as exc:
        print(f"{args.report}: {exc}", file=sys.stderr)
        return 2
    if args.batch_scale < 1:
        print("--batch-scale must be >= 1", file=sys.stderr)
        return 2
    registry = Registry("duckdb:///:memory:")
    try:
        registry.upgrade()
        write_report(registry, report, args.report, keep_open=True)
        w = report.workload
        base = dict(variant=w.variant, mode=w.mode, page=f"{w.page_width_px}x{w.page_height_px}",
                    prompt_text_tokens=w.prompt_text_tokens, new_tokens=w.new_tokens)
        if w.tiles_wide:
            base.update(tiles=f"{w.tiles_wide}x{w.tiles_high}")
        overrides = {"peak_tflops": args.peak_tflops, "memory_tb_per_s": args.bandwidth_tb_per_s}
        data = {"name": "what-if", "base": base,
                "sweep": {"hardware": [args.hardware], "runtime": [args.runtime], "batch": [w.batch * args.batch_scale]},
                "overrides": {k: v for k, v in overrides.items() if v is not None}}
        scenario = Scenario(name="what-if", source="(command line)", data=data, lines={})
        scenario_id, points = run_scenario(registry, scenario)
        point = points[0]
        with registry.begin() as conn:
            modules = conn.execute(sa.text(
                "SELECT m.path, o.stage, SUM(o.flops), SUM(o.bytes_read + o.bytes_written), SUM(o.kernel_launches) "
                "FROM operator_metrics o JOIN modules m ON m.id = o.module_id "
                "JOIN reports r ON r.id = o.report_id WHERE r.report_id = :r "
                "GROUP BY m.path, o.stage ORDER BY SUM(o.flops) DESC LIMIT :n"),
                {"r": point["report_id"], "n": args.top}).all()
            stages = conn.execute(sa.text(
                "SELECT stage, view_kind, stage_time_s, kernel_s, launch_s, host_s FROM v_point_stage_time "
                "WHERE scenario_id = :s ORDER BY stage_time_s DESC"), {"s": scenario_id}).all()
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.dispose()

    print(f"{report.model_id} {w.mode} batch {point['batch']} on {point['hardware']} / {point['runtime']}"
          + (f", peak {args.peak_tflops:g} TFLOP/s" if args.peak_tflops else "")
          + (f", bandwidth {args.bandwidth_tb_per_s:g} TB/s" if args.bandwidth_tb_per_s else ""))
    print(f"{'stage':<10}{'view':<8}{'time s':>10}{'kernels s':>11}{'launch s':>10}{'host s':>9}")
    for stage, view, total, kernel, launch, host in stages:
        print(f"{stage:<10}{view or '-':<8}{total:>10.3f}{kernel:>11.3f}{launch:>10.3f}{host:>9.3f}")
    print(f"page latency {point['page_latency_s']:.3f} s; {point['pages_per_s']:.2f} pages/s; "
          f"{point['tokens_per_s']:.0f} tokens/s; memory {point['memory_needed_bytes'] / 1e9:.1f} GB "
          f"({'fits' if point['fits_in_memory'] else 'does not fit'})")
    print(f"\ntop {len(modules)} modules by FLOPs:")
    for path, stage, flops, nbytes, launches in modules:
        print(f"  {stage:<9} {path or '(root)':<55} {flops / 1e9:>10,.1f} GFLOP {nbytes / 1e9:>9,.2f} GB "
              f"{launches:>8,} launches")
    return 0


if __name__ == "__main__":
    from registry.cli import _exit_without_teardown

    _exit_without_teardown(main())
