"""How long a serving benchmark's replay takes, and how far the simulation is from the public SGLang runs before and
after the host fit.

Ingests the SGLang cookbook's text-only runs (tests/data/serving-results: DeepSeek-OCR on one MI300X, DeepSeek-OCR-2
on one H200, each at 1 and 100 clients) into a temporary registry, times the replay of the 1,000-request run (the
step costs are read once; each simulation of the 1,000 requests is timed), then prints measured beside predicted
request throughput and mean TPOT under the shipped host profile, under one host profile fitted to all four runs
(with each run's error when it is left out of the fit), and under a host profile fitted per machine.

Run: python benchmarks/bench_serving_replay.py
"""

from __future__ import annotations

import pathlib
import statistics
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "serving-results"
RUNS = ("sglang-cookbook-dsocr-v1-mi300x", "sglang-cookbook-dsocr2-h200")


def table(title, result) -> None:
    print(title)
    print(f"  {'run':<32} {'metric':<26} {'before':>8} {'after':>8} {'held out':>9}")
    for mid, errors in result["before"].items():
        for metric, before in errors.items():
            held = result["held_out"].get(mid, {}).get(metric)
            held_text = f"{held:+8.1%}" if held is not None else "       -"
            print(f"  {LABELS[mid]:<32} {metric:<26} {before:+8.1%} {result['after'][mid][metric]:+8.1%} "
                  f"{held_text:>9}")
    fitted = ", ".join(f"{k} {v:.4g}" for k, v in result["parameters"].items())
    bound = ", ".join(f"{k} on its {side} bound" for k, side in result["on_bounds"].items()) or "none on a bound"
    print(f"  fitted: {fitted} ({bound})")


LABELS: dict[int, str] = {}


def main() -> None:
    from registry.store.db import Registry
    from registry.store.serving_results import (calibrate_serving, ingest_serving_results, load_measured,
                                                read_setup, replay_plan, simulate_replay)

    with tempfile.TemporaryDirectory() as folder:
        registry = Registry(str(pathlib.Path(folder) / "r.duckdb"), writes=True)
        registry.ensure_schema(auto_create=True)
        for name in RUNS:
            ingest_serving_results(registry, DATA / f"{name}.jsonl", read_setup(DATA / f"{name}.setup.yaml", {}))
        with registry.begin() as conn:
            for mid in (1, 2, 3, 4):
                m = load_measured(conn, mid)
                LABELS[mid] = f"{m.id} {m.variant} {m.hardware} {m.max_concurrency} client(s)"
        started = time.perf_counter()
        replay = replay_plan(registry, 2)
        plan_s = time.perf_counter() - started
        times = []
        for _ in range(7):
            started = time.perf_counter()
            simulate_replay(replay)
            times.append(time.perf_counter() - started)
        print(f"replay of {len(replay.plan.spec.requests):,} requests: {statistics.median(times) * 1e3:.0f} ms "
              f"(median of 7; best {min(times) * 1e3:.0f} ms), after {plan_s:.1f} s to read or derive its step costs")
        started = time.perf_counter()
        joint = calibrate_serving(registry, None, None, name="fit-all")
        table(f"one host profile fitted to all four runs ({time.perf_counter() - started:.1f} s):", joint)
        for ids, name in (([1, 2], "fit-mi300x-host"), ([3, 4], "fit-h200-host")):
            table(f"a host profile fitted to runs {ids[0]} and {ids[1]} (one machine):",
                  calibrate_serving(registry, ids, "epyc-2c-vllm-0.8.5", name=name))
        registry.dispose()


if __name__ == "__main__":
    main()
