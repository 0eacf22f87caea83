"""Plan a deployment: the cheapest serving configuration that carries a load within its SLOs, searched.

A plan is a serving scenario (base, sweep, serving, target) with a `plan:` block. The sweep's GPUs, runtimes and
precisions, and the plan block's engines and engine settings (max_num_seqs, max_num_batched_tokens,
gpu_memory_utilization) span the candidate configurations. For each, the highest Poisson rate one replica (one GPU)
sustains within the SLOs (TTFT p99, page latency p99 from `target`; TPOT p99 from the plan block) is found by
bisection on the rate with the simulator, to 1%: the rate found meets every SLO and the rate 1% above it does not.
The replicas for the load follow (the cost model's GPUs for a target), then its cost (the cost model's money
terms), and the configuration's latency at the load it would carry (load / replicas per replica). Candidates are
ranked by monthly cost; the cheapest and the Pareto front of cost against page latency p99 are the answer, with the
`vllm serve` or SGLang command line of each.

Searches are independent tasks: they run in this process, in a local process pool, or as Ray tasks; each carries its
step costs and engine settings, so a worker needs no registry, and the same inputs give the same result wherever
they run (the pages of a rate are the same seeded draw scaled to it).
"""

from __future__ import annotations

import math
import shlex

import attrs
import numpy as np

from registry.serving.engine import make_pages, saturated_bound_pages_per_s, simulate

PLAN_KEYS = {"engines", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "tpot_p99_s",
             "gpus_per_node", "prices", "pages_per_s"}
RATE_TOLERANCE = 0.01  # the bisection's relative width: the rate found meets the SLOs, 1% above it does not
LOWEST_RATE_FRACTION = 2.0 ** -12  # below the saturation bound: a configuration that misses the SLOs here is out


class WorkerLost(RuntimeError):
    pass


@attrs.frozen
class SLO:
    ttft_p99_s: float | None = None
    page_latency_p99_s: float | None = None
    tpot_p99_s: float | None = None

    def met(self, summary: dict) -> bool:
        for key in ("ttft_p99_s", "page_latency_p99_s", "tpot_p99_s"):
            limit = getattr(self, key)
            value = summary.get(key)
            if limit is not None and (value is None or value > limit):
                return False
        return True


@attrs.frozen
class Task:
    """One candidate's search: everything a worker needs (picklable, no registry)."""

    index: int
    cost: object  # StepCost
    config: object  # EngineConfig
    spec: object  # ServingSpec (its page mix or request trace, host model)
    slo: SLO
    load_pages_per_s: float


def pages_at(spec, rate: float):
    """The scenario's pages sent at `rate` pages/s: the same seeded draw whatever the rate (arrival times scale)."""
    if spec.requests is not None:
        from registry.serving.scenario import trace_pages

        return trace_pages(spec, rate, None)
    return make_pages(spec.count, spec.seed, spec.mix, rate, preprocess_s_per_family=spec.preprocess_s,
                      render_s_per_family=spec.render_s)


def simulate_at(task: Task, rate: float) -> dict:
    result = simulate(task.cost, task.config, pages_at(task.spec, rate), host=task.spec.host_model)
    return result.summary()


def slo_margin(slo: SLO, summary: dict) -> float:
    """log of the largest value / limit over the SLOs: <= 0 when every SLO is met."""
    worst = -math.inf
    for key in ("ttft_p99_s", "page_latency_p99_s", "tpot_p99_s"):
        limit = getattr(slo, key)
        if limit is None:
            continue
        value = summary.get(key)
        if value is None:
            return math.inf
        worst = max(worst, math.log(max(value, 1e-12) / limit))
    return worst


def bounding_resource(summary: dict) -> str:
    """What bounds the rate found: the simulation's bound_by, or where it says `load` (the pages waited little:
    the SLO, not a queue, stopped the search), the busiest of the GPU, the host and the CPU pool."""
    if summary["bound_by"] != "load":
        return summary["bound_by"]
    shares = {"gpu": summary["gpu_busy_share"], "host": summary["host_wait_share"],
              "cpu-pool": summary["cpu_utilization"]}
    return max(shares, key=shares.get)


