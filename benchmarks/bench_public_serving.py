"""The serving simulation against public measurements of real DeepSeek-OCR servers (benchmarks/public_serving.yaml).

Each measurement comes with the scenario of its published settings; this simulates each on a fresh registry (with
the engine's default host profile, and with `--host NAME` another) and prints predicted beside published, their
ratio, the resource that bounds the prediction and the host's share of it.

Run: python benchmarks/bench_public_serving.py [--host none] [--only ID]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
METRICS = {"pages_per_s": "pages/s", "output_tokens_per_s": "tokens/s"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", help="host profile for every scenario (default: each engine's default_host)")
    parser.add_argument("--only", help="one measurement id")
    args = parser.parse_args()
    measurements = yaml.safe_load((REPO / "benchmarks" / "public_serving.yaml").read_text())
    folder = pathlib.Path(tempfile.mkdtemp())
    program = str(pathlib.Path(sys.executable).with_name("dsocr-registry"))
    print(f"{'measurement':24s} {'metric':9s} {'published':>10s} {'predicted':>10s} {'ratio':>6s}  engine / host, "
          "bound by, GPU busy / GPU waiting for the host / CPU pool")
    misses = []
    for entry in measurements:
        if args.only and entry["id"] != args.only:
            continue
        scenario = dict(entry["scenario"], name=entry["id"])
        if args.host:
            scenario["serving"] = dict(scenario["serving"], host=args.host)
        path = folder / f"{entry['id']}.yaml"
        path.write_text(yaml.safe_dump(scenario))
        done = subprocess.run([program, "whatif", "--scenario", str(path), "--db", str(folder / "bench.duckdb"),
                               "--no-progress", "--format", "json"], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{entry['id']}: {done.stderr.strip()}")
            continue
        point = json.loads(done.stdout)["serving"][0]
        for metric, published in entry["published"].items():
            predicted = point[metric]
            ratio = predicted / published
            if abs(ratio - 1) > 0.25:
                misses.append(entry["id"])
            print(f"{entry['id']:24s} {METRICS[metric]:9s} {published:10,.2f} {predicted:10,.2f} {ratio:6.2f}  "
                  f"{point['engine']} / {point['host']}, {point['bound_by']}, {point['gpu_busy_share']:.0%} / "
                  f"{point['host_wait_share']:.0%} / {point['cpu_utilization']:.0%}")
    print(f"\nwithin 25%: {'all' if not misses else 'all but ' + ', '.join(dict.fromkeys(misses))}")


if __name__ == "__main__":
    main()
