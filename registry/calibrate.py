"""Fit a runtime profile's free parameters to the measurements of one GPU x runtime by least squares.

Free parameters: the compute efficiency of matmul, attention and conv, one scale on every category's bandwidth
efficiency, the per-kernel launch cost (in eager PyTorch mostly host dispatch time), the host time per stage call
and per decode step. The model evaluated during the fit is the pricing views' formula over the same rows (a test
holds the two equal); residuals are relative errors. Held-out error: leave one kind of measurement out, fit on
the rest, predict the kind left out.
"""

from __future__ import annotations

import attrs
import numpy as np
import sqlalchemy as sa

from registry.db import Registry, RegistryError

FREE = ("matmul_compute_efficiency", "attention_compute_efficiency", "conv_compute_efficiency",
        "bandwidth_efficiency_scale", "kernel_launch_s", "stage_call_overhead_s", "decode_step_overhead_s")
LOWER = np.array([0.02, 0.02, 0.02, 0.05, 0.0, 0.0, 0.0])
UPPER = np.array([1.0, 1.0, 1.0, 1.5, 1e-3, 0.1, 0.1])


@attrs.define
class Rows:
    """The compared measurements of one GPU x runtime, as the arrays the pricing formula needs."""

    measured_s: np.ndarray  # per measurement
    kinds: list[str]
    row_of_term: np.ndarray  # per (measurement, module, category) term: which measurement
    flops: np.ndarray
    bytes_moved: np.ndarray
    launches: np.ndarray
    category: list[str]
    stage_calls: np.ndarray  # per measurement: stage calls outside decode
    decode_steps: np.ndarray
    peak_flops_per_s: float
    bandwidth_bytes_per_s: float
    labels: list[str]


def load_rows(registry: Registry, hardware_id: int, runtime_id: int) -> Rows:
    with registry.begin() as conn:
        meas = conn.execute(sa.text(
            "SELECT s.id, m.row_index, m.kind, m.median_ms, m.report_id, m.stage, m.view_kind, m.workload "
            "FROM measurements m JOIN measurement_sets s ON s.id = m.measurement_set_id "
            "WHERE s.hardware_id = :h AND s.runtime_profile_id = :r AND m.compared ORDER BY s.id, m.row_index"),
            {"h": hardware_id, "r": runtime_id}).all()
        if not meas:
            raise RegistryError("no compared measurements for this GPU and runtime: "
                                "run `dsocr-registry ingest --measurements FILE --hardware ... --runtime ...` first")
        peak, bandwidth = conn.execute(sa.text(
            "SELECT peak_bf16_flops_per_s, memory_bandwidth_bytes_per_s FROM hardware WHERE id = :h"),
            {"h": hardware_id}).one()
        terms = {"row": [], "flops": [], "bytes": [], "launches": [], "category": []}
        stage_calls, decode_steps = [], []
        for index, (_, _, _, _, report_pk, stage, view_kind, _) in enumerate(meas):
            where = "o.report_id = :rep" + ("" if stage is None else " AND o.stage = :stage AND o.view_kind = :view")
            for flops, nbytes, launches, category in conn.execute(sa.text(
                    "SELECT o.flops, o.bytes_read + o.bytes_written, o.kernel_launches, c.name FROM operator_metrics o "
                    f"JOIN operator_categories c ON c.id = o.category_id WHERE {where}"),
                    {"rep": report_pk, "stage": stage, "view": view_kind}).all():
                terms["row"].append(index)
                terms["flops"].append(float(flops))
                terms["bytes"].append(float(nbytes))
                terms["launches"].append(float(launches))
                terms["category"].append(category)
            stages = conn.execute(sa.text(
                "SELECT stage, calls FROM report_stages WHERE report_id = :rep"
                + ("" if stage is None else " AND stage = :stage AND view_kind = :view")),
                {"rep": report_pk, "stage": stage, "view": view_kind}).all()
            stage_calls.append(sum(1 for s, _ in stages if s != "decode"))
            decode_steps.append(sum(c for s, c in stages if s == "decode"))
    return Rows(measured_s=np.array([m[3] / 1000.0 for m in meas]), kinds=[m[2] for m in meas],
                row_of_term=np.array(terms["row"]), flops=np.array(terms["flops"]),
                bytes_moved=np.array(terms["bytes"]), launches=np.array(terms["launches"]),
                category=terms["category"], stage_calls=np.array(stage_calls, dtype=float),
                decode_steps=np.array(decode_steps, dtype=float), peak_flops_per_s=float(peak),
                bandwidth_bytes_per_s=float(bandwidth), labels=[f"{m[2]} {m[7]}" for m in meas])


