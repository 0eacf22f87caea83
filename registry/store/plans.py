"""Plans in the registry: a plan scenario -> its candidate configurations (step costs from the registry, engine
settings from the plan) -> searches (registry.serving.plan, run anywhere) -> plans and plan_candidates rows, each
candidate stored as its search finishes, so an interrupted plan resumes where it stopped -> v_plan_candidates.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import itertools
import json
import math

import attrs
import sqlalchemy as sa

from analyzer import ranges
from analyzer.fileio import quote
from registry.pricing.whatif import Scenario, ScenarioError, scenario_from_mapping
from registry.serving.plan import PLAN_KEYS, SLO, Task, WorkerLost, parse_serve_command, run_tasks, serve_command
from registry.store.db import Registry, RegistryError

PLAN_COLUMNS = ["candidate_index", "hardware", "runtime", "engine", "weights_dtype", "kv_cache_dtype",
                "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "status", "best_rate_per_s",
                "replicas", "nodes", "usd_per_hour", "monthly_usd", "usd_per_1000_pages", "ttft_p99_s",
                "page_latency_p99_s", "tpot_p99_s", "bound_by", "cost_rank", "on_pareto_front", "command"]


class PlanError(RegistryError):
    pass


@attrs.frozen
class PlanSpec:
    engines: tuple[str, ...]
    max_num_seqs: tuple[int | None, ...]
    max_num_batched_tokens: tuple[int | None, ...]
    gpu_memory_utilization: tuple[float | None, ...]
    slo: SLO
    target_pages_per_day: float
    gpus_per_node: int
    prices: dict


def _int_list(scenario: Scenario, key: str, values, bounds: ranges.Range) -> tuple:
    if values is None:
        return (None,)
    values = values if isinstance(values, list) else [values]
    if not values:
        raise scenario.fail(("plan", key), "must list at least one value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not bounds.contains(value):
            raise scenario.fail(("plan", key), f"each value must be an integer {bounds.phrase()}, got {quote(value)}")
    return tuple(dict.fromkeys(values))


def plan_spec(scenario: Scenario) -> PlanSpec:
    """The checked plan block (and the target it plans for); one line FILE:LINE: key: message when wrong."""
    data = scenario.data
    block = data.get("plan")
    if not isinstance(block, dict):
        raise scenario.fail(("plan",), "a plan file needs a plan: block (engines, max_num_seqs, "
                                       "max_num_batched_tokens, gpu_memory_utilization, tpot_p99_s, gpus_per_node, "
                                       "prices)")
    for key in block:
        if key not in PLAN_KEYS:
            raise scenario.fail(("plan", key), f"unknown key; known: {', '.join(sorted(PLAN_KEYS))}")
    if "serving" not in data:
        raise scenario.fail((), "a plan needs a serving block (the pages: page_mix or requests, and pages.count)")
    target = data.get("target") or {}
    if ("pages_per_day" in target) == ("pages_per_s" in block):
        raise scenario.fail(("target",), "a plan needs target.pages_per_day or plan.pages_per_s (the load to "
                                         "carry), one of them")
    if "pages_per_s" in block:
        rate = block["pages_per_s"]
        if not ranges.ARRIVAL_RATE_PER_S.contains(rate):
            raise scenario.fail(("plan", "pages_per_s"), ranges.ARRIVAL_RATE_PER_S.problem(rate))
        pages_per_day = float(rate) * 86400.0
    else:
        pages_per_day = float(target["pages_per_day"])
    if not any(key in target for key in ("ttft_p99_s", "page_latency_p99_s")) and "tpot_p99_s" not in block:
        raise scenario.fail(("target",), "a plan needs an SLO: target.ttft_p99_s, target.page_latency_p99_s or "
                                         "plan.tpot_p99_s")
    engines = block.get("engines", ["vllm-v1"])
    engines = engines if isinstance(engines, list) else [engines]
    if not engines or not all(isinstance(e, str) and e.strip() and len(e) <= 110 for e in engines):
        raise scenario.fail(("plan", "engines"), f"must list engine profiles (engine list), got {quote(engines)}")
    utilization = block.get("gpu_memory_utilization")
    utilizations: tuple = (None,)
    if utilization is not None:
        utilization = utilization if isinstance(utilization, list) else [utilization]
        for value in utilization:
            if not ranges.GPU_MEMORY_UTILIZATION.contains(value):
                raise scenario.fail(("plan", "gpu_memory_utilization"),
                                    f"{ranges.GPU_MEMORY_UTILIZATION.problem(value)}")
        utilizations = tuple(dict.fromkeys(float(v) for v in utilization))
    tpot = block.get("tpot_p99_s")
    if tpot is not None and not ranges.TARGET_LATENCY_S.contains(tpot):
        raise scenario.fail(("plan", "tpot_p99_s"), ranges.TARGET_LATENCY_S.problem(tpot))
    gpus_per_node = block.get("gpus_per_node", 8)
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or not 1 <= gpus_per_node <= 1024:
        raise scenario.fail(("plan", "gpus_per_node"), f"must be an integer from 1 to 1,024, got "
                                                       f"{quote(gpus_per_node)}")
    prices = block.get("prices") or {}
    if not isinstance(prices, dict):
        raise scenario.fail(("plan", "prices"), "must map GPU names to dollars per GPU-hour")
    for name, price in prices.items():
        if not ranges.USD_PER_HOUR.contains(price):
            raise scenario.fail(("plan", "prices", name), ranges.USD_PER_HOUR.problem(price))
    return PlanSpec(engines=tuple(dict.fromkeys(engines)),
                    max_num_seqs=_int_list(scenario, "max_num_seqs", block.get("max_num_seqs"), ranges.MAX_NUM_SEQS),
                    max_num_batched_tokens=_int_list(scenario, "max_num_batched_tokens",
                                                     block.get("max_num_batched_tokens"),
                                                     ranges.MAX_NUM_BATCHED_TOKENS),
                    gpu_memory_utilization=utilizations,
                    slo=SLO(ttft_p99_s=target.get("ttft_p99_s"), page_latency_p99_s=target.get("page_latency_p99_s"),
                            tpot_p99_s=tpot),
                    target_pages_per_day=pages_per_day, gpus_per_node=gpus_per_node,
                    prices={str(k).lower(): float(v) for k, v in prices.items()})


@attrs.frozen
class Candidate:
    index: int
    hardware_id: int
    hardware: str
    runtime_profile_id: int
    runtime: str
    engine: str
    engine_version: int
    weights_dtype: str
    kv_cache_dtype: str
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float | None
    kv_pool_blocks: int
    usd_per_hour: float | None
    command: str
    task: Task | None  # None: unsupported
    note: str = ""


def _sub_scenario(scenario: Scenario, hardware: str, runtime, weights, kv_cache, engine: str,
                  utilization: float | None) -> Scenario:
    data = copy.deepcopy(scenario.data)
    data.pop("plan")
    sweep = {"hardware": [hardware], "runtime": [runtime]}
    if weights is not None:
        sweep["weights_dtype"] = [weights]
    if kv_cache is not None:
        sweep["kv_cache_dtype"] = [kv_cache]
    data["sweep"] = sweep
    serving = data["serving"]
    serving["engine"] = engine
    if utilization is not None:
        serving["gpu_memory_utilization"] = utilization
    serving["arrival"] = {"rate_per_s": [1.0]}  # the search sets the rates
    sub = scenario_from_mapping(data, scenario.source, allow_profile_paths=scenario.allow_profile_paths)
    return attrs.evolve(sub, lines=scenario.lines, folder=scenario.folder)


def sub_scenarios(scenario: Scenario, spec: PlanSpec):
    """(serving scenario, its axes) of each GPU x runtime x precision x engine x utilization, in plan order."""
    from registry.pricing.whatif import precisions

    sweep = scenario.data.get("sweep") or {}
    for name, runtime, (weights, kv_cache), engine, utilization in itertools.product(
            sweep.get("hardware") or [], sweep.get("runtime") or ["vllm"], precisions(scenario), spec.engines,
            spec.gpu_memory_utilization):
        yield (_sub_scenario(scenario, name, runtime, weights, kv_cache, engine, utilization),
               (name, runtime, weights, kv_cache, engine, utilization))


def plan_analyses(registry: Registry, scenario: Scenario, spec: PlanSpec) -> list[tuple]:
    """(workload, execution) of every probe the plan's step costs need (the service analyzes the new ones first)."""
    from registry.serving.scenario import probe_analyses, serving_spec

    out = []
    for sub, _ in sub_scenarios(scenario, spec):
        for item in probe_analyses(registry, sub, serving_spec(sub, points=1)):
            if item not in out:
                out.append(item)
    return out