def rate_ceiling(task: Task, mean_new_tokens: float) -> float:
    """No rate above this is sustained: the engine's saturated decode bound, and the page pipeline's (its CPU
    workers over the mean preprocessing seconds of a page)."""
    ceiling = saturated_bound_pages_per_s(task.cost, task.config, mean_new_tokens)
    pages = pages_at(task.spec, 1.0)
    for workers, seconds in ((task.config.cpu_workers, pages.preprocess_s),
                             (task.config.render_workers, pages.render_s)):
        if workers and seconds is not None and float(np.mean(seconds)) > 0:
            ceiling = min(ceiling, workers / float(np.mean(seconds)))
    return ceiling


def search(task: Task) -> dict:
    """The highest rate (pages/s) one replica sustains within the SLOs, to RATE_TOLERANCE: a bracketed search on
    the log of the rate (false position on the SLO margin, Illinois-style, with bisection as its safeguard), then a
    check that 1% above the rate found misses an SLO; its summary, the summary at the load's share per replica,
    and the simulations run."""
    spec = task.spec
    tokens = (float(spec.requests.output_tokens.mean()) if spec.requests is not None
              else float(pages_at(spec, 1.0).new_tokens.mean()))
    runs = 0

    def evaluate(rate):
        nonlocal runs
        runs += 1
        summary = simulate_at(task, rate)
        return slo_margin(task.slo, summary), summary

    high = rate_ceiling(task, tokens)
    f_high, summary = evaluate(high)
    if f_high <= 0:
        best, best_summary = high, summary  # at the engine's ceiling: no rate above it is sustained
    else:
        low = high / 64
        f_low, best_summary = evaluate(low)
        if f_low > 0:
            low = high * LOWEST_RATE_FRACTION
            f_low, best_summary = evaluate(low)
            if f_low > 0:
                return {"index": task.index, "feasible": False, "best_rate_per_s": None, "simulations": runs}
        x_low, x_high = math.log(low), math.log(high)
        side = 0
        while x_high - x_low > math.log1p(RATE_TOLERANCE):
            width = x_high - x_low
            if math.isfinite(f_high) and f_high > f_low:
                x = x_low + width * (-f_low) / (f_high - f_low)
            else:
                x = x_low + width / 2
            # safeguard: stay well inside the bracket, so that it shrinks every step
            x = min(max(x, x_low + 0.1 * width), x_high - 0.1 * width)
            if width < 4 * math.log1p(RATE_TOLERANCE):
                x = x_low + width / 2
            f_x, summary = evaluate(math.exp(x))
            if f_x <= 0:
                x_low, f_low, best_summary = x, f_x, summary
                if side == -1:
                    f_high /= 2  # Illinois: the end that stayed twice has its value halved
                side = -1
            else:
                x_high, f_high = x, f_x
                if side == 1:
                    f_low /= 2
                side = 1
        best = math.exp(x_low)
        # the promise: 1% above the rate found misses an SLO (checked, not assumed from monotonicity)
        while True:
            f_above, summary = evaluate(best * (1 + RATE_TOLERANCE))
            if f_above > 0:
                break
            best, best_summary = best * (1 + RATE_TOLERANCE), summary
    from registry.pricing.model import SECONDS_PER_DAY, gpus_needed

    replicas = gpus_needed(task.load_pages_per_s * SECONDS_PER_DAY, best)
    operating = simulate_at(task, task.load_pages_per_s / replicas)
    runs += 1
    return {"index": task.index, "feasible": True, "best_rate_per_s": best, "simulations": runs,
            "replicas": replicas, "bound_by": bounding_resource(best_summary),
            "best_page_latency_p99_s": best_summary["page_latency_p99_s"],
            "ttft_p99_s": operating["ttft_p99_s"], "page_latency_p99_s": operating["page_latency_p99_s"],
            "tpot_p99_s": operating["tpot_p99_s"]}


