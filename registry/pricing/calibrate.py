"""Fit a runtime profile's free parameters to the measurements of one GPU x runtime by least squares.

The model evaluated during the fit (`predict`) is the cost model of registry.pricing.model, the declaration the
pricing views are generated from (a test holds the two equal row by row).

Free parameters: the compute efficiency of matmul, attention, masked attention and conv, the bandwidth efficiency
of elementwise and data-movement kernels, one scale on the other categories' bandwidth efficiencies, the host time
per aten call, per kernel launch, per nn.Module call, per stage call and per decode step, and (with CUDA-graph
decode) the device time per replayed kernel. Each stays within its physical range
(registry.pricing.catalog.RUNTIME_PARAMETERS: the bounds of the fit); a parameter that ends on a bound is
reported; a parameter that changes no prediction anywhere in its range (the rows cannot identify it) stays at its
prior and is reported as fixed. Residuals are relative errors. Held-out error: leave one kind of measurement out,
fit on the rest, predict the kind left out.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
import sqlalchemy as sa

from analyzer.execution import execution_spec
from registry.pricing import model
from registry.pricing.catalog import EFFICIENCY, PARAMETER_OF_COLUMN
from registry.store.db import Registry, RegistryError

FITTED_COMPUTE = ("matmul", "attention_masked")
# Bandwidth efficiencies fitted each on its own: strided copies (window partitions, permuted layouts) and broadcast
# adds (SAM's relative-position bias) run far below the card's copy rate; the other categories share one scale.
FITTED_BANDWIDTH = ("elementwise", "data_movement")
# An open lower bound (efficiencies > 0.05) becomes this much above it, so that the rounded file still loads.
OPEN_BOUND_MARGIN = 2e-4
IDENTIFIABLE_REL = 1e-9  # a parameter whose whole range moves no prediction by this much is not identified
ON_BOUND_REL = 1e-4  # within this fraction of its range from a bound: reported as on it


@attrs.define
class Rows:
    """The compared measurements of one GPU x runtime, as the inputs of the cost model (registry.pricing.model):
    their operator rows and their stages."""

    measured_s: np.ndarray  # per measurement
    kinds: list[str]
    labels: list[str]
    row_of_term: np.ndarray  # per (measurement, module, stage, view kind, category) term: which measurement
    flops: np.ndarray
    bytes_moved: np.ndarray
    weight_bytes: np.ndarray  # the part of bytes_moved that is weights
    kv_cache_bytes: np.ndarray  # the part that is KV cache (NaN: the report did not count it)
    launches: np.ndarray
    op_calls: np.ndarray
    stage: np.ndarray  # per term: its stage
    category: list[str]
    row_of_stage: np.ndarray  # per (measurement, stage, view kind) the measurement times: which measurement
    stage_name: np.ndarray  # per stage row: the stage
    stage_calls: np.ndarray  # per stage row: its calls (decode: steps)
    stage_module_calls: np.ndarray  # per stage row: its nn.Module calls
    peak_flops_per_s: float
    bandwidth_bytes_per_s: float
    peak_fp8_flops_per_s: float | None = None

    @property
    def decode(self) -> np.ndarray:
        """Per term: whether it is in the decode stage."""
        return self.stage == "decode"


def load_rows(registry: Registry, hardware_id: int, runtime_id: int) -> Rows:
    """Every compared measurement of the GPU x runtime with the counts of the stages it times (the stages the
    views price: those with operator rows)."""
    with registry.begin() as conn:
        meas = conn.execute(sa.text(
            "SELECT s.id, m.row_index, m.kind, m.median_ms, m.report_id, m.stage, m.view_kind, m.workload "
            "FROM measurements m JOIN measurement_sets s ON s.id = m.measurement_set_id "
            "WHERE s.hardware_id = :h AND s.runtime_profile_id = :r AND m.compared ORDER BY s.id, m.row_index"),
            {"h": hardware_id, "r": runtime_id}).all()
        if not meas:
            raise RegistryError("no compared measurements for this GPU and runtime: "
                                "run `dsocr-registry ingest --measurements FILE --hardware ... --runtime ...` first")
        peak, bandwidth, peak_fp8 = conn.execute(sa.text(
            "SELECT peak_bf16_flops_per_s, memory_bandwidth_bytes_per_s, peak_fp8_flops_per_s FROM hardware "
            "WHERE id = :h"), {"h": hardware_id}).one()
        terms: dict[str, list] = {k: [] for k in ("row", "flops", "bytes", "weight_bytes", "kv_cache_bytes",
                                                  "launches", "op_calls", "stage", "category")}
        stage_rows: dict[str, list] = {k: [] for k in ("row", "stage", "calls", "module_calls")}
        for index, (_, _, _, _, report_pk, stage, view_kind, _) in enumerate(meas):
            params = {"rep": report_pk, "stage": stage, "view": view_kind}
            where = "o.report_id = :rep" + ("" if stage is None else " AND o.stage = :stage AND o.view_kind = :view")
            for flops, nbytes, weight_bytes, kv_bytes, launches, op_calls, op_stage, category in conn.execute(sa.text(
                    "SELECT o.flops, o.bytes_read + o.bytes_written, o.weight_bytes_read, "
                    "o.kv_cache_bytes_read + o.kv_cache_bytes_written, o.kernel_launches, o.op_calls, o.stage, c.name "
                    f"FROM operator_metrics o JOIN operator_categories c ON c.id = o.category_id WHERE {where}"),
                    params).all():
                terms["row"].append(index)
                terms["flops"].append(float(flops))
                terms["bytes"].append(float(nbytes))
                terms["weight_bytes"].append(float(weight_bytes))
                terms["kv_cache_bytes"].append(np.nan if kv_bytes is None else float(kv_bytes))
                terms["launches"].append(float(launches))
                terms["op_calls"].append(float(op_calls))
                terms["stage"].append(op_stage)
                terms["category"].append(category)
            stage_filter = "" if stage is None else " AND s.stage = :stage AND s.view_kind = :view"
            for stage_name, calls, module_calls in conn.execute(sa.text(
                    "SELECT s.stage, s.calls, (SELECT COALESCE(SUM(mm.forward_calls), 0) FROM module_metrics mm "
                    "WHERE mm.report_id = s.report_id AND mm.stage = s.stage AND mm.view_kind = s.view_kind) "
                    "FROM report_stages s WHERE s.report_id = :rep" + stage_filter + " AND EXISTS (SELECT 1 FROM "
                    "operator_metrics o WHERE o.report_id = s.report_id AND o.stage = s.stage "
                    "AND o.view_kind = s.view_kind)"), params).all():
                stage_rows["row"].append(index)
                stage_rows["stage"].append(stage_name)
                stage_rows["calls"].append(float(calls))
                stage_rows["module_calls"].append(float(module_calls))
    return Rows(measured_s=np.array([m[3] / 1000.0 for m in meas]), kinds=[m[2] for m in meas],
                labels=[f"{m[2]} {m[7]}" for m in meas], row_of_term=np.array(terms["row"], dtype=int),
                flops=np.array(terms["flops"]), bytes_moved=np.array(terms["bytes"]),
                weight_bytes=np.array(terms["weight_bytes"]), kv_cache_bytes=np.array(terms["kv_cache_bytes"]),
                launches=np.array(terms["launches"]), op_calls=np.array(terms["op_calls"]),
                stage=np.array(terms["stage"], dtype=object), category=terms["category"],
                row_of_stage=np.array(stage_rows["row"], dtype=int),
                stage_name=np.array(stage_rows["stage"], dtype=object), stage_calls=np.array(stage_rows["calls"]),
                stage_module_calls=np.array(stage_rows["module_calls"]),
                peak_flops_per_s=float(peak), bandwidth_bytes_per_s=float(bandwidth),
                peak_fp8_flops_per_s=None if peak_fp8 is None else float(peak_fp8))


@attrs.define
class Profile:
    """A runtime profile's numbers (SI units), as stored in runtime_profiles / runtime_profile_categories."""

    execution: str
    kernel_launch_s: float
    aten_call_s: float
    module_call_s: float
    stage_call_overhead_s: float
    decode_step_overhead_s: float
    cuda_graph_decode: bool
    graph_kernel_s: float | None
    gpu_memory_utilization: float | None
    max_num_batched_tokens: int | None
    categories: dict[str, dict]  # name -> compute_efficiency, bandwidth_efficiency
    weights_dtype: str = "bf16"
    kv_cache_dtype: str = "bf16"
    fp8_compute_efficiency: float | None = None  # None: the matmul's compute_efficiency
    calibrated_on: str | None = None  # the GPU the efficiencies were fitted on

    @classmethod
    def load(cls, registry: Registry, runtime_id: int) -> "Profile":
        """The stored profile."""
        with registry.begin() as conn:
            row = conn.execute(sa.text(
                "SELECT execution, kernel_launch_s, aten_call_s, "
                "module_call_s, stage_call_overhead_s, decode_step_overhead_s, "
                "cuda_graph_decode, graph_kernel_s, gpu_memory_utilization, max_num_batched_tokens, "
                "weights_dtype, kv_cache_dtype, fp8_compute_efficiency, calibrated_on "
                "FROM runtime_profiles WHERE id = :r"), {"r": runtime_id}).one()
            categories = {name: {"compute_efficiency": float(ce), "bandwidth_efficiency": float(be)}
                          for name, ce, be in conn.execute(sa.text(
                              "SELECT c.name, rc.compute_efficiency, rc.bandwidth_efficiency FROM "
                              "runtime_profile_categories rc JOIN operator_categories c ON c.id = rc.category_id "
                              "WHERE rc.runtime_profile_id = :r"), {"r": runtime_id}).all()}
        (execution, launch, aten, module, call, step, graph, graph_kernel, utilization, tokens, weights, kv_cache,
         fp8_efficiency, calibrated_on) = row
        return cls(execution, float(launch), float(aten), float(module), float(call), float(step), bool(graph),
                   None if graph_kernel is None else float(graph_kernel),
                   None if utilization is None else float(utilization), None if tokens is None else int(tokens),
                   categories, weights, kv_cache, None if fp8_efficiency is None else float(fp8_efficiency),
                   calibrated_on)

    def copy(self) -> "Profile":
        return attrs.evolve(self, categories={n: dict(v) for n, v in self.categories.items()})


