"""Step costs of a serving engine, taken from the registry's pricing views (no second cost model).

For a workload family (variant, mode, page sizes) x GPU x runtime, a few probe workloads are analyzed, recorded as
one scenario through registry.pricing.points (like `whatif`) and priced by the views. Each priced operator row of
v_point_operator_time (stage, view kind, module, category) gives the bound terms of the cost model
(registry.pricing.model: compute_bound_s, memory_bound_s, dispatch_s); those are linear in the row's FLOPs, bytes
and calls, so they inherit the rows' affine dependence on the step's shape, which is fitted here exactly (least
squares over the probes, residuals checked):

- decode rows (a step of b decoding pages at total context C): features (1, b, C, e(b)), e(b) the expected number
  of distinct experts b tokens touch (the analyzer's formula: the expert weights a step reads);
- prefill rows (a forward of p prompt tokens whose causal attention covers q = sum of chunk x (chunk + 2 x offset)
  token pairs; p^2 for a prompt from its start): features (1, p, q);
- vision and projector: per page (one image per call under vllm), the stage times of the family's batch-1 probe.

`StepCost.step_time` evaluates a step with the cost model the views are generated from: per row the operator time
of its bound terms (model.op_time_s), summed, plus the stage's host time per call (the host terms, as
v_point_stage_time sums them). A pure-decode step is priced by the decode rows (CUDA-graph replay); a step with any
prefill runs as one eager forward, priced by the prefill rows with each decoding page counted as one token of
attention span 1 + 2 x its context.
"""

from __future__ import annotations

import attrs
import numpy as np
import sqlalchemy as sa

from analyzer.routing import expected_distinct_experts
from registry.pricing import model
from registry.store.db import Registry

PROMPT_EXTRA = (0, 300, 800)  # prompt text tokens added to the family's own, for the prefill probes
DECODE_BATCHES = (2, 4)
FIT_RTOL = 1e-6


def _op_time_sum(bounds: dict[str, np.ndarray], x: np.ndarray):
    """The operator rows' time summed: each row's bound terms at features x, combined as the cost model does."""
    return model.op_time_s({name: coef @ x for name, coef in bounds.items()}).sum(axis=0)


@attrs.frozen
class Family:
    """Pages of one variant, mode and page size: their prompt length and vision seconds per page."""
    page: str
    prefill_tokens: int
    vision_s: float  # vision + projector stage time of one page, host time included