@attrs.define
class Profile:
    """A runtime profile's numbers, as stored in runtime_profiles / runtime_profile_categories."""

    kernel_launch_s: float
    stage_call_overhead_s: float
    decode_step_overhead_s: float
    fused_bytes_factor: float
    categories: dict[str, dict]  # name -> compute_efficiency, bandwidth_efficiency, fused

    @classmethod
    def load(cls, registry: Registry, runtime_id: int) -> "Profile":
        with registry.begin() as conn:
            launch, call, step, fused_factor = conn.execute(sa.text(
                "SELECT kernel_launch_s, stage_call_overhead_s, decode_step_overhead_s, fused_bytes_factor "
                "FROM runtime_profiles WHERE id = :r"), {"r": runtime_id}).one()
            categories = {name: {"compute_efficiency": ce, "bandwidth_efficiency": be, "fused": bool(fused)}
                          for name, ce, be, fused in conn.execute(sa.text(
                              "SELECT c.name, rc.compute_efficiency, rc.bandwidth_efficiency, rc.fused FROM "
                              "runtime_profile_categories rc JOIN operator_categories c ON c.id = rc.category_id "
                              "WHERE rc.runtime_profile_id = :r"), {"r": runtime_id}).all()}
        return cls(launch, call, step, fused_factor, categories)

    def with_parameters(self, theta: np.ndarray) -> "Profile":
        categories = {name: dict(values) for name, values in self.categories.items()}
        for name, value in zip(("matmul", "attention", "conv"), theta[:3]):
            categories[name]["compute_efficiency"] = float(value)
        for values in categories.values():
            values["bandwidth_efficiency"] = float(min(1.0, values["bandwidth_efficiency"] * theta[3]))
        return Profile(float(theta[4]), float(theta[5]), float(theta[6]), self.fused_bytes_factor, categories)

    def parameters(self) -> np.ndarray:
        return np.array([self.categories["matmul"]["compute_efficiency"],
                         self.categories["attention"]["compute_efficiency"],
                         self.categories["conv"]["compute_efficiency"], 1.0, self.kernel_launch_s,
                         self.stage_call_overhead_s, self.decode_step_overhead_s])


def predict(rows: Rows, profile: Profile) -> np.ndarray:
    """Seconds per measurement: the formula of v_point_stage_time, summed as v_predicted_vs_measured does."""
    ce = np.array([profile.categories[c]["compute_efficiency"] for c in rows.category])
    be = np.array([profile.categories[c]["bandwidth_efficiency"] for c in rows.category])
    fused = np.array([profile.categories[c]["fused"] for c in rows.category])
    moved = rows.bytes_moved * np.where(fused, profile.fused_bytes_factor, 1.0)
    kernel = np.maximum(rows.flops / (rows.peak_flops_per_s * ce), moved / (rows.bandwidth_bytes_per_s * be))
    launch = np.where(fused, 0.0, rows.launches) * profile.kernel_launch_s
    per_row = np.bincount(rows.row_of_term, weights=kernel + launch, minlength=len(rows.measured_s))
    return per_row + rows.stage_calls * profile.stage_call_overhead_s + rows.decode_steps * profile.decode_step_overhead_s