def candidates(registry: Registry, scenario: Scenario, spec: PlanSpec, progress: bool = False, analyze=None,
               write=None) -> list[Candidate]:
    """Every configuration of the plan, in a fixed order (GPU, runtime, precision, engine, utilization,
    max_num_seqs, token budget), with its search task (None where the GPU cannot run it)."""
    from registry.pricing.catalog import resolve_hardware
    from registry.serving.scenario import serving_plan, serving_spec
    from analyzer.variants import VARIANTS

    hardware_names = (scenario.data.get("sweep") or {}).get("hardware") or []
    out: list[Candidate] = []
    with registry.begin() as conn:
        prices = {}
        for name in hardware_names:
            hid, canonical = resolve_hardware(conn, name)
            price = spec.prices.get(canonical, spec.prices.get(str(name).lower()))
            if price is None:
                price = conn.execute(sa.text("SELECT usd_per_hour FROM hardware WHERE id = :h"), {"h": hid}).scalar()
            prices[canonical] = price
    for sub, (name, runtime, weights, kv_cache, engine, utilization) in sub_scenarios(scenario, spec):
        try:
            serving = serving_spec(sub, points=1)
            plan = serving_plan(registry, sub, serving, progress, None, None, analyze, write)
        except ScenarioError as exc:
            message = str(exc)
            if "fp8" not in message:
                raise
            # a GPU that cannot run this precision: its candidates are listed as unsupported
            with registry.begin() as conn:
                hid, canonical = resolve_hardware(conn, name)
                rid = conn.execute(sa.text("SELECT id FROM runtime_profiles WHERE name = :n ORDER BY version DESC "
                                           "LIMIT 1"), {"n": str(runtime).split("@")[0]}).scalar()
            for seqs, tokens in itertools.product(spec.max_num_seqs, spec.max_num_batched_tokens):
                out.append(Candidate(len(out), hid, canonical, rid, str(runtime), engine, 0, weights or "bf16",
                                     kv_cache or "bf16", seqs or 0, tokens or 0, utilization, 0, prices[canonical],
                                     "", None, message.split(": ", 1)[-1]))
            continue
        model_id = VARIANTS[serving.families[0].variant].model_id
        largest_prefill = max(f.prefill_tokens for f in serving.families)
        for hid, rid, cost, config in plan.points:
            for seqs, tokens in itertools.product(spec.max_num_seqs, spec.max_num_batched_tokens):
                config_here = attrs.evolve(config, max_num_seqs=seqs or config.max_num_seqs,
                                           max_num_batched_tokens=tokens or config.max_num_batched_tokens)
                command = serve_command(model_id, plan.spec.engine_profile.name, config_here.max_num_seqs,
                                        config_here.max_num_batched_tokens, utilization, cost.weights_dtype,
                                        cost.kv_cache_dtype,
                                        None if serving.ngram is None else (serving.ngram.ngram_size,
                                                                            serving.ngram.window_size))
                task, note = None, ""
                images = serving.requests is None or bool(serving.requests.images.any())
                if images and config_here.max_num_batched_tokens < largest_prefill:
                    note = (f"a page's prefill ({largest_prefill} tokens) does not fit "
                            f"{config_here.max_num_batched_tokens} tokens per step")
                else:
                    task = Task(len(out), cost, config_here, plan.spec, spec.slo,
                                spec.target_pages_per_day / 86400.0)
                canonical = cost.hardware
                out.append(Candidate(len(out), hid, canonical, rid, cost.runtime, plan.spec.engine_profile.name,
                                     plan.spec.engine_profile.version, cost.weights_dtype, cost.kv_cache_dtype,
                                     config_here.max_num_seqs, config_here.max_num_batched_tokens, utilization,
                                     int(config_here.kv_pool_blocks), prices.get(canonical), command, task, note))
    missing = sorted({c.hardware for c in out if c.usd_per_hour is None})
    if missing:
        raise ScenarioError(f"{scenario.where('plan')}: no price for {', '.join(missing)}: give plan.prices "
                            f"{{{missing[0]}: USD_PER_GPU_HOUR}} or set one with `hardware price {missing[0]} USD`")
    return out


