"""Scenario plots (matplotlib, PNG): a roofline with one point per module and stage, and page latency by stage."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

STAGE_COLORS = {"vision": "#4C72B0", "projector": "#8172B2", "prefill": "#DD8452", "decode": "#55A868"}
# Sizes in points, chosen to stay legible when the PNG is scaled down to a page or a slide.
TITLE_FONT_PT, LABEL_FONT_PT, TICK_FONT_PT, LEGEND_FONT_PT = 13, 12, 10, 9
UNFIT_HATCH = "xx"


@dataclass(frozen=True)
class ScenarioPlot:
    """What a scenario plot shows, for its caption and its tests."""

    roof_point_index: int | None   # the point whose modules are placed on the roofline
    roof_hardware: str | None      # that point's GPU: its roof is the one the modules sit on
    roof_peak_flops_per_s: float | None
    roof_bandwidth_bytes_per_s: float | None
    module_points: int             # modules x stages placed on the roof
    unfit_point_indexes: tuple[int, ...]  # bars marked as not fitting in their GPU's memory


def roof_point(points: list[dict]) -> dict | None:
    """The point the roofline shows: the cheapest that fits in memory (the one `whatif` names), else the cheapest."""
    return next((p for p in points if p["fits_in_memory"]), points[0] if points else None)


def build_scenario_figure(registry, scenario_id: int, points: list[dict], stage_times: list[dict]):
    """The figure (roofline, latency by stage) and a description of what it plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from registry.pricing.points import read_point_devices, read_roofline_modules

    devices = read_point_devices(registry, scenario_id)
    best = roof_point(points)
    modules, peak, bandwidth = [], None, None
    if best is not None:
        peak, bandwidth, modules = read_roofline_modules(registry, scenario_id, best["point_index"])

    fig, (roof, bars) = plt.subplots(1, 2, figsize=(17, 7.5))
    intensities = [float(f) / float(b) for _, f, b in modules]
    low, high = max(min(intensities, default=0.1) / 2, 1e-2), max(max(intensities, default=1e3) * 2, 1e3)
    grid = np.logspace(np.log10(low), np.log10(high), 200)
    other_styles = iter(["--", "-.", ":"] * len(devices))
    for name, device_peak, device_bandwidth in devices:
        own = best is not None and name == best["hardware"] and float(device_peak) == peak
        # roofs in greys, so that they are not read as stages; the one the modules sit on is solid and black
        roof.plot(grid, np.minimum(float(device_peak), grid * float(device_bandwidth)) / 1e12,
                  color="black" if own else "grey", linewidth=2.5 if own else 1.2,
                  linestyle="-" if own else next(other_styles),
                  label=f"{name} roofline" + (" (modules placed here)" if own else ""))
    placed = 0
    for stage, color in STAGE_COLORS.items():
        xs = [float(f) / float(b) for s, f, b in modules if s == stage]
        if xs:
            ys = [min(peak, x * bandwidth) / 1e12 for x in xs]
            roof.scatter(xs, ys, s=18, alpha=0.7, color=color, label=f"{stage} modules", zorder=3)
            placed += len(xs)
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("arithmetic intensity (FLOP per byte moved)", fontsize=LABEL_FONT_PT)
    roof.set_ylabel("attainable TFLOP/s", fontsize=LABEL_FONT_PT)
    if best is not None:
        roof.set_title(f"Roofline: modules x stages of point #{best['point_index']} "
                       f"({best['mode']}, batch {best['batch']}, {best['runtime']}) on {best['hardware']}",
                       fontsize=TITLE_FONT_PT)
    else:
        roof.set_title("Roofline (no points)", fontsize=TITLE_FONT_PT)
    roof.tick_params(labelsize=TICK_FONT_PT)
    roof.grid(True, which="major", alpha=0.3)
    roof.legend(fontsize=LEGEND_FONT_PT)

    labels = [f"#{p['point_index']} {p['hardware']}\n{p['runtime']} {p['mode']} b{p['batch']}"
              + ("" if p["fits_in_memory"] else "\n(does not fit)") for p in points]
    unfit = tuple(p["point_index"] for p in points if not p["fits_in_memory"])
    order = {p["point_index"]: i for i, p in enumerate(points)}
    bottoms = [0.0] * len(points)
    for stage, color in STAGE_COLORS.items():
        heights = [0.0] * len(points)
        for entry in stage_times:
            if entry["stage"] == stage and entry["point_index"] in order:
                heights[order[entry["point_index"]]] = float(entry["seconds"])
        drawn = bars.bar(range(len(points)), heights, bottom=bottoms, color=color, label=stage)
        for patch, p in zip(drawn.patches, points):
            if not p["fits_in_memory"]:
                patch.set_hatch(UNFIT_HATCH)
                patch.set_edgecolor("#B00000")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    if unfit:
        import matplotlib.patches as mpatches

        handles, names = bars.get_legend_handles_labels()
        handles.append(mpatches.Patch(facecolor="white", edgecolor="#B00000", hatch=UNFIT_HATCH))
        names.append("does not fit in GPU memory")
        bars.legend(handles, names, fontsize=LEGEND_FONT_PT)
    else:
        bars.legend(fontsize=LEGEND_FONT_PT)
    bars.set_xticks(range(len(points)))
    bars.set_xticklabels(labels, rotation=90, fontsize=TICK_FONT_PT if len(points) <= 24 else TICK_FONT_PT - 2)
    for tick, p in zip(bars.get_xticklabels(), points):
        if not p["fits_in_memory"]:
            tick.set_color("#B00000")
    bars.tick_params(axis="y", labelsize=TICK_FONT_PT)
    bars.set_ylabel("batch latency (s)", fontsize=LABEL_FONT_PT)
    bars.set_xlabel("scenario point: GPU, runtime, mode, batch", fontsize=LABEL_FONT_PT)
    bars.set_title("Latency by stage per scenario point (fitting points first, then by GPU-s/page)",
                   fontsize=TITLE_FONT_PT)
    fig.tight_layout()
    return fig, ScenarioPlot(roof_point_index=best["point_index"] if best else None,
                             roof_hardware=best["hardware"] if best else None, roof_peak_flops_per_s=peak,
                             roof_bandwidth_bytes_per_s=bandwidth, module_points=placed, unfit_point_indexes=unfit)


def plot_scenario(registry, scenario_id: int, points: list[dict], stage_times: list[dict],
                  path: pathlib.Path) -> ScenarioPlot:
    """Write the scenario's plot as PNG; returns what it shows."""
    import matplotlib.pyplot as plt

    from analyzer.fileio import atomic_path

    fig, shown = build_scenario_figure(registry, scenario_id, points, stage_times)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return shown