@attrs.define
class StepCost:
    hardware: str
    runtime: str
    # per bound term of the cost model: rows x 4 seconds per feature (1, b, C, e(b))
    decode_bounds: dict[str, np.ndarray]
    decode_host_s: float
    prefill_bounds: dict[str, np.ndarray]  # per bound term: rows x 3 seconds per feature (1, p, q)
    prefill_host_s: float
    experts: int
    top_k: int
    families: list[Family]
    kv_bytes_per_token: int
    kv_pool_bytes: int
    weight_bytes: int = 0
    step_peak_bytes: int = 0
    weights_dtype: str = "bf16"
    kv_cache_dtype: str = "bf16"
    # the runtime profile's host time per step that stands for the engine's own host work (scheduler, sampler):
    # part of decode_host_s (per decode step) and prefill_host_s (per prefill call)
    decode_step_overhead_s: float = 0.0
    prefill_call_overhead_s: float = 0.0
    _cache: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def without_runtime_step_overhead(self) -> StepCost:
        """These step costs without the runtime's per-step host time: a host profile prices that work instead."""
        return attrs.evolve(self, decode_host_s=self.decode_host_s - self.decode_step_overhead_s,
                            prefill_host_s=self.prefill_host_s - self.prefill_call_overhead_s,
                            decode_step_overhead_s=0.0, prefill_call_overhead_s=0.0)

    def decode_time(self, b, context):
        """Seconds of pure-decode steps of b pages at total context `context` (scalars or equal-length arrays)."""
        b = np.atleast_1d(np.asarray(b, dtype=float))
        context = np.atleast_1d(np.asarray(context, dtype=float))
        b = np.broadcast_to(b, np.broadcast_shapes(b.shape, context.shape))
        if b.size and (b == b[0]).all():
            return self._decode_same_batch(float(b[0]), np.broadcast_to(context, b.shape))
        x = np.vstack([np.ones_like(b), b, np.broadcast_to(context, b.shape),
                       expected_distinct_experts(b, self.experts, self.top_k)])
        return _op_time_sum(self.decode_bounds, x) + self.decode_host_s

    def decode_series(self, b: int, context: float, steps: int, context_step: int | None = None) -> np.ndarray:
        """Seconds of `steps` successive pure-decode steps of b pages from total context `context`, each step adding
        `context_step` tokens of context (default b; fewer when b is a padded CUDA-graph batch)."""
        step = b if context_step is None else context_step
        return self._decode_same_batch(float(b), context + step * np.arange(steps, dtype=float))

    def _decode_same_batch(self, b: float, context: np.ndarray) -> np.ndarray:
        """decode_time at one batch size: the rows whose time does not depend on the context are summed once
        per batch size (cached); only the context-dependent rows (attention) are evaluated per step."""
        cache = self._cache
        if "ctx" not in cache:
            ctx = np.logical_or.reduce([coef[:, 2] != 0 for coef in self.decode_bounds.values()])
            cache["ctx"] = {name: coef[ctx] for name, coef in self.decode_bounds.items()}
            cache["flat"] = {name: coef[~ctx] for name, coef in self.decode_bounds.items()}
        base = cache.get(b)
        if base is None:
            x = np.array([1.0, b, 0.0, float(expected_distinct_experts(np.asarray(b), self.experts, self.top_k))])
            const = float(_op_time_sum(cache["flat"], x)) + self.decode_host_s
            cache[b] = base = (const, {name: (coef @ x, coef[:, 2]) for name, coef in cache["ctx"].items()})
        const, ctx_rows = base
        bounds = {name: at_zero[:, None] + slope[:, None] * context[None, :]
                  for name, (at_zero, slope) in ctx_rows.items()}
        return model.op_time_s(bounds).sum(axis=0) + const

    def prefill_time(self, p: float, q: float) -> float:
        x = np.array([1.0, p, q])
        return float(_op_time_sum(self.prefill_bounds, x) + self.prefill_host_s)

    def step_time(self, b: int, context: float, p: float = 0.0, q: float = 0.0, vision_pages=None) -> float:
        """One engine step: b decoding pages at total context `context` (tokens in their KV), p prefill tokens
        spanning q attention pairs, and vision for `vision_pages` (pages per family index, or a count for the
        first family)."""
        vision = 0.0
        if vision_pages is not None:
            if np.isscalar(vision_pages):
                vision = vision_pages * self.families[0].vision_s
            else:
                vision = sum(n * f.vision_s for n, f in zip(vision_pages, self.families))
        if p > 0:
            return self.prefill_time(p + b, q + b + 2.0 * context) + vision
        if b > 0:
            return float(self.decode_time(b, context)[0]) + vision
        return vision


def probe_workloads(base: dict, pages: list[str]) -> list[tuple[str, dict]]:
    """(role, workload overrides) of the probes: per page size a batch-1 page; on the first page size prefill
    probes at longer prompts and decode probes at batch 2 and 4 at two contexts. Two new tokens: one decode step."""
    text = int(base.get("prompt_text_tokens", 9))
    probes = [("page", dict(page=page, batch=1, new_tokens=2, prompt_text_tokens=text)) for page in pages]
    for extra in PROMPT_EXTRA[1:]:
        probes.append(("prefill", dict(page=pages[0], batch=1, new_tokens=2, prompt_text_tokens=text + extra)))
    for batch in DECODE_BATCHES:
        for extra in (0, PROMPT_EXTRA[-1]):
            probes.append(("decode", dict(page=pages[0], batch=batch, new_tokens=2, prompt_text_tokens=text + extra)))
    return probes


def make_workloads(profile: str, base: dict, probes: list[tuple[str, dict]]) -> list:
    from analyzer.workload import load_profile, parse_page

    out = []
    for _, fields in probes:
        fields = dict(base, **fields)
        width, height = parse_page(fields.pop("page"))
        out.append(load_profile(profile, page_width_px=width, page_height_px=height, **fields))
    return out


