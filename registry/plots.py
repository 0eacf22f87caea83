"""Scenario plots (matplotlib, PNG): a roofline with one point per module and stage, and page latency by stage."""

from __future__ import annotations

import pathlib

import sqlalchemy as sa

STAGE_COLORS = {"vision": "#4C72B0", "projector": "#8172B2", "prefill": "#DD8452", "decode": "#55A868"}


def plot_scenario(registry, scenario_id: int, points: list[dict], stage_times: list[dict],
                  path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from registry.pricing import point_report_key, read_point_devices

    devices = read_point_devices(registry, scenario_id)
    best_index = points[0]["point_index"] if points else 1
    first_report = point_report_key(registry, scenario_id, best_index)
    with registry.begin() as conn:
        modules = conn.execute(sa.text(
            "SELECT o.stage, SUM(o.flops), SUM(o.bytes_read + o.bytes_written) FROM operator_metrics o "
            "WHERE o.report_id = :r GROUP BY o.module_id, o.stage "
            "HAVING SUM(o.flops) > 0 AND SUM(o.bytes_read + o.bytes_written) > 0"), {"r": first_report}).all()

    fig, (roof, bars) = plt.subplots(1, 2, figsize=(15, 6))
    intensities = [float(f) / float(b) for _, f, b in modules]
    low, high = max(min(intensities, default=0.1) / 2, 1e-2), max(max(intensities, default=1e3) * 2, 1e3)
    import numpy as np

    grid = np.logspace(np.log10(low), np.log10(high), 200)
    for name, peak, bandwidth in devices:
        roof.plot(grid, np.minimum(peak, grid * bandwidth) / 1e12, label=f"{name} roofline")
    peak0, bandwidth0 = (devices[0][1], devices[0][2]) if devices else (1e15, 1e12)
    for stage in STAGE_COLORS:
        xs = [float(f) / float(b) for s, f, b in modules if s == stage]
        if xs:
            ys = [min(peak0, x * bandwidth0) / 1e12 for x in xs]
            roof.scatter(xs, ys, s=12, alpha=0.6, color=STAGE_COLORS[stage], label=f"{stage} modules")
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    roof.set_ylabel("attainable TFLOP/s (1e12 FLOP/s)")
    roof.set_title(f"Roofline: modules x stages of the cheapest point (#{best_index}), "
                   f"placed on {devices[0][0] if devices else '-'}")
    roof.legend(fontsize=7)

    labels = [f"#{p['point_index']} {p['hardware']}\n{p['runtime']} {p['mode']} b{p['batch']}" for p in points]
    order = {p["point_index"]: i for i, p in enumerate(points)}
    bottoms = [0.0] * len(points)
    for stage in STAGE_COLORS:
        heights = [0.0] * len(points)
        for entry in stage_times:
            if entry["stage"] == stage and entry["point_index"] in order:
                heights[order[entry["point_index"]]] = float(entry["seconds"])
        bars.bar(range(len(points)), heights, bottom=bottoms, color=STAGE_COLORS[stage], label=stage)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    bars.set_xticks(range(len(points)))
    bars.set_xticklabels(labels, rotation=90, fontsize=6)
    bars.set_ylabel("batch latency (s)")
    bars.set_title("Latency by stage per scenario point (sorted by GPU-s/page)")
    bars.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