def _content_hash(scenario: Scenario, cands: list[Candidate]) -> str:
    identity = {"plan": scenario.data, "candidates": [(c.hardware, c.runtime, c.engine, c.engine_version,
                                                       c.weights_dtype, c.kv_cache_dtype, c.max_num_seqs,
                                                       c.max_num_batched_tokens, c.gpu_memory_utilization,
                                                       c.kv_pool_blocks, c.usd_per_hour) for c in cands]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _row(plan_id: int, c: Candidate, result: dict | None, spec: PlanSpec) -> dict:
    from registry.pricing.model import MONEY, SECONDS_PER_DAY

    row = {"plan_id": plan_id, "candidate_index": c.index, "hardware_id": c.hardware_id,
           "runtime_profile_id": c.runtime_profile_id, "engine": c.engine, "engine_version": c.engine_version,
           "weights_dtype": c.weights_dtype, "kv_cache_dtype": c.kv_cache_dtype, "max_num_seqs": c.max_num_seqs,
           "max_num_batched_tokens": c.max_num_batched_tokens, "gpu_memory_utilization": c.gpu_memory_utilization,
           "kv_pool_blocks": c.kv_pool_blocks, "usd_per_hour": c.usd_per_hour, "command": c.command,
           "status": "unsupported", "best_rate_per_s": None, "simulations": 0, "replicas": None, "nodes": None,
           "monthly_usd": None, "usd_per_1000_pages": None, "ttft_p99_s": None, "page_latency_p99_s": None,
           "tpot_p99_s": None, "best_page_latency_p99_s": None, "bound_by": None}
    if result is None:
        return row
    row["simulations"] = result["simulations"]
    if not result["feasible"]:
        row["status"] = "misses-slo"
        return row
    replicas = result["replicas"]
    load_pages_per_s = spec.target_pages_per_day / SECONDS_PER_DAY
    row.update(status="ok", best_rate_per_s=result["best_rate_per_s"], replicas=replicas,
               nodes=math.ceil(replicas / spec.gpus_per_node),
               monthly_usd=float(MONEY["monthly_usd"].expr.evaluate({"gpus_needed": replicas,
                                                                      "usd_per_hour": c.usd_per_hour})),
               usd_per_1000_pages=float(MONEY["usd_per_1000_pages"].expr.evaluate(
                   {"gpu_seconds_per_page": replicas / load_pages_per_s, "usd_per_hour": c.usd_per_hour})),
               ttft_p99_s=result["ttft_p99_s"], page_latency_p99_s=result["page_latency_p99_s"],
               tpot_p99_s=result["tpot_p99_s"], best_page_latency_p99_s=result["best_page_latency_p99_s"],
               bound_by=result["bound_by"])
    return row


def begin_plan(registry: Registry, scenario: Scenario, spec: PlanSpec, cands: list[Candidate],
               new_run: bool = False) -> tuple[int, set[int]]:
    """The plan's row (found by content, or new) with its unsupported candidates; (plan id, candidate indexes
    stored before: an interrupted plan's)."""
    from registry.store.models import Base

    digest = _content_hash(scenario, cands)
    table = Base.metadata.tables["plan_candidates"]
    with registry.begin() as conn:
        plan_id = conn.execute(sa.text("SELECT id FROM plans WHERE content_sha256 = :h"), {"h": digest}).scalar()
        if plan_id is not None and new_run:
            conn.execute(sa.text("DELETE FROM plan_candidates WHERE plan_id = :p"), {"p": plan_id})
        if plan_id is None:
            plans = Base.metadata.tables["plans"]
            plan_id = conn.execute(sa.insert(plans).values(
                content_sha256=digest, name=scenario.name[:200], definition=json.dumps(scenario.data, default=str),
                target_pages_per_day=spec.target_pages_per_day, ttft_p99_s=spec.slo.ttft_p99_s,
                page_latency_p99_s=spec.slo.page_latency_p99_s, tpot_p99_s=spec.slo.tpot_p99_s,
                candidates=len(cands),
                created_at=datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)).returning(
                plans.c.id)).scalar_one()
        stored = {int(r[0]) for r in conn.execute(sa.text(
            "SELECT candidate_index FROM plan_candidates WHERE plan_id = :p"), {"p": plan_id}).all()}
        for c in cands:
            if c.task is None and c.index not in stored:
                conn.execute(sa.insert(table).values(_row(plan_id, c, None, spec)))
    return plan_id, stored


