"""Fit a host profile's free costs to ingested serving benchmarks, through the serving simulator.

Each ingested run is replayed (its own requests on its own setup: registry.store.serving_results) with the host
profile's free costs set to trial values; the residuals are the log ratios of simulated to measured request
throughput and mean TPOT of every run. scipy's bounded least squares moves only the free costs, each within its
physical range; every other cost of the profile and every GPU figure stay as they are. The leave-one-out error
refits without each run in turn and predicts it.

Which costs are free is the caller's choice; the default, the scheduler's cost per step and per scheduled request,
is the host work every engine does on each step (overlapped with the GPU by engines that overlap it).
"""

from __future__ import annotations

import json
import math

import attrs
import numpy as np

from registry.serving.host import HostModel
from registry.serving.profiles import Figure, HostProfile, ProfileError

DEFAULT_FREE = ("schedule_step_us", "schedule_per_request_us")
# physical ranges of a host cost (microseconds): a per-step piece of CPU work takes under 100 ms, a per-request or
# per-token piece under 10 ms
BOUNDS_US = {"step": (0.0, 100_000.0), "other": (0.0, 10_000.0)}
FIT_METRICS = ("request_throughput_per_s", "mean_tpot_ms")
ON_BOUND_RTOL = 1e-3


class FitError(ValueError):
    pass


def cost_bounds(key: str) -> tuple[float, float]:
    return BOUNDS_US["step" if key.endswith("_step_us") or key == "ngram_call_us" else "other"]


def with_costs(host: HostProfile, values_us: dict[str, float]) -> HostProfile:
    costs = dict(host.costs)
    for key, value in values_us.items():
        costs[key] = Figure(float(value), 0.0, "fitted")
    return attrs.evolve(host, costs=costs)


@attrs.frozen
class Target:
    """A run to fit: its replay and its measured figures."""

    measurement_id: int
    replay: object  # registry.store.serving_results.ReplayPlan
    measured: dict[str, float]


def _host_model(target: Target, host: HostProfile) -> HostModel:
    spec = target.replay.plan.spec
    return spec.engine_profile.host_model(host, spec.ngram)


def predicted(target: Target, host: HostProfile) -> dict:
    from registry.store.serving_results import simulate_replay

    return simulate_replay(target.replay, _host_model(target, host))


def residuals(targets: list[Target], host: HostProfile, free: tuple[str, ...], values: np.ndarray) -> np.ndarray:
    trial = with_costs(host, dict(zip(free, values)))
    out = []
    for target in targets:
        figures = predicted(target, trial)
        for metric in FIT_METRICS:
            measured = target.measured.get(metric)
            if measured is None or figures.get(metric) is None or measured <= 0:
                continue
            out.append(math.log(figures[metric] / measured))
    return np.asarray(out)


def fit(targets: list[Target], host: HostProfile, free: tuple[str, ...]) -> np.ndarray:
    from scipy.optimize import least_squares

    low = np.array([cost_bounds(k)[0] for k in free])
    high = np.array([cost_bounds(k)[1] for k in free])
    start = np.clip(np.array([host.costs[k].value for k in free], dtype=float), low, high)
    # start inside the box (least_squares needs a strictly feasible point) and at a scale the costs can move from
    start = np.clip(np.maximum(start, 10.0), low + 1e-6 * (high - low), high - 1e-6 * (high - low))
    result = least_squares(lambda x: residuals(targets, host, free, x), start, bounds=(low, high),
                           x_scale=np.maximum(start, 100.0), diff_step=1e-3, xtol=1e-10, ftol=1e-10, max_nfev=200)
    return result.x


def errors(targets: list[Target], host: HostProfile) -> dict[int, dict[str, float]]:
    """Per run: the relative error of each fitted metric under `host`."""
    out = {}
    for target in targets:
        figures = predicted(target, host)
        out[target.measurement_id] = {
            metric: figures[metric] / target.measured[metric] - 1 for metric in FIT_METRICS
            if target.measured.get(metric)}
    return out


def calibrate_host(targets: list[Target], host: HostProfile, free: tuple[str, ...]) -> dict:
    """The fitted costs, which end on a bound, the errors before and after, and each run's error when it is left
    out of the fit."""
    unknown = [k for k in free if k not in host.costs]
    if unknown:
        raise FitError(f"unknown host cost {unknown[0]!r}; known: {', '.join(sorted(host.costs))}")
    if not targets:
        raise FitError("no serving measurements to fit")
    fitted = fit(targets, host, free)
    after_host = with_costs(host, dict(zip(free, fitted)))
    on_bound = {}
    for key, value in zip(free, fitted):
        low, high = cost_bounds(key)
        if value <= low + ON_BOUND_RTOL * (high - low):
            on_bound[key] = "lower"
        elif value >= high - ON_BOUND_RTOL * (high - low):
            on_bound[key] = "upper"
    held_out = {}
    if len(targets) > 1:
        for i, target in enumerate(targets):
            others = targets[:i] + targets[i + 1:]
            values = fit(others, host, free)
            held_out.update(errors([target], with_costs(host, dict(zip(free, values)))))
    return {"parameters": {k: float(v) for k, v in zip(free, fitted)},
            "start": {k: float(host.costs[k].value) for k in free},
            "bounds": {k: cost_bounds(k) for k in free}, "on_bounds": on_bound,
            "before": errors(targets, host), "after": errors(targets, after_host), "held_out": held_out,
            "host": after_host}


def fitted_document(conn, base: HostProfile, values: dict[str, float], name: str | None,
                    measurement_ids: list[int]) -> tuple[dict, HostProfile]:
    """The calibrated profile's document (the base's, with the fitted costs, as the next version of `name`) and
    the profile it parses to."""
    import sqlalchemy as sa

    from registry.serving.profiles import located, _parse

    document = json.loads(conn.execute(sa.text(
        "SELECT document FROM serving_profiles WHERE kind = 'host' AND name = :n AND version = :v"),
        {"n": base.name, "v": base.version}).scalar_one())
    target = name or base.name
    latest = conn.execute(sa.text("SELECT MAX(version) FROM serving_profiles WHERE kind = 'host' AND name = :n"),
                          {"n": target}).scalar()
    document = dict(document, name=target, version=int(latest or 0) + 1)
    document["costs"] = dict(document["costs"])
    for key, value in values.items():
        document["costs"][key] = {"value": round(float(value), 6), "spread": 0.0, "how": "fitted"}
    runs = ", ".join(map(str, measurement_ids))
    document["description"] = (f"{base.label} with {', '.join(values)} fitted to serving measurements {runs} "
                               "(calibrate --serving)")
    document["source"] = f"calibrate --serving from {base.label} on serving measurements {runs}"
    import yaml

    text = yaml.safe_dump([document], sort_keys=False)
    data, at = located(text, f"calibrated host profile {target}")
    try:
        profile = _parse("host", data, at)[0]
    except ProfileError as exc:
        raise FitError(str(exc)) from None
    return document, profile
