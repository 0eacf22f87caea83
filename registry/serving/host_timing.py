"""Timing with repeats, the spread of a figure, and least-squares fits of timed pieces.

Clock: the CPU time of the measuring thread (`time.thread_time_ns`), not the wall clock, so that other processes
sharing the cores (a test run, a build) do not inflate a figure: what is measured is what the work takes on a core
of its own, which is what a serving engine's host thread has.

Spread (one definition for every figure of a host profile, made for noisy shared machines):
    spread = max(half the inter-quartile range of the repeats, 10% of |value|)
where value is the median of the repeats. For a fitted coefficient, the repeats are the fits of each repeat round
(the round's timings at every point of the fit), the value is the fit of the per-point medians, an intercept's
10% floor is taken of the smallest measured total it is read off (an intercept cannot be known better than the
measurements it is extrapolated from), and the spread is at least the coefficient's standard error from the
residuals of the fit. Repeats are taken round-robin over the points of a fit (`rounds_us`), so that a burst of
load from elsewhere (which thread CPU time does not fully hide on a virtual machine whose cores are shared) lands
in one round, not in every repeat of one point. Two measurements of one machine agree when they differ by at most
the sum of their spreads.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import numpy as np

RELATIVE_SPREAD_FLOOR = 0.10


def figure(value: float, spread: float, how: str = "measured", digits: int = 4) -> dict:
    """One figure of a host profile: {value, spread, how}, both numbers >= 0, rounded to `digits` significant
    digits (a measurement is not known better)."""
    return {"value": _round(max(float(value), 0.0), digits), "spread": _round(max(float(spread), 0.0), digits),
            "how": how}


def _round(x: float, digits: int) -> float:
    if x == 0 or not np.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def spread_of(samples: Sequence[float], value: float | None = None, floor_of: float | None = None) -> float:
    """The spread of a figure (module docstring): max(IQR / 2 of the samples, 10% of |value| or of |floor_of|)."""
    samples = np.asarray(samples, dtype=float)
    centre = float(np.median(samples)) if value is None else float(value)
    half_iqr = 0.0
    if samples.size > 1:
        q1, q3 = np.percentile(samples, [25, 75])
        half_iqr = float(q3 - q1) / 2
    reference = abs(centre) if floor_of is None else max(abs(centre), abs(float(floor_of)))
    return max(half_iqr, RELATIVE_SPREAD_FLOOR * reference)


def time_us(work: Callable[[], object], inner: int = 1) -> float:
    """Microseconds of thread CPU time per call of `work`, over `inner` back-to-back calls, with the garbage
    collector off (as timeit does: a collection of the caller's garbage is not the work's cost)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.thread_time_ns()
        for _ in range(inner):
            work()
        return (time.thread_time_ns() - start) / 1e3 / inner
    finally:
        if enabled:
            gc.enable()


def inner_count(work: Callable[[], object], target_us: float = 2000.0, limit: int = 10_000) -> int:
    """How many back-to-back calls make one timing of about `target_us` (one call to warm up and calibrate)."""
    work()
    one = max(time_us(work), 0.05)
    return int(min(limit, max(1, round(target_us / one))))


def repeat_us(work: Callable[[], object], repeats: int, target_us: float = 2000.0) -> list[float]:
    """`repeats` timings of `work` in microseconds per call (each a batch of about `target_us`; 0: one call)."""
    if target_us <= 0:  # slow work: one call to warm up, then one call per timing
        work()
        inner = 1
    else:
        inner = inner_count(work, target_us)
    gc.collect()
    return [time_us(work, inner) for _ in range(repeats)]


def rounds_us(works: Sequence[Callable[[], object]], rounds: int, target_us: float = 2000.0) -> np.ndarray:
    """Timings of several pieces of work, rounds x works microseconds per call, taken round-robin (each round
    times every work once), so that a burst of load from elsewhere lands in one round, which the median of the
    rounds then leaves out, rather than in every repeat of one work. `target_us` as in `repeat_us`; below 0: the
    works are warm already, one call per timing."""
    inners = []
    for work in works:
        if target_us < 0:  # already warm: one call per timing
            inners.append(1)
        elif target_us == 0:  # slow work: one call to warm up, then one call per timing
            work()
            inners.append(1)
        else:
            inners.append(inner_count(work, target_us))
    gc.collect()
    return np.array([[time_us(work, inner) for work, inner in zip(works, inners)] for _ in range(rounds)])


def measured(samples: Sequence[float], scale: float = 1.0) -> dict:
    """A directly timed figure: median and spread of the samples, times `scale` (e.g. 1e-3 for us -> ms)."""
    value = float(np.median(samples))
    return figure(value * scale, spread_of(samples, value) * scale)


def fit_linear(features: np.ndarray, rounds: np.ndarray, intercept_column: int | None = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients of `rounds` (rounds x points timings) on `features` (points x terms), with the
    spread of each coefficient (module docstring). Returns (values, spreads)."""
    features = np.asarray(features, dtype=float)
    rounds = np.atleast_2d(np.asarray(rounds, dtype=float))
    medians = np.median(rounds, axis=0)
    values = np.linalg.lstsq(features, medians, rcond=None)[0]
    per_round = np.array([np.linalg.lstsq(features, row, rcond=None)[0] for row in rounds])
    # the standard error of each coefficient from the residuals of the median fit (0 when the points leave no
    # degree of freedom): how far the points stray from a straight line adds to what the rounds' scatter says
    points, terms = features.shape
    standard_errors = np.zeros_like(values)
    if points > terms:
        residual_variance = float(np.sum((features @ values - medians) ** 2)) / (points - terms)
        covariance = residual_variance * np.linalg.pinv(features.T @ features)
        standard_errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    spreads = np.empty_like(values)
    for term in range(values.size):
        floor_of = float(medians.min()) if term == intercept_column else None
        spreads[term] = max(spread_of(per_round[:, term], values[term], floor_of), standard_errors[term])
    return values, spreads


def fitted(values: np.ndarray, spreads: np.ndarray, term: int, scale: float = 1.0) -> dict:
    """One fitted coefficient as a figure (a small negative fit, within its spread of zero, is reported as 0)."""
    return figure(values[term] * scale, spreads[term] * scale)
