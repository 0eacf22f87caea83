"""Bytes by tensor role: the KV-cache part of each operator row's bytes (report schema 4), the report's matmul weight
bytes, older reports without the split, and the registry's rows of both.

Hand figures: the v1 decoder's KV cache in bf16 is 12 layers x 2 (K, V) x 10 heads x 128 x 2 B =
61,440 bytes per token. A decode step at context C (C tokens cached before the step) writes the new token's K/V
(61,440 B per sequence) and attention then reads the C + 1 tokens in the cache.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from analyzer.analysis import decode_step_counts, trace_decode_step, trace_prefill
from analyzer.categories import CategoryId
from analyzer.execution import Execution
from analyzer.report import (ReportFormatError, dumps_json, load_report, loads, report_from_dict, report_to_dict)
from tests.helpers import as_version_3, reid, rows, run_command, without_kv_roles

KV_PER_TOKEN = 12 * 2 * 10 * 128 * 2
ATTENTION = (CategoryId.ATTENTION, CategoryId.ATTENTION_MASKED)


def _kv(counts, categories, field):
    return sum(getattr(vec, field) for (path, category), vec in counts.items() if category in categories)


def test_the_hand_figure_is_the_reports_kv_bytes_per_token(standard_v1_report):
    assert KV_PER_TOKEN == 61_440 == standard_v1_report.kv_cache_bytes_per_token


@pytest.mark.parametrize("context", [0, 100, 777])
@pytest.mark.parametrize("execution", [Execution.HF_EAGER, Execution.VLLM])
def test_a_decode_step_reads_the_cache_and_writes_one_token_of_it(execution, context):
    counts = trace_decode_step("v1", context, 1, execution).counts
    # attention reads the whole cache, the new token's K/V included, and writes no KV
    assert _kv(counts, ATTENTION, "kv_bytes_read") == KV_PER_TOKEN * (context + 1)
    assert _kv(counts, ATTENTION, "kv_bytes_written") == 0
    moves = (CategoryId.DATA_MOVEMENT,)
    if execution is Execution.VLLM:  # the paged cache: one token written in place, nothing of the cache read
        assert (_kv(counts, moves, "kv_bytes_read"), _kv(counts, moves, "kv_bytes_written")) == (0, KV_PER_TOKEN)
    else:  # DynamicCache concatenates: reads the old cache, writes the grown one
        assert (_kv(counts, moves, "kv_bytes_read"), _kv(counts, moves, "kv_bytes_written")) == (
            KV_PER_TOKEN * context, KV_PER_TOKEN * (context + 1))
    others = [key for key, vec in counts.items() if (vec.kv_bytes_read or vec.kv_bytes_written)
              and key[1] not in (*ATTENTION, *moves)]
    assert others == []
    for vec in counts.values():  # KV bytes are a part of the activation-scaled bytes
        assert vec.kv_bytes_read <= vec.scaled_bytes_read and vec.kv_bytes_written <= vec.scaled_bytes_written


def test_the_paged_cache_write_scales_with_the_batch():
    counts = trace_decode_step("v1", 50, 2, Execution.VLLM).counts  # a batch-2 trace
    assert _kv(counts, (CategoryId.DATA_MOVEMENT,), "kv_bytes_written") == 2 * KV_PER_TOKEN
    assert _kv(counts, ATTENTION, "kv_bytes_read") == 2 * KV_PER_TOKEN * 51


@pytest.mark.parametrize("execution", [Execution.HF_EAGER, Execution.VLLM])
def test_the_prefill_writes_its_tokens_into_the_cache(execution):
    counts = trace_prefill("v1", 300, 273, 1, execution).counts
    assert _kv(counts, (CategoryId.DATA_MOVEMENT,), "kv_bytes_written") == KV_PER_TOKEN * 300
    assert _kv(counts, (CategoryId.DATA_MOVEMENT,), "kv_bytes_read") == 0  # the cache was empty


@pytest.mark.parametrize("execution", [Execution.HF_EAGER, Execution.VLLM])
def test_the_closed_form_gives_the_kv_bytes_of_a_fresh_trace(execution):
    for context in (3, 1_000):  # neither is a probe context
        closed = decode_step_counts("v1", context, 1, execution)
        fresh = trace_decode_step("v1", context, 1, execution).counts
        for key in set(closed) | set(fresh):
            got, want = closed[key], fresh[key]
            assert (got.kv_bytes_read, got.kv_bytes_written) == (want.kv_bytes_read, want.kv_bytes_written), key


def _ops(report, stage=None):
    return [(snap, op) for snap in report.module_metrics for op in snap.operators
            if stage is None or snap.stage.value == stage]


@pytest.mark.parametrize("execution", ["hf-eager", "vllm"])
def test_every_row_of_a_report_splits_its_bytes_by_role(execution):
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile

    report = analyze(load_profile("dsocr-base-v1", new_tokens=20, batch=3), execution)
    assert report.schema_version == 4 and report.kv_roles_known
    for snap, op in _ops(report):
        assert op.kv_cache_bytes_read <= op.bytes_read and op.kv_cache_bytes_written <= op.bytes_written
        assert op.weight_bytes_read + op.kv_cache_bytes_read <= op.bytes_read
        if snap.stage.value in ("vision", "projector"):
            assert (op.kv_cache_bytes_read, op.kv_cache_bytes_written) == (0, 0)
    prefill_tokens, steps, batch = report.workload.prefill_tokens, report.workload.decode_steps, 3
    assert steps == 19
    # decode: attention reads contexts prefill .. prefill + steps - 1, each plus the new token, for every sequence
    attention_read = sum(op.kv_cache_bytes_read for snap, op in _ops(report, "decode")
                         if op.category_id in ATTENTION)
    assert attention_read == KV_PER_TOKEN * batch * sum(c + 1 for c in range(prefill_tokens, prefill_tokens + steps))
    written = sum(op.kv_cache_bytes_written for _, op in _ops(report, "decode"))
    if execution == "vllm":
        assert written == KV_PER_TOKEN * batch * steps
    else:
        assert written == KV_PER_TOKEN * batch * sum(c + 1 for c in range(prefill_tokens, prefill_tokens + steps))
    assert sum(op.kv_cache_bytes_written for _, op in _ops(report, "prefill")) == KV_PER_TOKEN * batch * prefill_tokens


def test_matmul_weight_bytes_by_hand(standard_v1_report, standard_ocr2_report):
    sam = 12 * ((768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768))
    clip = 24 * ((1024 * 3072 + 3072) + (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024))
    projector = 2048 * 1280 + 1280
    attention = 12 * 4 * 1280 * 1280
    dense_mlp = 3 * 1280 * 6848
    shared = 11 * 3 * 1280 * 1792
    experts = 11 * 64 * 3 * 1280 * 896
    lm_head = 129_280 * 1280
    parameters = sam + clip + projector + attention + dense_mlp + shared + experts + lm_head
    assert parameters == 3_158_173_952
    assert standard_v1_report.matmul_weight_bytes == 2 * parameters == 6_316_347_904
    # not the embedding, norms, convolutions, router, positions: those stay in weight_bytes only
    assert standard_v1_report.weight_bytes - standard_v1_report.matmul_weight_bytes == 2 * (
        3_335_504_128 - parameters)
    assert 0 < standard_ocr2_report.matmul_weight_bytes < standard_ocr2_report.weight_bytes


def test_a_version_3_report_loads_with_its_kv_bytes_unknown(standard_v1_report, tmp_path):
    old = as_version_3(standard_v1_report)
    text = dumps_json(old)
    data = json.loads(text)
    assert "matmul_weight_bytes" not in data
    assert "kv_cache_bytes_read" not in data["module_metrics"][-1]["operators"][0]
    # schema 4 differs from 3 by the new fields and the version only
    assert without_kv_roles(report_to_dict(standard_v1_report)) | {"schema_version": 3, "report_id": ""} == \
        data | {"report_id": ""}
    loaded = loads(text, "json")
    assert loaded == old and not loaded.kv_roles_known and loaded.report_id == old.report_id
    assert all(op.kv_cache_bytes_read is None and op.kv_cache_bytes_written is None and not op.kv_roles_known
               for _, op in _ops(loaded))
    with pytest.raises(ReportFormatError, match="is not part of a schema_version 3 report"):
        report_from_dict(reid(data | {"matmul_weight_bytes": 1}))
    fresh = report_to_dict(standard_v1_report)
    del next(s for s in fresh["module_metrics"] if s["operators"])["operators"][0]["kv_cache_bytes_read"]
    with pytest.raises(ReportFormatError, match="kv_cache_bytes_read .* are given together|missing kv_cache"):
        report_from_dict(reid(fresh))


def test_kv_bytes_beyond_the_rows_bytes_are_refused(standard_v1_report):
    data = report_to_dict(standard_v1_report)
    op = next(op for s in data["module_metrics"] for op in s["operators"] if op["weight_bytes_read"])
    op["kv_cache_bytes_read"] = op["bytes_read"] - op["weight_bytes_read"] + 1
    with pytest.raises(ReportFormatError, match="exceeds bytes_read"):
        report_from_dict(reid(data))


def test_the_registry_stores_the_split_and_knows_which_reports_lack_it(registry_url, tmp_path):
    from analyzer.analysis import analyze
    from analyzer.report import write_report
    from analyzer.workload import load_profile
    from registry.store import stored
    from registry.store.db import Registry

    new = analyze(load_profile("dsocr-base-v1", new_tokens=8), "vllm")
    old = as_version_3(new)
    paths = {}
    for name, report in (("new", new), ("old", old)):
        paths[name] = tmp_path / f"{name}.json"
        write_report(report, paths[name])
        assert run_command(["ingest", str(paths[name]), "--db", registry_url]).exit_code == 0
        shown = run_command(["report", report.report_id, "--db", registry_url])
        assert shown.exit_code == 0 and shown.stdout == paths[name].read_text()  # rebuilt byte for byte
    unknown = rows(registry_url, "SELECT COUNT(*) FROM operator_metrics o JOIN reports r ON r.id = o.report_id "
                                 "WHERE r.report_id = :r AND o.kv_cache_bytes_read IS NULL "
                                 "AND o.kv_cache_bytes_written IS NULL", r=old.report_id)
    assert unknown == [(sum(len(s.operators) for s in old.module_metrics),)]  # NULL, not 0
    groups = rows(registry_url, "SELECT MIN(g.kv_cache_bytes_read), MAX(g.kv_cache_bytes_written), "
                                "SUM(g.operator_rows) FROM operator_cost_groups g JOIN reports r ON r.id = g.report_id "
                                "WHERE r.report_id = :r", r=old.report_id)
    assert groups == [(-1, -1, sum(len(s.operators) for s in old.module_metrics))]
    kv_read = rows(registry_url, "SELECT SUM(o.kv_cache_bytes_read) FROM operator_metrics o JOIN reports r "
                                 "ON r.id = o.report_id WHERE r.report_id = :r", r=new.report_id)
    assert kv_read == [(sum(op.kv_cache_bytes_read for _, op in _ops(new)),)]
    registry = Registry(registry_url)
    try:
        with registry.begin() as conn:
            pk = conn.execute(sa.text("SELECT id FROM reports WHERE report_id = :r"), {"r": old.report_id}).scalar()
            assert stored.kv_roles_known(conn, new.report_id) and not stored.kv_roles_known(conn, old.report_id)
            assert not stored.kv_roles_known(conn, int(pk))
            assert stored.kv_roles_refusal(conn, new.report_id) is None
            assert stored.kv_roles_refusal(conn, old.report_id) == (
                f"report {old.report_id} was analyzed before the KV-cache bytes were counted (schema 3): "
                f"re-analyze it to price an fp8 KV cache")
            # recorded for the new report; derived from the stored module tree for the old one
            assert stored.matmul_weight_bytes(conn, new.report_id) == new.matmul_weight_bytes == \
                stored.matmul_weight_bytes(conn, old.report_id) == 6_316_347_904
            assert conn.execute(sa.text("SELECT matmul_weight_bytes FROM reports WHERE report_id = :r"),
                                {"r": old.report_id}).scalar() is None
    finally:
        registry.dispose()
    assert load_report(paths["old"]) == old


def test_cost_groups_part_rows_whose_role_bytes_differ(registry_url, standard_v1_report, tmp_path):
    """Two rows with the same counts and totals but different weight / KV bytes are two groups."""
    import attrs

    from analyzer.report import with_report_id

    snaps = list(standard_v1_report.module_metrics)
    index, op = next((i, op) for i, s in enumerate(snaps) if s.stage.value == "decode"
                     for op in s.operators if op.category_id is CategoryId.ATTENTION)
    twins = [(i, o) for i, s in enumerate(snaps) if s.stage.value == "decode" for o in s.operators
             if o.category_id is CategoryId.ATTENTION and o.bytes_read == op.bytes_read and i != index]
    assert twins  # the 12 layers' attention rows cost the same
    twin_index, twin = twins[0]
    moved = attrs.evolve(twin, kv_cache_bytes_read=twin.kv_cache_bytes_read - 2)
    snaps[twin_index] = attrs.evolve(snaps[twin_index], operators=tuple(
        moved if o is twin else o for o in snaps[twin_index].operators))
    report = with_report_id(attrs.evolve(standard_v1_report, module_metrics=tuple(snaps)))
    path = tmp_path / "edited.json"
    path.write_text(dumps_json(report))
    assert run_command(["ingest", str(path), "--db", registry_url]).exit_code == 0
    found = rows(registry_url, "SELECT g.kv_cache_bytes_read, g.operator_rows FROM operator_cost_groups g "
                               "JOIN reports r ON r.id = g.report_id JOIN operator_categories c ON c.id = g.category_id "
                               "WHERE r.report_id = :r AND g.stage = 'decode' AND c.name = 'attention' "
                               "AND g.bytes_read = :b", r=report.report_id, b=op.bytes_read)
    assert sorted(found) == [(op.kv_cache_bytes_read - 2, 1), (op.kv_cache_bytes_read, len(twins))]