@attrs.frozen
class FreeParameter:
    """A parameter of the fit: how to read and set it on a profile, and its bounds (SI units)."""

    name: str
    get: Callable[[Profile], float]
    set: Callable[[Profile, float], None]
    lower: float
    upper: float


def _attribute(column: str) -> FreeParameter:
    p = PARAMETER_OF_COLUMN[column]
    low = p.low * p.scale
    return FreeParameter(column, lambda prof: getattr(prof, column), lambda prof, x: setattr(prof, column, x),
                         low * (1 + OPEN_BOUND_MARGIN) if p.low_open else low, p.high * p.scale)


def _efficiency(category: str, key: str) -> FreeParameter:
    """One category's compute_efficiency or bandwidth_efficiency."""
    def set_value(prof, x):
        prof.categories[category][key] = x

    return FreeParameter(f"{category}_{key}", lambda prof: prof.categories[category][key], set_value,
                         EFFICIENCY.low + OPEN_BOUND_MARGIN, EFFICIENCY.high)


def _bandwidth_scale(base: Profile) -> FreeParameter:
    """One factor on every bandwidth efficiency of `base` (each capped at 1; the prior is 1); its range keeps every
    efficiency in (0.05, 1] and ends where every one is capped."""
    base_values = {n: v["bandwidth_efficiency"] for n, v in base.categories.items() if n not in FITTED_BANDWIDTH}
    lowest = min(base_values.values())

    def set_value(prof, x):
        for name, value in base_values.items():
            prof.categories[name]["bandwidth_efficiency"] = min(EFFICIENCY.high, value * x)

    return FreeParameter("bandwidth_efficiency_scale", lambda prof: 1.0, set_value,
                         EFFICIENCY.low * (1 + OPEN_BOUND_MARGIN) / lowest, EFFICIENCY.high / lowest)


