"""Analysis speed, as a user meets it: `--help`, `analyze` of a cached family and of a new one (each a fresh
process), a 100-point sweep, N points analyzed and stored, and a what-if of 4 new workloads on a fresh registry.

Each figure runs in a process of its own with a trace cache of the benchmark's own (DSOCR_CACHE_DIR), so the
user's cache is neither read nor changed. Figures are wall-clock seconds, the best (and the median) of --repeat
runs where a run is cheap.

Run: python benchmarks/analysis_speed.py [--points 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ENTRY = shutil.which("dsocr-registry") or "dsocr-registry"
REPO = pathlib.Path(__file__).resolve().parent.parent

SWEEP = """
import itertools, time
from analyzer.analysis import analyze
from analyzer.workload import Workload
points = list(itertools.product(["tiny", "small", "base", "large", "gundam"], [1, 2, 4, 8], [128, 256, 512, 1024, 2048]))
started = time.perf_counter()
for mode, batch, tokens in points:
    analyze(Workload(variant="v1", mode=mode, page_width_px=1654, page_height_px=2339, prompt_text_tokens=9,
                     new_tokens=tokens, batch=batch))
print(time.perf_counter() - started)
"""

STORE = """
import itertools, sys, time
from analyzer.workload import Workload
from registry.store.analyzed import ensure_reports
from registry.store.db import Registry
count, db = int(sys.argv[1]), sys.argv[2]
# 2 executions x 5 modes x 10 batches x 10 prompts x 10 outputs = 10,000 points of 20 families; fewer points are
# spread over the same grid
grid = list(itertools.product(["hf-eager", "vllm"], ["tiny", "small", "base", "large", "gundam"], range(1, 11),
                              range(0, 100, 10), range(1, 4000, 400)))
step = max(1, len(grid) // count)
workloads = {}
for execution, mode, batch, prompt, tokens in grid[::step][:count]:
    workloads.setdefault(execution, []).append(Workload(variant="v1", mode=mode, batch=batch, new_tokens=tokens,
                                                        prompt_text_tokens=prompt))
registry = Registry(db)
registry.ensure_schema(auto_create=True)
started = time.perf_counter()
for execution, points in workloads.items():
    ensure_reports(registry, points, "benchmark", progress=True, execution=execution)
print(time.perf_counter() - started)
"""


def timed(args: list[str], env: dict, cwd: pathlib.Path) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def printed(args: list[str], env: dict, cwd: pathlib.Path) -> float:
    """The seconds a script prints as its last line (its own timing, without the interpreter's start)."""
    result = subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return float(result.stdout.split()[-1])


def best(runs: list[float]) -> str:
    return f"{min(runs):6.2f} s (median {statistics.median(runs):.2f} s of {len(runs)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000, help="points to analyze and store (default 10,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cheap figure (default 3)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cache = tmp / "cache"
        env = {**os.environ, "DSOCR_CACHE_DIR": str(cache)}
        analyze = [ENTRY, "analyze", "-w", "dsocr-standard-v1", "-q"]

        help_runs = [timed([ENTRY, "--help"], env, tmp) for _ in range(options.repeat)]
        new_runs, cached_runs = [], []
        for _ in range(options.repeat):
            shutil.rmtree(cache, ignore_errors=True)
            new_runs.append(timed(analyze, env, tmp))
            cached_runs.append(timed([*analyze, "--new-tokens", "333", "--prompt-tokens", "200"], env, tmp))
        print(f"--help                                     {best(help_runs)}   (goal <= 0.3 s)")
        print(f"analyze, cached family, cold process       {best(cached_runs)}   (goal <= 1 s)")
        print(f"analyze, new family, cold process          {best(new_runs)}   (goal <= 6 s)")

        shutil.rmtree(cache, ignore_errors=True)
        sweep_new = printed([sys.executable, "-c", SWEEP], env, REPO)
        sweep_cached = [printed([sys.executable, "-c", SWEEP], env, REPO) for _ in range(options.repeat)]
        print(f"sweep 100 points, families cached          {best(sweep_cached)}   (goal <= 2 s)")
        print(f"sweep 100 points, empty cache (10 families) {sweep_new:6.2f} s")

        scenario = REPO / "queries" / "examples" / "capacity.yaml"
        whatif = []
        for index, state in enumerate(("empty", "warm")):
            if state == "empty":
                shutil.rmtree(cache, ignore_errors=True)
            whatif.append(timed([ENTRY, "whatif", "--db", str(tmp / f"whatif-{index}.duckdb"), "--scenario",
                                 str(scenario)], env, tmp))
        print(f"whatif capacity.yaml (4 workloads x 2 executions), fresh registry: trace cache empty "
              f"{whatif[0]:.2f} s, warm {whatif[1]:.2f} s   (goal <= 8 s)")

        stored_s = printed([sys.executable, "-c", STORE, str(options.points), str(tmp / "points.duckdb")], env, REPO)
        print(f"{options.points:,} points analyzed and stored (their 20 families traced within)  "
              f"{stored_s:7.1f} s = {stored_s / options.points * 1000:.1f} ms/point   (goal: 10,000 <= 180 s)")


if __name__ == "__main__":
    main()