def record_probes(registry: Registry, name: str, workloads: list, hardware_ids: list[int], runtime_ids: list[int],
                  progress: bool = False, overrides: dict | None = None, analyze=None,
                  precisions: list[tuple] = ((None, None),)) -> tuple[int, list[tuple]]:
    """Analyze (if new) and record the probe workloads x GPUs x runtimes x precisions ((weights dtype, KV cache
    dtype); None: the runtime's own) as one scenario; (scenario id, points)."""
    from registry.pricing.catalog import runtime_execution
    from registry.pricing.points import PointKey, ScenarioRecord, record_scenario
    from registry.store.analyzed import ensure_reports

    with registry.begin() as conn:
        executions = {rid: runtime_execution(conn, rid) for rid in runtime_ids}
    keys = {ex: ensure_reports(registry, workloads, f"serving:{name}", progress, ex, analyze)
            for ex in dict.fromkeys(executions.values())}
    points = [PointKey(keys[executions[rid]][i], hid, rid, weights, kv_cache) for hid in hardware_ids
              for rid in runtime_ids for weights, kv_cache in precisions for i in range(len(workloads))]
    with registry.begin() as conn:
        scenario_id = record_scenario(conn, ScenarioRecord(name=f"{name}:probes", kind="serving-probe",
                                                           definition={"probes": name}, overrides=overrides or {}),
                                      points).scenario_id
    return scenario_id, points


