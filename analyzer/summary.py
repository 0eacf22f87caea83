"""The short human summary printed after an analysis: stage totals and the modules that cost most."""

from __future__ import annotations

import re
from collections import defaultdict

from analyzer.report import AnalyticModelReport

_LAYER_INDEX = re.compile(r"\.\d+(?=\.|$)")


def module_pattern(path: str) -> str:
    """`model.language_model.layers.3.mlp` -> `model.language_model.layers.*.mlp` (layers grouped)."""
    return _LAYER_INDEX.sub(".*", path) or "(root)"


def top_modules(report: AnalyticModelReport, key: str, limit: int = 6) -> list[tuple[str, int]]:
    """Module patterns ranked by their own (exclusive) FLOPs or bytes over all stages."""
    totals: dict[str, int] = defaultdict(int)
    for snap in report.module_metrics:
        for op in snap.operators:
            value = op.flops if key == "flops" else op.bytes_read + op.bytes_written
            totals[module_pattern(snap.module_path)] += value
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [(name, value) for name, value in ranked[:limit] if value > 0]


def format_summary(report: AnalyticModelReport) -> str:
    w = report.workload
    tiles = f"{w.tiles_wide}x{w.tiles_high} tiles of {w.tile_px} px" if w.tiles_wide else "no tiles"
    lines = [
        f"{report.model_id} ({report.variant}), mode {w.mode}: page {w.page_width_px}x{w.page_height_px} px -> "
        f"global {w.global_view_px} px + {tiles}",
        f"tokens: {w.image_placeholder_tokens} image + {w.prompt_text_tokens} text = {w.prefill_tokens} prefill, "
        f"{w.new_tokens} new ({w.decode_steps} decode steps), batch {w.batch}",
        f"parameters {report.parameters:,} ({report.weight_bytes / 1e9:.2f} GB in {report.dtype}); "
        f"KV cache {report.kv_cache_bytes_per_token:,} bytes/token",
        "",
        f"{'stage':<10}{'view':<8}{'items':>6}{'calls':>7}{'GFLOP':>12}{'GB moved':>11}{'launches':>10}"
        f"{'act peak MB':>13}{'KV MB':>9}",
    ]
    for s in report.stages:
        lines.append(
            f"{s.stage.value:<10}{s.view_kind.value or '-':<8}{s.items:>6}{s.calls:>7}{s.flops / 1e9:>12,.1f}"
            f"{(s.bytes_read + s.bytes_written) / 1e9:>11,.2f}{s.kernel_launches:>10,}"
            f"{s.activation_peak_bytes / 1e6:>13,.1f}{s.kv_cache_bytes / 1e6:>9,.1f}")
    lines.append(f"{'total':<10}{'':<8}{'':>6}{'':>7}{report.total_flops / 1e9:>12,.1f}"
                 f"{report.total_bytes / 1e9:>11,.2f}{sum(s.kernel_launches for s in report.stages):>10,}")
    lines.append("")
    lines.append("top modules by FLOPs:  " + "; ".join(
        f"{name} {value / 1e9:,.1f} G" for name, value in top_modules(report, "flops", 4)))
    lines.append("top modules by bytes:  " + "; ".join(
        f"{name} {value / 1e9:,.2f} GB" for name, value in top_modules(report, "bytes", 4)))
    lines.append("(GB = 1e9 bytes; FLOPs are counts, not rates)")
    return "\n".join(lines)