def in_range(profile: Profile) -> Profile:
    """The profile with every efficiency and parameter clipped into its physical range (a profile stored before
    revision 0006 may lie outside: it has no aten call time, and its fit could take an efficiency to 0.02)."""
    clipped = profile.copy()
    low = EFFICIENCY.low + OPEN_BOUND_MARGIN
    for values in clipped.categories.values():
        for key in ("compute_efficiency", "bandwidth_efficiency"):
            values[key] = float(min(EFFICIENCY.high, max(low, values[key])))
    for column in ("aten_call_s", "kernel_launch_s", "module_call_s", "stage_call_overhead_s",
                   "decode_step_overhead_s", "graph_kernel_s"):
        value = getattr(clipped, column)
        if value is not None:
            p = PARAMETER_OF_COLUMN[column]
            setattr(clipped, column, float(min(p.high * p.scale, max(p.low * p.scale, value))))
    return clipped


def free_parameters(base: Profile) -> list[FreeParameter]:
    parameters = [_efficiency(c, "compute_efficiency") for c in FITTED_COMPUTE if c in base.categories]
    parameters += [_efficiency(c, "bandwidth_efficiency") for c in FITTED_BANDWIDTH if c in base.categories]
    parameters.append(_bandwidth_scale(base))
    columns = ["aten_call_s", "kernel_launch_s", "module_call_s", "stage_call_overhead_s", "decode_step_overhead_s"]
    if base.cuda_graph_decode:
        columns.append("graph_kernel_s")
    return parameters + [_attribute(c) for c in columns]


