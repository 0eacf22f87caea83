"""Result files of serving benchmarks -> runs, each with the tool's aggregates and (when the file lists them) its
requests. Recognized by content, with the field names each tool writes (docs/serving-measurements.md lists them
with their sources):

- `vllm bench serve --save-result` (vllm/benchmarks/serve.py) and the older `benchmarks/benchmark_serving.py`: one
  JSON object; `--save-detailed` adds per-request `input_lens`, `output_lens`, `ttfts` and `itls` (seconds) and
  `errors`. The older script names the endpoint `backend` where the newer names it `endpoint_type`.
- SGLang `python -m sglang.bench_serving --output-file` (python/sglang/bench_serving.py): JSON Lines, one object per
  run; `--output-details` adds the same per-request lists. Its end-to-end latency is `*_e2e_latency_ms`.
- GuideLLM's benchmarks report (`guidellm benchmark --output-path X.json|.yaml`): a `benchmarks` list, one
  benchmark per strategy run, each with `metrics` distributions and its `requests`.

A figure that is NaN, infinite (but a request rate: inf means all at once) or negative, a truncated file or a file
of another tool is refused in one line naming the file and the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from analyzer.fileio import quote

LATENCY_METRICS = tuple(f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el")
                        for stat in ("mean", "median", "p99"))
TOOLS = ("vllm-bench-serve", "sglang-bench-serving", "guidellm")


class BenchResultError(ValueError):
    """A result file that cannot be taken in; its message is one line."""


@attrs.frozen
class RequestRows:
    """Per-request figures of a run, in the order the tool lists them."""

    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    ttft_ms: tuple[float | None, ...]
    e2el_ms: tuple[float | None, ...]
    succeeded: tuple[bool, ...]


@attrs.frozen
class BenchRun:
    """One benchmark run as its tool reported it (times in ms, rates per second)."""

    tool: str
    index: int  # the run's position in its file (1-based: a JSON Lines line, a GuideLLM benchmark)
    model_id: str | None
    requests: int  # sent
    completed: int
    duration_s: float
    request_rate_per_s: float | None  # None: all at once (rate inf)
    burstiness: float
    max_concurrency: int | None
    total_input_tokens: int
    total_output_tokens: int
    request_throughput_per_s: float
    output_throughput_tokens_per_s: float
    latency_ms: dict[str, float | None]  # LATENCY_METRICS
    per_request: RequestRows | None
    raw: dict  # the tool's aggregates (per-request lists left out)


def parse_results(text: str, source: str) -> list[BenchRun]:
    """The runs of a result file's text (JSON, JSON Lines or YAML), by its content."""
    stripped = text.strip()
    if not stripped:
        raise BenchResultError(f"{source}: empty file")
    documents = _documents(stripped, source)
    first = documents[0]
    if isinstance(first, dict) and isinstance(first.get("benchmarks"), list):
        if len(documents) > 1:
            raise BenchResultError(f"{source}: a GuideLLM report is one document, got {len(documents)}")
        return _guidellm(first, source)
    runs = []
    for index, document in enumerate(documents, start=1):
        where = f"{source}: run {index}" if len(documents) > 1 else source
        if not isinstance(document, dict):
            raise BenchResultError(f"{where}: not a serving benchmark result (a JSON object per run), got "
                                   f"{type(document).__name__}")
        if "mean_e2e_latency_ms" in document or "total_output_tokens_retokenized" in document:
            runs.append(_sglang(document, where, index))
        elif "completed" in document and "mean_ttft_ms" in document:
            runs.append(_vllm(document, where, index))
        else:
            raise BenchResultError(f"{where}: not a result of vllm bench serve, SGLang bench_serving or GuideLLM "
                                   f"({_looks_like(document)})")
    return runs


