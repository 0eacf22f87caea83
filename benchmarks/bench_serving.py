"""Serving simulation speed, and the README's serving table.

Prints, per engine profile with its default host profile and the vLLM recipe's n-gram processor, the time to
simulate 10,000 pages of the example page mix on the H100 under vllm, offline and at a Poisson rate of half the
offline throughput; the end-to-end time of queries/examples/serving.yaml (4 rates x 3 GPUs) on a fresh registry; and
for the standard page (dsocr-standard-v1, 512 new tokens) on H100, H200 and A100-40G under vllm-v1: the saturated
pages/s and output tokens/s (offline, all pages queued at t=0) and the p50/p99 page latency at half that rate.

Run: python benchmarks/bench_serving.py [--pages 10000]
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--table-pages", type=int, default=2_000)
    args = parser.parse_args()

    from registry.pricing.catalog import resolve_hardware, resolve_runtime
    from registry.serving.engine import EngineConfig, PageMix, make_pages, simulate
    from registry.serving.host import NGramProcessor
    from registry.serving.profiles import shipped_profiles
    from registry.serving.step_cost import step_costs
    from registry.store.db import Registry

    folder = pathlib.Path(tempfile.mkdtemp())
    url = str(folder / "bench.duckdb")
    registry = Registry(url)
    registry.upgrade()
    gpus = ["h100-sxm", "h200", "a100-40g"]
    with registry.begin() as conn:
        hardware = [resolve_hardware(conn, name)[0] for name in gpus]
        runtime = resolve_runtime(conn, "vllm")[0]
    started = time.perf_counter()
    costs = step_costs(registry, "bench", "dsocr-standard-v1", {}, ["1654x2339", "2480x3508"], hardware, [runtime])
    print(f"step costs of 3 GPUs (probes analyzed, priced, fitted): {time.perf_counter() - started:6.2f} s")
    registry.dispose()

    mix = PageMix(median=700, p90=1600, max_tokens=8000, shares=(0.8, 0.2))
    engines = {p.name: p for _, p in shipped_profiles("engine")}
    hosts = {p.name: p for _, p in shipped_profiles("host")}
    for name, engine in engines.items():
        host = engine.host_model(hosts[engine.default_host], NGramProcessor(30, 90))
        cost = costs[0].without_runtime_step_overhead()
        config = EngineConfig(max_num_seqs=engine.max_num_seqs, max_num_batched_tokens=engine.max_num_batched_tokens,
                              block_size=engine.block_size, policy=engine.policy,
                              capture_sizes=engine.capture_sizes, cpu_workers=32)
        preprocess = [hosts[engine.default_host].preprocess_s("v1", "gundam", w * h / 1e6, crops)
                      for w, h, crops in ((1654, 2339, 6), (2480, 3508, 6))]
        offline_pages_per_s = None
        for label in ("offline", "half load"):
            rate = None if offline_pages_per_s is None else offline_pages_per_s / 2
            pages = make_pages(args.pages, 7, mix, rate, preprocess_s_per_family=preprocess)
            started = time.perf_counter()
            result = simulate(cost, config, pages, host=host)
            seconds = time.perf_counter() - started
            summary = result.summary()
            offline_pages_per_s = offline_pages_per_s or summary["pages_per_s"]
            print(f"h100-sxm {name:14s} {label:9s} {args.pages:,} pages in {seconds:5.2f} s ({result.steps:,} steps, "
                  f"{summary['pages_per_s']:.2f} pages/s; goal: 10,000 pages <= 2 s)")

    started = time.perf_counter()
    subprocess.run([str(pathlib.Path(sys.executable).with_name("dsocr-registry")), "whatif", "--scenario",
                    str(REPO / "queries" / "examples" / "serving.yaml"), "--db", str(folder / "fresh.duckdb"),
                    "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    print(f"queries/examples/serving.yaml end to end on a fresh registry: {time.perf_counter() - started:6.2f} s "
          "(goal <= 30 s)")

    standard = PageMix(median=512, p90=512, max_tokens=512, shares=(1.0, 0.0))
    v1 = engines["vllm-v1"]
    v1_host = v1.host_model(hosts[v1.default_host], None)
    v1_config = EngineConfig(capture_sizes=v1.capture_sizes, cpu_workers=32)
    print(f"\nstandard page (dsocr-standard-v1, 512 new tokens), vllm@3 under vllm-v1 on host {v1.default_host}, "
          f"max_num_seqs 256, 8192 tokens per step, 32 preprocessing workers, {args.table_pages:,} pages:")
    print("| GPU | saturated pages/s | output tokens/s | p50 / p99 page latency at half that rate (s) |")
    print("|---|---:|---:|---:|")
    standard_s = [hosts[v1.default_host].preprocess_s("v1", "gundam", 1654 * 2339 / 1e6, 6)]
    for name, cost in zip(gpus, costs):
        cost = cost.without_runtime_step_overhead()
        saturated = simulate(cost, v1_config, make_pages(args.table_pages, 7, standard, None,
                                                         preprocess_s_per_family=standard_s * 2),
                             host=v1_host).summary()
        half = saturated["pages_per_s"] / 2
        at_half = simulate(cost, v1_config, make_pages(args.table_pages, 7, standard, half,
                                                       preprocess_s_per_family=standard_s * 2),
                           host=v1_host).summary()
        print(f"| {name} | {saturated['pages_per_s']:.2f} | {saturated['output_tokens_per_s']:,.0f} | "
              f"{at_half['page_latency_p50_s']:.2f} / {at_half['page_latency_p99_s']:.2f} (at {half:.2f} pages/s) |")


if __name__ == "__main__":
    main()