def _profile_inputs(profile: Profile) -> dict:
    values = {name: getattr(profile, name) for name in model.PROFILE_INPUTS}
    values["graph_kernel_s"] = profile.graph_kernel_s or 0.0  # read only where cuda_graph_decode holds
    if profile.fp8_compute_efficiency is None:
        values["fp8_compute_efficiency"] = profile.categories["matmul"]["compute_efficiency"]
    return values


def predict(rows: Rows, profile: Profile) -> np.ndarray:
    """Seconds per measurement: the cost model (registry.pricing.model, the pricing views' formula) over the
    operator rows and stages each measurement times, summed as v_predicted_vs_measured does (efficiency_scale 1,
    the catalog's peak and bandwidth)."""
    common = _profile_inputs(profile)
    fp8_weights, fp8_kv_cache = profile.weights_dtype == "fp8", profile.kv_cache_dtype == "fp8"
    if fp8_kv_cache and np.isnan(rows.kv_cache_bytes).any():
        raise RegistryError("these measurements' reports were analyzed before the KV-cache bytes were counted: "
                            "re-analyze them to fit a profile with an fp8 KV cache")
    if fp8_weights and rows.peak_fp8_flops_per_s is None:
        raise RegistryError("this GPU has no fp8 tensor rate in the catalog: fit a profile with bf16 weights")
    bounds = model.row_bounds({
        **common, "flops": rows.flops, "bytes_moved": rows.bytes_moved, "op_calls": rows.op_calls,
        "weight_bytes_read": rows.weight_bytes, "kv_cache_bytes": np.nan_to_num(rows.kv_cache_bytes),
        "fp8_matmul": np.array([c == "matmul" and fp8_weights for c in rows.category], dtype=bool),
        "fp8_kv_cache": fp8_kv_cache, "peak_fp8_flops_per_s": rows.peak_fp8_flops_per_s or np.nan,
        "kernel_launches": rows.launches, "stage": rows.stage, "efficiency_scale": 1.0,
        "peak_flops_per_s": rows.peak_flops_per_s, "memory_bandwidth_bytes_per_s": rows.bandwidth_bytes_per_s,
        "compute_efficiency": np.array([profile.categories[c]["compute_efficiency"] for c in rows.category]),
        "bandwidth_efficiency": np.array([profile.categories[c]["bandwidth_efficiency"] for c in rows.category])})
    operators_s = np.bincount(rows.row_of_term, weights=model.op_time_s(bounds), minlength=len(rows.measured_s))
    host_s = model.stage_host_s({**common, "stage": rows.stage_name, "calls": rows.stage_calls,
                                 "module_calls": rows.stage_module_calls})
    return operators_s + np.bincount(rows.row_of_stage, weights=host_s, minlength=len(rows.measured_s))


