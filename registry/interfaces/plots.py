"""Scenario plots (matplotlib, PNG): a roofline with one point per module and stage where its predicted time puts it,
and the GPU-seconds per page of each point by stage."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

STAGE_COLORS = {"vision": "#4C72B0", "projector": "#8172B2", "prefill": "#DD8452", "decode": "#55A868"}
# Sizes in points, chosen to stay legible when the PNG is scaled down to a page or a slide.
TITLE_FONT_PT, LABEL_FONT_PT, TICK_FONT_PT, LEGEND_FONT_PT = 13, 12, 10, 9
UNFIT_HATCH = "xx"
# PNG text chunks matplotlib would add: without its version a render of the same numbers is the same file, whichever
# matplotlib wrote it (the committed pictures are compared with fresh renders)
PNG_METADATA = {"Software": None}
SVG_METADATA = {"Date": None, "Creator": None}


@dataclass(frozen=True)
class ScenarioPlot:
    """What a scenario plot shows, for its caption and its tests."""

    roof_point_index: int | None   # the point whose modules are placed on the roofline
    roof_hardware: str | None      # that point's GPU: its roof is the one the modules sit on
    roof_peak_flops_per_s: float | None
    roof_bandwidth_bytes_per_s: float | None
    module_points: int             # modules x stages placed on the roof
    achieved_peak_flops_per_s: float | None       # the runtime's achieved roof at that point: no module above it
    achieved_bandwidth_bytes_per_s: float | None
    unfit_point_indexes: tuple[int, ...]  # bars marked as not fitting in their GPU's memory


def roof_point(points: list[dict]) -> dict | None:
    """The point the roofline shows: the cheapest that fits in memory (the one `whatif` names), else the cheapest."""
    return next((p for p in points if p["fits_in_memory"]), points[0] if points else None)


def build_scenario_figure(registry, scenario_id: int, points: list[dict], stage_times: list[dict]):
    """The figure (roofline, GPU-seconds per page by stage) and a description of what it plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from registry.pricing.points import read_point_devices, read_roofline_modules, read_runtime_roof

    devices = read_point_devices(registry, scenario_id)
    best = roof_point(points)
    modules, peak, bandwidth, achieved = [], None, None, None
    if best is not None:
        peak, bandwidth, modules = read_roofline_modules(registry, scenario_id, best["point_index"])
        achieved = read_runtime_roof(registry, scenario_id, best["point_index"])

    # one row per point: the bars are horizontal, each label one line beside its own bar
    fig, (roof, bars) = plt.subplots(1, 2, figsize=(17, max(7.5, 1.5 + 0.32 * len(points))),
                                     gridspec_kw={"width_ratios": [1.1, 1]})
    intensities = [f / b for _, f, b, _ in modules]
    low, high = max(min(intensities, default=0.1) / 2, 1e-2), max(max(intensities, default=1e3) * 2, 1e3)
    grid = np.logspace(np.log10(low), np.log10(high), 200)
    other_styles = iter(["--", "-.", ":"] * len(devices))
    for name, device_peak, device_bandwidth in devices:
        own = best is not None and name == best["hardware"] and float(device_peak) == peak
        # datasheet roofs in greys, so that they are not read as stages; the point's own is solid and black
        roof.plot(grid, np.minimum(float(device_peak), grid * float(device_bandwidth)) / 1e12,
                  color="black" if own else "grey", linewidth=2.5 if own else 1.2,
                  linestyle="-" if own else next(other_styles),
                  label=f"{name} datasheet roof" + (" (this point's GPU)" if own else ""))
    achieved_peak = achieved_bandwidth = None
    if achieved is not None and peak is not None:
        achieved_peak, compute_reached, achieved_bandwidth, memory_reached = achieved
        roof.plot(grid, np.minimum(achieved_peak, grid * achieved_bandwidth) / 1e12, color="#B00000",
                  linewidth=1.8, linestyle="--",
                  label=f"{best['runtime']} achieved roof ({compute_reached}, {memory_reached})")
    placed = 0
    for stage, color in STAGE_COLORS.items():
        chosen = [(f / b, f / t) for s, f, b, t in modules if s == stage]
        if chosen:
            # where each module really sits: its FLOPs over its predicted time at this point
            xs, ys = zip(*chosen)
            roof.scatter(xs, np.array(ys) / 1e12, s=18, alpha=0.7, color=color, label=f"{stage} modules", zorder=3)
            placed += len(chosen)
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("arithmetic intensity (FLOP per byte moved)", fontsize=LABEL_FONT_PT)
    roof.set_ylabel("achieved TFLOP/s (module FLOPs / predicted time)", fontsize=LABEL_FONT_PT)
    if best is not None:
        roof.set_title(f"Roofline: modules x stages of point #{best['point_index']} "
                       f"({best['mode']}, batch {best['batch']}, {best['runtime']}) on {best['hardware']}",
                       fontsize=TITLE_FONT_PT)
    else:
        roof.set_title("Roofline (no points)", fontsize=TITLE_FONT_PT)
    roof.tick_params(labelsize=TICK_FONT_PT)
    roof.grid(True, which="major", alpha=0.3)
    # under the axes: inside, the legend would hide modules wherever it went
    roof.legend(fontsize=LEGEND_FONT_PT, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2)

    labels = [f"#{p['point_index']} {p['hardware']} {p['runtime']} {p['mode']} b{p['batch']}"
              + ("" if p["fits_in_memory"] else " (does not fit)") for p in points]
    unfit = tuple(p["point_index"] for p in points if not p["fits_in_memory"])
    order = {p["point_index"]: i for i, p in enumerate(points)}
    lefts = [0.0] * len(points)
    rows = range(len(points))
    for stage, color in STAGE_COLORS.items():
        widths = [0.0] * len(points)
        for entry in stage_times:
            if entry["stage"] == stage and entry["point_index"] in order:
                position = order[entry["point_index"]]
                # a batch's stage time shared by its pages: the bar is the GPU-seconds per page it is sorted by
                widths[position] = float(entry["seconds"]) / points[position]["batch"]
        drawn = bars.barh(rows, widths, left=lefts, color=color, label=stage)
        for patch, p in zip(drawn.patches, points):
            if not p["fits_in_memory"]:
                patch.set_hatch(UNFIT_HATCH)
                patch.set_edgecolor("#B00000")
        lefts = [left + width for left, width in zip(lefts, widths)]
    if unfit:
        import matplotlib.patches as mpatches

        handles, names = bars.get_legend_handles_labels()
        handles.append(mpatches.Patch(facecolor="white", edgecolor="#B00000", hatch=UNFIT_HATCH))
        names.append("does not fit in GPU memory")
        bars.legend(handles, names, fontsize=LEGEND_FONT_PT)
    else:
        bars.legend(fontsize=LEGEND_FONT_PT)
    bars.set_yticks(list(rows))
    bars.set_yticklabels(labels, fontsize=TICK_FONT_PT)
    bars.invert_yaxis()  # the cheapest first, at the top
    for tick, p in zip(bars.get_yticklabels(), points):
        if not p["fits_in_memory"]:
            tick.set_color("#B00000")
    bars.tick_params(axis="x", labelsize=TICK_FONT_PT)
    bars.set_xlabel("GPU-seconds per page", fontsize=LABEL_FONT_PT)
    bars.set_ylabel("scenario point: GPU, runtime, mode, batch", fontsize=LABEL_FONT_PT)
    bars.set_title("GPU-seconds per page by stage (fitting first, cheapest first)", fontsize=TITLE_FONT_PT)
    fig.tight_layout()
    return fig, ScenarioPlot(roof_point_index=best["point_index"] if best else None,
                             roof_hardware=best["hardware"] if best else None, roof_peak_flops_per_s=peak,
                             roof_bandwidth_bytes_per_s=bandwidth, module_points=placed, unfit_point_indexes=unfit,
                             achieved_peak_flops_per_s=achieved_peak,
                             achieved_bandwidth_bytes_per_s=achieved_bandwidth)


def save_figure(fig, path) -> None:
    """Write a figure as PNG (or SVG for a .svg name) in one step, without the writer's version or a date: the
    same figure gives the same bytes."""
    import matplotlib

    from analyzer.fileio import atomic_path

    path = pathlib.Path(path)
    svg = path.suffix.lower() == ".svg"
    # a fixed salt: SVG element ids are otherwise random on each save
    with atomic_path(path, suffix=path.suffix or ".png") as tmp, matplotlib.rc_context({"svg.hashsalt": "dsocr"}):
        fig.savefig(tmp, dpi=110, format="svg" if svg else "png", metadata=SVG_METADATA if svg else PNG_METADATA)


def plot_scenario(registry, scenario_id: int, points: list[dict], stage_times: list[dict],
                  path: pathlib.Path) -> ScenarioPlot:
    """Write the scenario's plot as PNG; returns what it shows."""
    import matplotlib.pyplot as plt

    fig, shown = build_scenario_figure(registry, scenario_id, points, stage_times)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return shown
