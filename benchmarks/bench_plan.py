"""How long a 200-configuration plan search takes on this machine, with 1 and 2 local workers and as Ray tasks.

The plan: 4 GPUs (H100 SXM, H200, A100-80G, L40S) x 2 engines (vllm-v1, sglang) x 25 engine settings (max_num_seqs
16..256 x max_num_batched_tokens 2,048..32,768), a million v1 Gundam pages a day of 512 new tokens, 300 simulated
pages per rate. The step costs are derived first (untimed in the search figures; printed apart); then the same 200
searches run in this process, in a pool of 2 local worker processes, and as Ray tasks on a local Ray instance of 2
CPUs; the three must agree exactly.

Run: python benchmarks/bench_plan.py
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import yaml

PLAN = {
    "name": "bench-plan-200",
    "base": {"profile": "dsocr-standard-v1"},
    "sweep": {"hardware": ["h100-sxm", "h200", "a100-80g", "l40s"], "runtime": ["vllm"]},
    "serving": {"cpu_workers": 32, "pages": {"count": 300, "seed": 7},
                "page_mix": {"new_tokens": {"median": 512, "p90": 512, "max": 512}}},
    "target": {"pages_per_day": 1_000_000, "ttft_p99_s": 10, "page_latency_p99_s": 60},
    "plan": {"engines": ["vllm-v1", "sglang"], "max_num_seqs": [16, 32, 64, 128, 256],
             "max_num_batched_tokens": [2048, 4096, 8192, 16384, 32768]},
}


def main() -> None:
    from registry.pricing.whatif import load_scenario
    from registry.serving.plan import run_tasks
    from registry.store.db import Registry
    from registry.store.plans import candidates, plan_spec

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "plan.yaml"
        path.write_text(yaml.safe_dump(PLAN))
        registry = Registry(str(pathlib.Path(folder) / "r.duckdb"), writes=True)
        registry.ensure_schema(auto_create=True)
        scenario = load_scenario(path)
        started = time.perf_counter()
        cands = candidates(registry, scenario, plan_spec(scenario))
        tasks = [c.task for c in cands if c.task is not None]
        print(f"{len(cands)} configurations ({len(tasks)} to search): step costs derived in "
              f"{time.perf_counter() - started:.1f} s (probes analyzed and priced once per GPU)")
        registry.dispose()
    figures = {}
    results = {}
    for label, kwargs in (("1 local worker", {"workers": 1}), ("2 local workers", {"workers": 2})):
        started = time.perf_counter()
        results[label] = run_tasks(tasks, **kwargs)
        figures[label] = time.perf_counter() - started
        print(f"{label}: {figures[label]:.1f} s")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        results["ray"] = run_tasks(tasks, ray_address="auto")
        figures["ray"] = time.perf_counter() - started
    finally:
        ray.shutdown()
    print(f"Ray, 2 CPUs: {figures['ray']:.1f} s")
    same = results["1 local worker"] == results["2 local workers"] == results["ray"]
    simulations = sum(r["simulations"] for r in results["ray"])
    print(f"speed-up 1 -> 2 workers: {figures['1 local worker'] / figures['2 local workers']:.2f}x; Ray / pool: "
          f"{figures['ray'] / figures['2 local workers']:.2f}; results identical: {same}; {simulations:,} "
          f"simulations ({simulations / len(tasks):.1f} per configuration)")


if __name__ == "__main__":
    main()