def run_tasks(tasks: list[Task], workers: int = 1, ray_address: str | None = None, on_result=None) -> list[dict]:
    """Every task's search, here (workers 1), in a local process pool, or as Ray tasks at `ray_address` ('auto'
    or HOST:PORT); `on_result(result)` as each finishes (the caller stores it). Results in task order."""
    results = {}

    def done(result):
        results[result["index"]] = result
        if on_result is not None:
            on_result(result)

    if ray_address is not None:
        import ray

        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(search)
        pending = [remote.remote(task) for task in tasks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done(ray.get(ready[0]))
    elif workers > 1 and len(tasks) > 1:
        import concurrent.futures
        import multiprocessing

        from concurrent.futures.process import BrokenProcessPool

        with concurrent.futures.ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(search, task) for task in tasks]
            try:
                for future in concurrent.futures.as_completed(futures):
                    done(future.result())
            except BrokenProcessPool:
                raise WorkerLost(f"a worker process died: {len(results)} of {len(tasks)} searches finished and "
                                 "stored; run the plan again to search the rest") from None
    else:
        for task in tasks:
            done(search(task))
    return [results[task.index] for task in tasks]


def serve_command(model_id: str, engine: str, max_num_seqs: int, max_num_batched_tokens: int,
                  gpu_memory_utilization: float | None, weights_dtype: str, kv_cache_dtype: str,
                  ngram: tuple[int, int] | None = None) -> str:
    """The command line that starts the engine with these settings (vLLM's or SGLang's own flags)."""
    if engine.startswith("sglang"):
        words = ["python", "-m", "sglang.launch_server", "--model-path", model_id,
                 "--max-running-requests", str(max_num_seqs), "--chunked-prefill-size", str(max_num_batched_tokens)]
        if gpu_memory_utilization is not None:
            words += ["--mem-fraction-static", f"{gpu_memory_utilization:g}"]
        if weights_dtype == "fp8":
            words += ["--quantization", "fp8"]
        if kv_cache_dtype == "fp8":
            words += ["--kv-cache-dtype", "fp8_e4m3"]
        return shlex.join(words)
    words = (["env", "VLLM_USE_V1=0"] if engine.startswith("vllm-v0") else []) + [
        "vllm", "serve", model_id, "--max-num-seqs", str(max_num_seqs),
        "--max-num-batched-tokens", str(max_num_batched_tokens)]
    if gpu_memory_utilization is not None:
        words += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    if weights_dtype == "fp8":
        words += ["--quantization", "fp8"]
    if kv_cache_dtype == "fp8":
        words += ["--kv-cache-dtype", "fp8"]
    if ngram is not None:
        # DeepSeek-OCR's no-repeat n-gram processor; each request passes its ngram_size and window_size
        words += ["--logits-processors", "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor",
                  "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
    return shlex.join(words)


def parse_serve_command(command: str) -> dict:
    """The settings a serve_command line carries (its flags read back)."""
    words = shlex.split(command)
    flags = {"--max-num-seqs": "max_num_seqs", "--max-running-requests": "max_num_seqs",
             "--max-num-batched-tokens": "max_num_batched_tokens", "--chunked-prefill-size": "max_num_batched_tokens",
             "--gpu-memory-utilization": "gpu_memory_utilization", "--mem-fraction-static": "gpu_memory_utilization",
             "--quantization": "weights_dtype", "--kv-cache-dtype": "kv_cache_dtype"}
    out = {"weights_dtype": "bf16", "kv_cache_dtype": "bf16"}
    for flag, value in zip(words, words[1:]):
        if flag in flags:
            key = flags[flag]
            out[key] = (int(value) if key.startswith("max_") else float(value) if key == "gpu_memory_utilization"
                        else "fp8" if value.startswith("fp8") else value)
    out["engine"] = "sglang" if "sglang.launch_server" in words else (
        "vllm-v0" if "VLLM_USE_V1=0" in words else "vllm")
    return out
