"""The cost model is declared once (registry/pricing/model.py): the pricing views are generated from it, and
calibrate and the serving step costs evaluate the same declaration, so a new term reaches all three together."""

import shutil

import numpy as np
import pytest
import sqlalchemy as sa

from tests.helpers import REPO, rows, run_command

H200_FILE = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"
STANDARD_PAGES = ["1654x2339"]


def test_the_committed_pricing_views_are_generated_from_the_model(tmp_path, monkeypatch):
    from registry.pricing import views as pricing_views

    assert pricing_views.main(["--check"]) == 0
    copy = tmp_path / "views"
    shutil.copytree(pricing_views.views_folder(), copy)
    monkeypatch.setattr(pricing_views, "views_folder", lambda: copy)
    target = copy / "60_v_point_stage_time.sql"
    target.write_text(target.read_text().replace("rp.module_call_s", "rp.kernel_launch_s"))
    assert pricing_views.main(["--check"]) == 1
    assert pricing_views.main([]) == 0 and pricing_views.main(["--check"]) == 0
    assert "rp.module_call_s" in target.read_text()
    assert pricing_views.main(["--write"]) == 2


def test_sql_and_numpy_render_the_same_terms():
    """Each term's SQL names exactly the inputs its numpy evaluation reads, with integer counts cast to DOUBLE."""
    from registry.pricing import model, views as pricing_views

    for term in model.ROW_TERMS:
        text = term.expr.sql(pricing_views.COST_GROUP_BIND)
        assert "COALESCE" not in text
        for count in ("g.flops", "g.op_calls", "g.kernel_launches"):
            if count in text:
                assert f"CAST({count} AS DOUBLE PRECISION)" in text
    values = {"flops": np.array([2e12, 1e6]), "bytes_moved": np.array([1e6, 8e9]), "op_calls": np.array([3.0, 3.0]),
              "kernel_launches": np.array([2.0, 2.0]), "stage": np.array(["prefill", "decode"], dtype=object),
              "peak_flops_per_s": 1e15, "memory_bandwidth_bytes_per_s": 4e12, "efficiency_scale": 1.0,
              "compute_efficiency": 0.5, "bandwidth_efficiency": 0.8, "aten_call_s": 2e-6, "kernel_launch_s": 5e-6,
              "graph_kernel_s": 1e-6, "cuda_graph_decode": True,
              "weight_bytes_read": np.array([1e6, 6e9]), "kv_cache_bytes": np.array([0.0, 1e9]),
              "fp8_matmul": np.array([False, False]), "fp8_kv_cache": False, "peak_fp8_flops_per_s": 2e15,
              "fp8_compute_efficiency": 0.5}
    bounds = model.row_bounds(values)
    # hand computed: 2e12 / (1e15 x 0.5) = 4 ms; 8e9 / (4e12 x 0.8) = 2.5 ms; dispatch 3 x 2 + 2 x 5 = 16 us, and
    # in the graph-replayed decode 2 x 1 us
    assert bounds["compute_bound_s"] == pytest.approx([4e-3, 2e-9])
    assert bounds["memory_bound_s"] == pytest.approx([3.125e-7, 2.5e-3])
    assert bounds["dispatch_s"] == pytest.approx([16e-6, 2e-6])
    assert model.op_time_s(bounds) == pytest.approx([4e-3, 2.5e-3])
    # fp8 weights on the first (a matmul row): the fp8 rate at its efficiency, half its 1 MB of weight bytes; an
    # fp8 KV cache on the second: half its 1 GB of KV bytes
    fp8 = model.row_bounds({**values, "fp8_matmul": np.array([True, False]), "fp8_kv_cache": True})
    assert fp8["compute_bound_s"] == pytest.approx([2e12 / (2e15 * 0.5), 2e-9])
    assert fp8["memory_bound_s"] == pytest.approx([(1e6 - 0.5e6) / 3.2e12, (8e9 - 0.5e9) / 3.2e12])
    assert fp8["dispatch_s"] == pytest.approx(bounds["dispatch_s"])
    host = model.stage_host_s({**values, "calls": np.array([2.0, 10.0]), "module_calls": np.array([100.0, 100.0]),
                               "module_call_s": 1e-6, "stage_call_overhead_s": 1e-4, "decode_step_overhead_s": 3e-3})
    assert host == pytest.approx([100e-6 + 2e-4, 10 * 3e-3])  # no module host time in a graph-replayed decode
    assert model.paged_kv_pool_bytes(0.9, 80_000_000_000, 6_670_000_000, 1_000_000_000) == 64_330_000_000


def _ids(registry, hardware, runtime):
    from registry.pricing.catalog import resolve_hardware, resolve_runtime

    with registry.begin() as conn:
        return resolve_hardware(conn, hardware)[0], resolve_runtime(conn, runtime)[0]


def _predicted_ms(url):
    return [r[0] for r in rows(url, "SELECT predicted_ms FROM v_predicted_vs_measured WHERE runtime = 'vllm' "
                                    "ORDER BY row_index")]