def ape(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return 100.0 * np.abs(predicted - measured) / measured


def fit(rows: Rows, base: Profile, mask: np.ndarray) -> tuple[Profile, np.ndarray]:
    from scipy.optimize import least_squares

    def residuals(theta):
        predicted = predict(rows, base.with_parameters(theta))
        return ((predicted - rows.measured_s) / rows.measured_s)[mask]

    start = np.clip(base.parameters(), LOWER, UPPER)
    result = least_squares(residuals, start, bounds=(LOWER, UPPER), x_scale="jac", max_nfev=2000)
    return base.with_parameters(result.x), result.x


def calibrate(rows: Rows, base: Profile) -> dict:
    everything = np.ones(len(rows.measured_s), dtype=bool)
    fitted, theta = fit(rows, base, everything)
    before = ape(predict(rows, base), rows.measured_s)
    after = ape(predict(rows, fitted), rows.measured_s)
    held_out = np.full(len(rows.measured_s), np.nan)
    kinds = sorted(set(rows.kinds))
    for kind in kinds:
        test = np.array([k == kind for k in rows.kinds])
        if test.all():
            continue
        partial, _ = fit(rows, base, ~test)
        held_out[test] = ape(predict(rows, partial), rows.measured_s)[test]

    def by_kind(errors):
        out = {}
        for kind in kinds + ["all"]:
            picked = errors if kind == "all" else errors[np.array([k == kind for k in rows.kinds])]
            picked = picked[~np.isnan(picked)]
            out[kind] = {"rows": int(picked.size), "mape_pct": float(picked.mean()) if picked.size else None,
                         "median_ape_pct": float(np.median(picked)) if picked.size else None}
        return out

    return {"profile": fitted, "before": by_kind(before), "after": by_kind(after), "held_out": by_kind(held_out),
            "parameters": dict(zip(FREE, theta.tolist()))}


def profile_document(name: str, version: int, profile: Profile, description: str, source: str) -> dict:
    """The profile in the runtimes.yaml format (loadable by `dsocr-registry runtime add`)."""
    return {"name": name, "version": version, "description": description, "source": source,
            "kernel_launch_us": round(profile.kernel_launch_s * 1e6, 4),
            "stage_call_overhead_ms": round(profile.stage_call_overhead_s * 1e3, 5),
            "decode_step_overhead_ms": round(profile.decode_step_overhead_s * 1e3, 5),
            "fused_bytes_factor": profile.fused_bytes_factor,
            "categories": {name: {"compute_efficiency": round(v["compute_efficiency"], 5),
                                  "bandwidth_efficiency": round(v["bandwidth_efficiency"], 5),
                                  **({"fused": True} if v["fused"] else {})}
                           for name, v in profile.categories.items()}}


def describe_fit(result: dict, rows: Rows, hardware: str, runtime: str) -> str:
    before, after, held = result["before"]["all"], result["after"]["all"], result["held_out"]["all"]
    return (f"Least-squares fit (relative residuals) of {len(rows.measured_s)} timed measurements on {hardware} "
            f"under {runtime}: mean absolute error {before['mape_pct']:.1f}% before, {after['mape_pct']:.1f}% after "
            f"on the rows used, {held['mape_pct']:.1f}% on rows held out (leave one kind out).")


def copy_sets_for_profile(registry: Registry, hardware_id: int, base_runtime_id: int, new_runtime_id: int) -> list[int]:
    """The measurement sets of (GPU, base runtime), stored again under the new runtime (rows and points copied),
    so that the views price them with the new profile."""
    from registry.pricing import record_scenario

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
            scenario_id = record_scenario(conn, f"measurements:{source}", {"measurements": source, "calibrated": True},
                                          {}, reports, [hardware_id], [new_runtime_id], {})
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
    """Fit the runtime to the stored measurements of one GPU, store the fit as the profile's next version, price the
    measurements again through the views under it, and return the fit with the profile's document (runtimes.yaml
    format; `label` names where it will be written)."""
    from registry.catalog import next_runtime_version, parse_runtimes, upsert_runtime
    from registry.measurements import resolve
    from registry.pricing import compare_measurements

    with registry.begin() as conn:
        hardware_id, runtime_id, runtime_label = resolve(conn, hardware_name, runtime_name)
    rows = load_rows(registry, hardware_id, runtime_id)
    base = Profile.load(registry, runtime_id)
    result = calibrate(rows, base)
    name = (profile_name or runtime_label.split("@")[0]).strip().lower()
    with registry.begin() as conn:
        version = next_runtime_version(conn, name)
    document = profile_document(name, version, result["profile"], f"{runtime_label} calibrated on {hardware_name}",
                                describe_fit(result, rows, hardware_name, runtime_label))
    profile = parse_runtimes(document, label)[0]
    with registry.begin() as conn:
        new_runtime_id = upsert_runtime(conn, profile, "calibrated")
    new_sets = copy_sets_for_profile(registry, hardware_id, runtime_id, new_runtime_id)
    return {**result, "document": document, "profile_label": f"{name}@{version}", "base_label": runtime_label,
            "timed_rows": len(rows.measured_s),
            "after_from_views": [compare_measurements(registry, s)["summary"] for s in new_sets]}