def store_results(registry: Registry, plan_id: int, cands: list[Candidate], results: list[dict],
                  spec: PlanSpec) -> None:
    """Store finished searches (one transaction)."""
    from registry.store.models import Base

    table = Base.metadata.tables["plan_candidates"]
    by_index = {c.index: c for c in cands}
    with registry.begin() as conn:
        for result in results:
            conn.execute(sa.insert(table).values(_row(plan_id, by_index[result["index"]], result, spec)))


def run_plan(registry: Registry, scenario: Scenario, workers: int = 1, ray_address: str | None = None,
             progress: bool = False, new_run: bool = False) -> tuple[int, list[dict]]:
    """Search every configuration of the plan not searched yet (an interrupted plan resumes), storing each as it
    finishes; (plan id, rows of v_plan_candidates in candidate order)."""
    spec = plan_spec(scenario)
    cands = candidates(registry, scenario, spec, progress)
    plan_id, stored = begin_plan(registry, scenario, spec, cands, new_run)
    todo = [c.task for c in cands if c.task is not None and c.index not in stored]
    bar = None
    if progress and todo:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="config", desc="searching", file=sys.stderr, leave=False)

    def store(result: dict) -> None:
        store_results(registry, plan_id, cands, [result], spec)
        if bar is not None:
            bar.update(1)

    try:
        run_tasks(todo, workers=workers, ray_address=ray_address, on_result=store)
    except WorkerLost as exc:
        raise PlanError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    return plan_id, read_plan(registry, plan_id)