def _fit(features: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """Least squares per row (values: points x rows) -> rows x features; the fit must reproduce every probe."""
    coef, *_ = np.linalg.lstsq(features, values, rcond=None)
    # round-off of the solve: a feature whose whole contribution to a row is below 1e-12 of the row is no term
    contribution = np.abs(coef) * np.abs(features).max(axis=0)[:, None]
    coef[contribution <= 1e-12 * np.abs(values).max(axis=0)[None, :]] = 0.0
    fitted = features @ coef
    scale = np.maximum(np.abs(values), 1e-12)
    err = np.abs(fitted - values) / scale
    worst = float(err[np.abs(values) > 1e-9].max()) if (np.abs(values) > 1e-9).any() else 0.0
    if worst > 1e-4:
        raise ValueError(f"{what}: the priced rows are not affine in the step's features (worst residual "
                         f"{worst:.2e})")
    return coef.T


def derive(registry: Registry, scenario_id: int, probes: list[tuple[str, dict]], n_workloads: int,
           pages: list[str]) -> list[StepCost]:
    """One StepCost per (GPU, runtime) of the probe scenario (points ordered GPU, runtime, probe)."""
    from analyzer.architecture import load_spec

    bound_names = [t.name for t in model.bound_terms()]  # the cost model's terms of an operator row's time
    with registry.begin() as conn:
        meta = conn.execute(sa.text(
            "SELECT p.point_index, h.name, rp.name || '@' || CAST(rp.version AS VARCHAR(20)), r.variant, "
            "w.batch, w.prefill_tokens, s.kv_cache_bytes_per_token, s.kv_pool_bytes, s.weight_bytes, "
            "s.activation_peak_bytes, s.weights_dtype, s.kv_cache_dtype, rp.decode_step_overhead_s, "
            "rp.stage_call_overhead_s "
            "FROM scenario_points p JOIN hardware h ON h.id = p.hardware_id "
            "JOIN runtime_profiles rp ON rp.id = p.runtime_profile_id JOIN reports r ON r.id = p.report_id "
            "JOIN workloads w ON w.id = r.workload_id JOIN architectures a ON a.id = r.architecture_id "
            "JOIN v_point_summary_all s ON s.scenario_id = p.scenario_id AND s.point_index = p.point_index "
            "WHERE p.scenario_id = :s ORDER BY p.point_index"), {"s": scenario_id}).all()
        ops = conn.execute(sa.text(
            f"SELECT point_index, stage, view_kind, module_id, category_id, {', '.join(bound_names)} "
            "FROM v_point_operator_time WHERE scenario_id = :s"), {"s": scenario_id}).all()
        stages = conn.execute(sa.text(
            "SELECT point_index, stage, calls, stage_time_s, host_s "
            "FROM v_point_stage_time WHERE scenario_id = :s"), {"s": scenario_id}).all()
    by_point_ops: dict[int, dict] = {}
    for point, stage, view_kind, module, category, *bounds in ops:
        by_point_ops.setdefault(point, {})[(stage, view_kind, module, category)] = bounds
    by_point_stage: dict[int, dict] = {}
    for point, stage, calls, stage_s, host_s in stages:
        entry = by_point_stage.setdefault(point, {}).setdefault(stage, [0, 0.0, 0.0])
        entry[0] = calls
        entry[1] += stage_s
        entry[2] += host_s
    costs = []
    for start in range(0, len(meta), n_workloads):
        group = meta[start:start + n_workloads]
        spec = load_spec(group[0][3])
        experts, top_k = int(spec.num_experts or 0), int(spec.experts_per_token or 0)
        points = [row[0] for row in group]

        def fit_stage(stage, feature_rows, indices, what):
            keys = sorted({k for i in indices for k in by_point_ops[points[i]] if k[0] == stage},
                          key=lambda k: tuple(map(str, k)))
            absent = [0.0] * len(bound_names)
            mats = {}
            for part, bound in enumerate(bound_names):
                values = np.array([[by_point_ops[points[i]].get(k, absent)[part] for k in keys] for i in indices])
                mats[bound] = _fit(np.array(feature_rows), values, f"{what} {bound}")
            host = [by_point_stage[points[i]][stage][2] / by_point_stage[points[i]][stage][0] for i in indices]
            return mats, float(np.mean(host))

        decode_idx = list(range(len(group)))
        decode_feat = []
        for i in decode_idx:
            b, prefill = group[i][4], group[i][5]
            decode_feat.append([1.0, b, b * prefill,
                                float(expected_distinct_experts(np.asarray(b, dtype=float), experts, top_k))])
        decode, decode_host = fit_stage("decode", decode_feat, decode_idx, "decode")
        prefill_idx = [i for i, (role, _) in enumerate(probes) if role in ("page", "prefill")]
        prefill_feat = [[1.0, group[i][5], float(group[i][5]) ** 2] for i in prefill_idx]
        prefill, prefill_host = fit_stage("prefill", prefill_feat, prefill_idx, "prefill")
        families = []
        for i, page in enumerate(pages):
            st = by_point_stage[points[i]]
            vision = sum(st[s][1] / st[s][0] for s in ("vision", "projector") if s in st)
            families.append(Family(page=page, prefill_tokens=int(group[i][5]), vision_s=vision))
        costs.append(StepCost(
            hardware=group[0][1], runtime=group[0][2], decode_bounds=decode, decode_host_s=decode_host,
            prefill_bounds=prefill, prefill_host_s=prefill_host, experts=experts, top_k=top_k, families=families,
            kv_bytes_per_token=int(group[0][6]), kv_pool_bytes=int(group[0][7] or 0),
            weight_bytes=int(group[0][8]), step_peak_bytes=int(group[0][9]), weights_dtype=group[0][10],
            kv_cache_dtype=group[0][11], decode_step_overhead_s=float(group[0][12]),
            prefill_call_overhead_s=float(group[0][13])))
    return costs


def step_costs(registry: Registry, name: str, profile: str, base: dict, pages: list[str], hardware_ids: list[int],
               runtime_ids: list[int], progress: bool = False, overrides: dict | None = None,
               analyze=None) -> list[StepCost]:
    """Step costs of the family (profile + base fields, one family per page size) on each GPU x runtime, GPUs
    outermost, with the scenario's device overrides (peak, bandwidth, memory, efficiency scale) if any."""
    probes = probe_workloads(base, pages)
    workloads = make_workloads(profile, base, probes)
    scenario_id, _ = record_probes(registry, name, workloads, hardware_ids, runtime_ids, progress, overrides,
                                   analyze)
    return derive(registry, scenario_id, probes, len(workloads), pages)