def _documents(text: str, source: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as whole:
        if text.startswith("{") and "\n" in text:
            lines = [line for line in text.splitlines() if line.strip()]
            try:
                return [json.loads(line) for line in lines]
            except json.JSONDecodeError:
                pass
        if text.startswith(("{", "[")):
            raise BenchResultError(f"{source}: not valid JSON (truncated?): {whole.msg} at line {whole.lineno} "
                                   f"column {whole.colno}") from None
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BenchResultError(f"{source}: neither JSON nor YAML{where}") from None
    return [document]


def _looks_like(document: dict) -> str:
    keys = set(document)
    if {"env", "rows"} <= keys:
        return "it is a measurement file of single forward passes: ingest --measurements"
    if "report_id" in keys or "schema_version" in keys:
        return "it is an analysis report: ingest REPORT"
    shown = ", ".join(sorted(map(str, keys))[:6])
    return f"keys: {shown}" if shown else "an empty object"


def _number(document: dict, key: str, where: str, required: bool = True, integer: bool = False,
            allow_inf: bool = False):
    value = document.get(key)
    if value is None:
        if required:
            raise BenchResultError(f"{where}: missing field {key!r}")
        return None
    if isinstance(value, str) and allow_inf and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BenchResultError(f"{where}: {key} must be a number, got {quote(value)}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise BenchResultError(f"{where}: {key} is {value}: not a measured figure")
    if value < 0:
        raise BenchResultError(f"{where}: {key} is negative ({value})")
    if integer:
        if value != int(value):
            raise BenchResultError(f"{where}: {key} must be a whole number, got {value}")
        return int(value)
    return float(value)


def _rate(document: dict, key: str, where: str) -> float | None:
    rate = _number(document, key, where, required=False, allow_inf=True)
    if rate is None or math.isinf(rate):
        return None
    if rate == 0:
        raise BenchResultError(f"{where}: {key} is 0")
    return rate


def _aggregates(document: dict, per_request: set[str]) -> dict:
    return {k: v for k, v in document.items() if k not in per_request}


_PER_REQUEST = {"input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors", "start_times", "latencies",
                "queue_times"}


def _lists_of(document: dict, where: str) -> RequestRows | None:
    """The per-request lists of a vLLM or SGLang result (--save-detailed, --output-details), or None."""
    if "input_lens" not in document and "output_lens" not in document:
        return None
    inputs, outputs = document.get("input_lens"), document.get("output_lens")
    ttfts, itls, errors = document.get("ttfts"), document.get("itls"), document.get("errors")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise BenchResultError(f"{where}: input_lens and output_lens must be lists of the same length")
    n = len(inputs)
    for name, values in (("ttfts", ttfts), ("itls", itls), ("errors", errors)):
        if values is not None and (not isinstance(values, list) or len(values) != n):
            raise BenchResultError(f"{where}: {name} must list one value per request ({n})")
    rows = {"input_tokens": [], "output_tokens": [], "ttft_ms": [], "e2el_ms": [], "succeeded": []}
    for i in range(n):
        item = f"{where}: request {i + 1}"
        rows["input_tokens"].append(_number({"input_lens": inputs[i]}, "input_lens", item, integer=True))
        rows["output_tokens"].append(_number({"output_lens": outputs[i]}, "output_lens", item, integer=True))
        succeeded = not (errors and errors[i])
        ttft = None
        if ttfts is not None and succeeded:
            ttft = _number({"ttfts": ttfts[i]}, "ttfts", item) * 1e3  # seconds in the file
        e2el = None
        if ttft is not None and itls is not None and isinstance(itls[i], list):
            gaps = [_number({"itls": gap}, "itls", item) for gap in itls[i]]
            e2el = ttft + 1e3 * sum(gaps)
        rows["ttft_ms"].append(ttft)
        rows["e2el_ms"].append(e2el)
        rows["succeeded"].append(bool(succeeded))
    return RequestRows(**{k: tuple(v) for k, v in rows.items()})


def _run(tool: str, document: dict, where: str, index: int, latency: dict, requests_key: str) -> BenchRun:
    """A run of vLLM's or SGLang's result, which name their totals, throughputs and load alike."""
    completed = _number(document, "completed", where, integer=True)
    failed = _number(document, "failed", where, required=False, integer=True) or 0
    return BenchRun(
        tool=tool, index=index, model_id=document.get("model_id"),
        requests=_number(document, "num_prompts", where, required=False, integer=True) or completed + failed,
        completed=completed, duration_s=_number(document, "duration", where),
        request_rate_per_s=_rate(document, "request_rate", where),
        burstiness=_number(document, "burstiness", where, required=False) or 1.0,
        max_concurrency=_number(document, "max_concurrency", where, required=False, integer=True),
        total_input_tokens=_number(document, "total_input_tokens", where, integer=True),
        total_output_tokens=_number(document, "total_output_tokens", where, integer=True),
        request_throughput_per_s=_number(document, requests_key, where),
        output_throughput_tokens_per_s=_number(document, "output_throughput", where),
        latency_ms={name: latency[name] for name in LATENCY_METRICS}, per_request=_lists_of(document, where),
        raw=_aggregates(document, _PER_REQUEST))


def _vllm(document: dict, where: str, index: int) -> BenchRun:
    latency = {name: _number(document, name, where, required=False) for name in LATENCY_METRICS}
    latencies = document.get("latencies")
    if latency["mean_e2el_ms"] is None and isinstance(latencies, list) and latencies:
        # e2el is not in vllm bench serve's default --percentile-metrics, but each request's latency (seconds,
        # 0 for a failed one) is written even without --save-detailed
        import numpy as np

        values = np.array([_number({"latencies": v}, "latencies", where) for v in latencies]) * 1e3
        values = values[values > 0]
        if len(values):
            latency.update(mean_e2el_ms=float(values.mean()), median_e2el_ms=float(np.median(values)),
                           p99_e2el_ms=float(np.percentile(values, 99)))
    # the earliest benchmark_serving.py wrote request throughput as "request_inthroughput"
    key = "request_throughput" if "request_throughput" in document else "request_inthroughput"
    return _run("vllm-bench-serve", document, where, index, latency, key)


def _sglang(document: dict, where: str, index: int) -> BenchRun:
    latency = {name: _number(document, name, where, required=False) for name in LATENCY_METRICS
               if "e2el" not in name}
    for stat in ("mean", "median", "p99"):
        latency[f"{stat}_e2el_ms"] = _number(document, f"{stat}_e2e_latency_ms", where, required=False)
    return _run("sglang-bench-serving", document, where, index, latency, "request_throughput")


def _distribution(metrics: dict, name: str, where: str, scale: float = 1.0) -> dict[str, float | None]:
    """mean, median and p99 of a GuideLLM metric's distribution over the successful requests."""
    metric = metrics.get(name)
    if metric is None:
        return {"mean": None, "median": None, "p99": None}
    if not isinstance(metric, dict) or not isinstance(metric.get("successful"), dict):
        raise BenchResultError(f"{where}: metrics.{name} must have a 'successful' distribution")
    dist = metric["successful"]
    path = f"{where}: metrics.{name}.successful"
    percentiles = dist.get("percentiles") or {}
    if not isinstance(percentiles, dict):
        raise BenchResultError(f"{path}.percentiles must be a mapping")
    out = {"mean": _number(dist, "mean", path, required=False),
           "median": _number(dist, "median", path, required=False),
           "p99": _number(percentiles, "p99", f"{path}.percentiles", required=False)}
    return {k: None if v is None else v * scale for k, v in out.items()}


def _strategy(args: dict, where: str) -> tuple[float | None, int | None]:
    """(request rate or None, max concurrency or None) of a GuideLLM benchmark's strategy."""
    strategy = args.get("strategy") if isinstance(args, dict) else None
    if not isinstance(strategy, dict):
        raise BenchResultError(f"{where}: args.strategy is missing (the load the benchmark ran)")
    kind = strategy.get("type_") or strategy.get("type")
    if kind == "synchronous":
        return None, 1
    if kind == "concurrent":
        return None, _number(strategy, "streams", f"{where}: args.strategy", integer=True)
    if kind in ("constant", "poisson", "async"):
        return _rate(strategy, "rate", f"{where}: args.strategy"), _number(
            strategy, "max_concurrency", f"{where}: args.strategy", required=False, integer=True)
    if kind == "throughput":
        return None, _number(strategy, "max_concurrency", f"{where}: args.strategy", required=False, integer=True)
    raise BenchResultError(f"{where}: args.strategy.type_ {quote(kind)} is not a load this registry replays "
                           "(synchronous, concurrent, constant, poisson, throughput)")


def _tpot_of_rows(rows: RequestRows | None) -> dict[str, float | None]:
    """mean, median and p99 TPOT (ms) of the listed successful requests of more than one output token."""
    import numpy as np

    values = [] if rows is None else [
        (e2el - ttft) / (out - 1) for e2el, ttft, out, ok in zip(rows.e2el_ms, rows.ttft_ms, rows.output_tokens,
                                                                rows.succeeded)
        if ok and out > 1 and e2el is not None and ttft is not None]
    if not values:
        return {"mean_tpot_ms": None, "median_tpot_ms": None, "p99_tpot_ms": None}
    return {"mean_tpot_ms": float(np.mean(values)), "median_tpot_ms": float(np.median(values)),
            "p99_tpot_ms": float(np.percentile(values, 99))}


def _guidellm(document: dict, source: str) -> list[BenchRun]:
    benchmarks = document["benchmarks"]
    if not benchmarks:
        raise BenchResultError(f"{source}: the GuideLLM report lists no benchmarks")
    runs = []
    for index, bench in enumerate(benchmarks, start=1):
        where = f"{source}: benchmarks[{index - 1}]"
        if not isinstance(bench, dict) or not isinstance(bench.get("metrics"), dict):
            raise BenchResultError(f"{where}: a GuideLLM benchmark needs its metrics")
        metrics = bench["metrics"]
        # v0.2/0.3 keep the strategy in args and the totals beside the metrics; v0.4+ in config and in metrics
        newer = isinstance(bench.get("config"), dict)
        rate, concurrency = _strategy(bench["config"] if newer else bench.get("args") or {}, where)
        requests = bench.get("requests") or {}
        if not isinstance(requests, dict):
            raise BenchResultError(f"{where}: requests must be a mapping of successful / errored / incomplete lists")
        successful = requests.get("successful") or []
        errored = requests.get("errored") or []
        rows = None
        if successful:
            items = [(r, True) for r in successful] + [(r, False) for r in errored]
            inputs, outputs, ttfts, e2els, ok = [], [], [], [], []
            for i, (r, good) in enumerate(items):
                item = f"{where}: request {i + 1}"
                if not isinstance(r, dict):
                    raise BenchResultError(f"{item}: must be a mapping")
                inputs.append(_number(r, "prompt_tokens", item, integer=True))
                outputs.append(_number(r, "output_tokens", item, required=good, integer=True) or 0)
                ttfts.append(_number(r, "time_to_first_token_ms", item, required=False) if good else None)
                latency = _number(r, "request_latency", item, required=False) if good else None
                e2els.append(None if latency is None else latency * 1e3)  # seconds in the report
                ok.append(good)
            rows = RequestRows(tuple(inputs), tuple(outputs), tuple(ttfts), tuple(e2els), tuple(ok))
        totals = (metrics.get("request_totals") if newer else bench.get("request_totals")) or {}
        completed = _number(totals, "successful", f"{where}: request_totals", required=False, integer=True)
        if completed is None:
            completed = len(successful)
        if not completed:
            raise BenchResultError(f"{where}: no successful requests (request_totals.successful)")
        sent = _number(totals, "total", f"{where}: request_totals", required=False, integer=True) or completed
        duration = _number(bench, "duration", where, required=False)
        if duration is None:
            start = _number(bench, "start_time", where)
            end = _number(bench, "end_time", where)
            duration = end - start
        if duration <= 0:
            raise BenchResultError(f"{where}: its duration is {duration:g} s")
        prompt = _distribution(metrics, "prompt_token_count", where)
        output = _distribution(metrics, "output_token_count", where)
        input_total = sum(rows.input_tokens) if rows else round((prompt["mean"] or 0) * completed)
        output_total = sum(o for o, g in zip(rows.output_tokens, rows.succeeded) if g) if rows else round(
            (output["mean"] or 0) * completed)
        rps = _distribution(metrics, "requests_per_second", where)["mean"]
        tps = _distribution(metrics, "output_tokens_per_second", where)["mean"]
        latency: dict[str, float | None] = {}
        for metric, name, scale in (("ttft", "time_to_first_token_ms", 1.0), ("tpot", "time_per_output_token_ms", 1.0),
                                    ("itl", "inter_token_latency_ms", 1.0), ("e2el", "request_latency", 1e3)):
            for stat, value in _distribution(metrics, name, where, scale).items():
                latency[f"{stat}_{metric}_ms"] = value
        if newer:
            # v0.4+ divides the whole request's time (first token included) by the output tokens: not the TPOT of
            # vLLM and SGLang, (latency - TTFT) / (output - 1), which is taken from the requests when listed
            latency.update(_tpot_of_rows(rows))
        runs.append(BenchRun(
            tool="guidellm", index=index, model_id=(bench.get("worker") or {}).get("backend_model")
            if isinstance(bench.get("worker"), dict) else None,
            requests=sent, completed=completed, duration_s=duration, request_rate_per_s=rate, burstiness=1.0,
            max_concurrency=concurrency, total_input_tokens=int(input_total), total_output_tokens=int(output_total),
            request_throughput_per_s=rps if rps is not None else completed / duration,
            output_throughput_tokens_per_s=tps if tps is not None else output_total / duration,
            latency_ms={name: latency[name] for name in LATENCY_METRICS}, per_request=rows,
            raw={k: v for k, v in bench.items() if k not in ("requests",)}))
    return runs