def read_plan(registry: Registry, plan_id: int) -> list[dict]:
    columns = [("runtime || '@' || CAST(runtime_version AS VARCHAR(20))" if c == "runtime" else c)
               for c in PLAN_COLUMNS]
    with registry.begin() as conn:
        result = conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM v_plan_candidates WHERE plan_id = :p "
                                      "ORDER BY candidate_index"), {"p": plan_id}).all()
    return [dict(zip(PLAN_COLUMNS, row)) for row in result]


def answer(rows: list[dict]) -> dict:
    """The cheapest configuration, the Pareto front (cheapest first) and the counts by status."""
    ok = [r for r in rows if r["status"] == "ok"]
    best = min(ok, key=lambda r: r["cost_rank"]) if ok else None
    front = sorted((r for r in ok if r["on_pareto_front"]), key=lambda r: (r["monthly_usd"],
                                                                          r["page_latency_p99_s"]))
    counts = {status: sum(r["status"] == status for r in rows) for status in ("ok", "misses-slo", "unsupported")}
    return {"cheapest": best, "pareto_front": front, "counts": counts,
            "settings_check": None if best is None else parse_serve_command(best["command"])}


def plot_plan(rows: list[dict], path) -> None:
    """Cost against page latency p99 at the load: every configuration that meets the SLOs, the front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from registry.interfaces.plots import save_figure

    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for hardware in sorted({r["hardware"] for r in ok}):
        mine = [r for r in ok if r["hardware"] == hardware]
        ax.scatter([r["page_latency_p99_s"] for r in mine], [r["monthly_usd"] for r in mine], label=hardware, s=18)
    front = sorted((r for r in ok if r["on_pareto_front"]), key=lambda r: r["page_latency_p99_s"])
    if front:
        ax.plot([r["page_latency_p99_s"] for r in front], [r["monthly_usd"] for r in front], "k--", lw=1,
                label="Pareto front")
        best = min(ok, key=lambda r: r["cost_rank"])
        ax.annotate(f"cheapest: {best['replicas']} x {best['hardware']}, {best['engine']}",
                    (best["page_latency_p99_s"], best["monthly_usd"]), textcoords="offset points", xytext=(8, 8))
    ax.set_xlabel("page latency p99 at the load (s)")
    ax.set_ylabel("dollars a month")
    ax.set_title("Configurations that meet the SLOs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