def ape(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return 100.0 * np.abs(predicted - measured) / measured


def _with(base: Profile, parameters: list[FreeParameter], values) -> Profile:
    profile = base.copy()
    for parameter, value in zip(parameters, values):
        parameter.set(profile, float(value))
    return profile


def identified(rows: Rows, base: Profile, parameters: list[FreeParameter], start: np.ndarray,
               mask: np.ndarray) -> list[bool]:
    """Whether each parameter moves any prediction of the masked rows somewhere in its range (others at start)."""
    reference = predict(rows, _with(base, parameters, start))[mask]
    scale = np.maximum(np.abs(rows.measured_s[mask]), 1e-12)
    out = []
    for j, parameter in enumerate(parameters):
        moved = False
        for bound in (parameter.lower, parameter.upper):
            trial = start.copy()
            trial[j] = bound
            if np.max(np.abs(predict(rows, _with(base, parameters, trial))[mask] - reference) / scale) \
                    > IDENTIFIABLE_REL:
                moved = True
                break
        out.append(moved)
    return out


def fit(rows: Rows, base: Profile, mask: np.ndarray) -> dict:
    """Least squares on the relative errors of the masked rows, each identified parameter within its bounds (fitted
    in [0, 1] coordinates of its range); the others stay at their priors."""
    from scipy.optimize import least_squares

    parameters = free_parameters(base)
    lower = np.array([p.lower for p in parameters])
    upper = np.array([p.upper for p in parameters])
    start = np.clip(np.array([p.get(base) for p in parameters]), lower, upper)
    free = np.array(identified(rows, base, parameters, start, mask))
    theta = start.copy()
    if free.any():
        span = (upper - lower)[free]

        def values(u):
            full = start.copy()
            full[free] = lower[free] + u * span
            return full

        def residuals(u):
            predicted = predict(rows, _with(base, parameters, values(u)))
            return ((predicted - rows.measured_s) / rows.measured_s)[mask]

        u0 = (start[free] - lower[free]) / span
        result = least_squares(residuals, u0, bounds=(0.0, 1.0), x_scale="jac", max_nfev=4000)
        theta = values(result.x)
    on_bounds = {}
    for j, parameter in enumerate(parameters):
        if not free[j]:
            continue
        tolerance = ON_BOUND_REL * (parameter.upper - parameter.lower)
        if theta[j] - parameter.lower <= tolerance:
            on_bounds[parameter.name] = "lower"
        elif parameter.upper - theta[j] <= tolerance:
            on_bounds[parameter.name] = "upper"
    return {"profile": _with(base, parameters, theta), "parameters": dict(zip((p.name for p in parameters),
                                                                              theta.tolist())),
            "bounds": {p.name: [p.lower, p.upper] for p in parameters},
            "fixed": [p.name for p, f in zip(parameters, free) if not f], "on_bounds": on_bounds}


def calibrate(rows: Rows, base: Profile) -> dict:
    everything = np.ones(len(rows.measured_s), dtype=bool)
    before = ape(predict(rows, base), rows.measured_s)
    base = in_range(base)
    result = fit(rows, base, everything)
    after = ape(predict(rows, result["profile"]), rows.measured_s)
    held_out = np.full(len(rows.measured_s), np.nan)
    kinds = sorted(set(rows.kinds))
    for kind in kinds:
        test = np.array([k == kind for k in rows.kinds])
        if test.all():
            continue
        partial = fit(rows, base, ~test)["profile"]
        held_out[test] = ape(predict(rows, partial), rows.measured_s)[test]

    def by_kind(errors):
        out = {}
        for kind in kinds + ["all"]:
            picked = errors if kind == "all" else errors[np.array([k == kind for k in rows.kinds])]
            picked = picked[~np.isnan(picked)]
            out[kind] = {"rows": int(picked.size), "mape_pct": float(picked.mean()) if picked.size else None,
                         "median_ape_pct": float(np.median(picked)) if picked.size else None}
        return out

    return {**result, "before": by_kind(before), "after": by_kind(after), "held_out": by_kind(held_out)}


def profile_document(name: str, version: int, profile: Profile, description: str, source: str,
                     calibrated_on: str | None = None) -> dict:
    """The profile in the runtimes.yaml format (loadable by `dsocr-registry runtime add`); `calibrated_on`: the
    GPU it was fitted on (default: the profile's own)."""
    document = {"name": name, "version": version, "execution": profile.execution, "description": description,
                "source": source, "kernel_launch_us": round(profile.kernel_launch_s * 1e6, 4),
                "aten_call_us": round(profile.aten_call_s * 1e6, 4),
                "module_call_us": round(profile.module_call_s * 1e6, 4),
                "stage_call_overhead_ms": round(profile.stage_call_overhead_s * 1e3, 5),
                "decode_step_overhead_ms": round(profile.decode_step_overhead_s * 1e3, 5),
                "cuda_graph_decode": profile.cuda_graph_decode}
    if profile.cuda_graph_decode:
        document["graph_kernel_us"] = round((profile.graph_kernel_s or 0.0) * 1e6, 4)
    for key in execution_spec(profile.execution).memory.profile_keys:  # the keys its memory model needs
        document[key] = getattr(profile, key)
    document["weights_dtype"], document["kv_cache_dtype"] = profile.weights_dtype, profile.kv_cache_dtype
    if profile.fp8_compute_efficiency is not None:
        document["fp8_compute_efficiency"] = round(profile.fp8_compute_efficiency, 5)
    if calibrated_on or profile.calibrated_on:
        document["calibrated_on"] = calibrated_on or profile.calibrated_on
    document["categories"] = {name: {"compute_efficiency": round(v["compute_efficiency"], 5),
                                     "bandwidth_efficiency": round(v["bandwidth_efficiency"], 5)}
                              for name, v in profile.categories.items()}
    return document


def describe_fit(result: dict, rows: Rows, hardware: str, runtime: str) -> str:
    before, after, held = result["before"]["all"], result["after"]["all"], result["held_out"]["all"]
    text = (f"Least-squares fit (relative residuals) of {len(rows.measured_s)} timed measurements on {hardware} "
            f"under {runtime}: mean absolute error {before['mape_pct']:.1f}% before, {after['mape_pct']:.1f}% after "
            f"on the rows used, " + (f"{held['mape_pct']:.1f}%" if held["mape_pct"] is not None else "n/a")
            + " on rows held out (leave one kind out).")
    if result["on_bounds"]:
        text += " On a bound: " + ", ".join(f"{k} ({v})" for k, v in sorted(result["on_bounds"].items())) + "."
    if result["fixed"]:
        text += " Not identified by these rows, kept at the prior: " + ", ".join(result["fixed"]) + "."
    return text


def copy_sets_for_profile(registry: Registry, hardware_id: int, base_runtime_id: int, new_runtime_id: int) -> list[int]:
    """The measurement sets of (GPU, base runtime), stored again under the new runtime (rows and points copied),
    so that the views price them with the new profile."""
    from registry.pricing.points import PointKey, ScenarioRecord, record_scenario

    new_sets = []
    with registry.begin() as conn:
        sets = conn.execute(sa.text(
            "SELECT id, file_hash, source FROM measurement_sets WHERE hardware_id = :h AND runtime_profile_id = :r"),
            {"h": hardware_id, "r": base_runtime_id}).all()
        for set_id, file_hash, source in sets:
            exists = conn.execute(sa.text(
                "SELECT id FROM measurement_sets WHERE file_hash = :f AND hardware_id = :h AND runtime_profile_id = :r"),
                {"f": file_hash, "h": hardware_id, "r": new_runtime_id}).scalar()
            if exists is not None:
                new_sets.append(int(exists))
                continue
            reports = [r[0] for r in conn.execute(sa.text(
                "SELECT DISTINCT report_id FROM measurements WHERE measurement_set_id = :s AND report_id IS NOT NULL "
                "ORDER BY report_id"), {"s": set_id}).all()]
            scenario_id = record_scenario(
                conn, ScenarioRecord(name=f"measurements:{source}", kind="measurement",
                                     definition={"measurements": source, "calibrated": True}),
                [PointKey(r, hardware_id, new_runtime_id) for r in reports],
                new_run=True).scenario_id  # each set prices its own points
            new_id = conn.execute(sa.text(
                "INSERT INTO measurement_sets (file_hash, source, hardware_id, runtime_profile_id, scenario_id, env, "
                "ingested_at) SELECT file_hash, source, hardware_id, :r, :sc, env, ingested_at FROM measurement_sets "
                "WHERE id = :s RETURNING id"), {"r": new_runtime_id, "sc": scenario_id, "s": set_id}).scalar_one()
            conn.execute(sa.text(
                "INSERT INTO measurements (measurement_set_id, row_index, kind, variant, batch, workload, median_ms, "
                "min_ms, max_ms, reps, report_id, stage, view_kind, compared, note, raw) SELECT :n, row_index, kind, "
                "variant, batch, workload, median_ms, min_ms, max_ms, reps, report_id, stage, view_kind, compared, "
                "note, raw FROM measurements WHERE measurement_set_id = :s"), {"n": new_id, "s": set_id})
            new_sets.append(int(new_id))
    return new_sets


def calibrate_runtime(registry: Registry, hardware_name: str, runtime_name: str, profile_name: str | None,
                      label: str) -> dict:
    """Fit the runtime to the stored measurements of one GPU, store the fit as a new version (of `profile_name`, or
    of the runtime's own name), price the measurements again through the views under it, and return the fit with
    the profile's document (runtimes.yaml format; `label` names where it will be written). The new version is
    reached as NAME@VERSION only: a plain NAME keeps meaning its pinned version."""
    from registry.pricing.catalog import next_runtime_version, parse_runtimes, resolve_runtime, upsert_runtime
    from registry.store.measurements import resolve
    from registry.pricing.points import compare_measurements

    with registry.begin() as conn:
        hardware_id, runtime_id, runtime_label = resolve(conn, hardware_name, runtime_name)
        hardware_name = conn.execute(sa.text("SELECT name FROM hardware WHERE id = :h"),
                                     {"h": hardware_id}).scalar_one()
    rows = load_rows(registry, hardware_id, runtime_id)
    base = Profile.load(registry, runtime_id)
    result = calibrate(rows, base)
    name = (profile_name or runtime_label.split("@")[0]).strip().lower()
    with registry.begin() as conn:
        version = next_runtime_version(conn, name)
    document = profile_document(name, version, result["profile"], f"{runtime_label} calibrated on {hardware_name}",
                                describe_fit(result, rows, hardware_name, runtime_label), calibrated_on=hardware_name)
    profile = parse_runtimes(document, label)[0]
    with registry.begin() as conn:
        new_runtime_id = upsert_runtime(conn, profile, "calibrated")
        _, _, plain_version = resolve_runtime(conn, name)
    new_sets = copy_sets_for_profile(registry, hardware_id, runtime_id, new_runtime_id)
    return {**result, "document": document, "profile_label": f"{name}@{version}", "base_label": runtime_label,
            "plain_label": f"{name}@{plain_version}", "timed_rows": len(rows.measured_s),
            "after_from_views": [compare_measurements(registry, s)["summary"] for s in new_sets]}