def _held_stage_times(registry, hid, rid):
    """Stage times the views give two points the step costs were not derived from (batch 3 decode, a fourth prompt
    length)."""
    from registry.serving.step_cost import make_workloads, record_probes

    held = [("x", dict(page="1654x2339", batch=3, new_tokens=2, prompt_text_tokens=509)),
            ("x", dict(page="1654x2339", batch=1, new_tokens=2, prompt_text_tokens=150))]
    scenario_id, _ = record_probes(registry, "held", make_workloads("dsocr-standard-v1", {}, held), [hid], [rid])
    with registry.begin() as conn:
        return {(p, s): t for p, s, t in conn.execute(sa.text(
            "SELECT point_index, stage, SUM(stage_time_s) FROM v_point_stage_time WHERE scenario_id = :s "
            "GROUP BY point_index, stage"), {"s": scenario_id}).all()}


def _step_cost_against_views(cost, stage):
    decode_context = 3 * (912 + 500)
    prompt = 912 + 141
    return ((cost.step_time(3, decode_context), stage[(1, "decode")]),
            (cost.prefill_time(prompt, prompt * prompt), stage[(2, "prefill")]))


def test_a_new_cost_term_reaches_the_views_calibrate_and_the_serving_step_cost(registry_url, tmp_path,
                                                                                 monkeypatch):
    """A bound term (a wait per kernel that can set an operator row's time) and a host term (a barrier per stage call)
    added to the declaration in a temporary copy: the regenerated views, calibrate's predictions and the serving
    step costs all change, and still equal one another."""
    from registry.pricing import calibrate, model, views as pricing_views
    from registry.serving.step_cost import step_costs
    from registry.store import views
    from registry.store.db import Registry

    stored = run_command(["ingest", "--measurements", str(H200_FILE), "--hardware", "h200", "--runtime", "vllm",
                          "--db", registry_url])
    assert stored.exit_code == 0, stored.output
    registry = Registry(registry_url)
    try:
        hid, rid = _ids(registry, "h200", "vllm")
        profile = calibrate.Profile.load(registry, rid)
        measured_rows = calibrate.load_rows(registry, hid, rid)
        before_fit = calibrate.predict(measured_rows, profile)
        before_views = _predicted_ms(registry_url)
        before_cost = step_costs(registry, "t", "dsocr-standard-v1", {}, STANDARD_PAGES, [hid], [rid])[0]
        before_steps = _step_cost_against_views(before_cost, _held_stage_times(registry, hid, rid))

        wait = model.Term("kernel_wait_s", model.KERNEL_LAUNCHES * model.Const(4e-5),
                          "seconds of a wait for each kernel's completion", bound="wait")
        barrier = model.Term("barrier_host_s", model.CALLS * model.Const(1e-3), "seconds of a barrier per call")
        monkeypatch.setattr(model, "ROW_TERMS", (*model.ROW_TERMS, wait))
        monkeypatch.setattr(model, "STAGE_HOST_TERMS", (*model.STAGE_HOST_TERMS, barrier))
        copy = tmp_path / "queries"
        shutil.copytree(views.queries_dir(), copy)
        for name, text in pricing_views.render().items():
            (copy / "views" / name).write_text(text)
        monkeypatch.setattr(views, "queries_dir", lambda: copy)
        with registry.begin() as conn:
            changed = views.sync_views(conn)
        assert {"v_point_cost_group_time", "v_point_stage_time", "v_point_summary_all"} <= set(changed)
        assert rows(registry_url, "SELECT COUNT(*) FROM v_point_cost_group_time WHERE bound = 'wait'")[0][0] > 0

        after_fit = calibrate.predict(measured_rows, profile)
        after_views = _predicted_ms(registry_url)
        after_cost = step_costs(registry, "t", "dsocr-standard-v1", {}, STANDARD_PAGES, [hid], [rid])[0]
        after_steps = _step_cost_against_views(after_cost, _held_stage_times(registry, hid, rid))
    finally:
        registry.dispose()

    assert len(before_views) == len(after_views) == 28
    assert list(1000.0 * before_fit) == pytest.approx(before_views, rel=1e-9)
    assert list(1000.0 * after_fit) == pytest.approx(after_views, rel=1e-9)
    # every timed stage pays at least the barrier of its calls: 1 ms each
    assert (after_fit - before_fit >= 1e-3 * (1 - 1e-9)).all()
    assert after_cost.decode_host_s == pytest.approx(before_cost.decode_host_s + 1e-3, rel=1e-9)
    assert set(after_cost.decode_bounds) == {"compute_bound_s", "memory_bound_s", "dispatch_s", "kernel_wait_s"}
    for (step_before, view_before), (step_after, view_after) in zip(before_steps, after_steps):
        assert step_before == pytest.approx(view_before, rel=1e-6)
        assert step_after == pytest.approx(view_after, rel=1e-6)
        assert step_after > step_before + 1e-3 * (1 - 1e-9)
