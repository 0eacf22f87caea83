"""Measurement files (`{"env": {...}, "rows": [...]}`) -> rows linked to the workload and stage they time.

Each timed row is mapped to a workload whose report has exactly that stage: a vision_tower or projector row of
B views of N px is the global view of a single-view mode at batch B, or B tiles of N px on one page; a prefill
row of T tokens is the variant's Base mode with T - image tokens of text; an end-to-end row is the whole
workload. Its prediction comes from the pricing views at a scenario point of the same GPU and runtime; the
workloads are analyzed under the runtime's execution.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import pathlib
from collections.abc import Callable
from typing import Any

import attrs
import sqlalchemy as sa

from analyzer.architecture import canonical_variant
from analyzer.variants import MEASUREMENT_VARIANT_NAMES
from analyzer.errors import AnalyzerInputError
from analyzer.fileio import (MAX_MEASUREMENT_BYTES, InputLimitError, decode_text, parse_document, quote,
                             one_of, read_input, source_name, unreadable)
from analyzer.workload import MODES, Workload
from registry.store.db import Registry, RegistryError

# One decode step over a static cache of `context` tokens (measure's graph_decode section): kept for reference, not
# compared, since neither is what a runtime profile's execution runs (a static cache is not hf-eager's DynamicCache,
# and transformers' unfused modules replayed from a CUDA graph are not the vllm execution's fused kernels).
DECODE_STEP_KINDS = {"graph_decode": "CUDA-graph replay of transformers' modules over a static KV cache",
                     "eager_static_decode": "eager transformers over a static KV cache"}
TIMED_KINDS = {"vision_tower", "projector", "prefill", "end_to_end", "end_to_end_views", *DECODE_STEP_KINDS}
UNTIMED_KINDS = {"ceiling", "profile_decode", "profile_vision", "profile_prefill"}
KINDS = frozenset(TIMED_KINDS | UNTIMED_KINDS)
STAGE_OF_KIND = {"vision_tower": "vision", "projector": "projector", "prefill": "prefill"}
COUNTED_EXPERTS = {None, "grouped_mm", "batched_mm"}  # implementations that run top-k experts per token


class MeasurementError(RegistryError):
    pass


@attrs.frozen
class MappedRow:
    index: int
    kind: str
    variant: str | None
    batch: int | None
    workload: Workload | None
    stage: str | None
    view_kind: str | None
    description: str
    compared: bool
    note: str
    raw: dict


def load_file(path: str | pathlib.Path) -> tuple[dict, list[dict], str]:
    path = pathlib.Path(path)
    try:
        raw = read_input(path, MAX_MEASUREMENT_BYTES)
        data = parse_document(decode_text(raw), "json")
    except OSError as exc:
        raise MeasurementError(unreadable(source_name(path), exc)) from None
    except InputLimitError as exc:
        raise MeasurementError(f"{path}: not a JSON measurement file within the input limits ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not isinstance(data.get("env"), dict):
        raise MeasurementError(f'{path}: expected {{"env": {{...}}, "rows": [...]}}')
    return data["env"], data["rows"], hashlib.sha256(raw).hexdigest()


def _tile_grid(count: int) -> tuple[int, int]:
    rows = max(r for r in range(1, int(math.isqrt(count)) + 1) if count % r == 0)
    return count // rows, rows


def _int(row: dict, key: str, where: str, minimum: int = 0) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MeasurementError(f"{where}: {key} must be an integer >= {minimum}, got {quote(value)}")
    return value


def _views_workload(variant: str, px: int, views: int, where: str) -> tuple[Workload, str]:
    """A workload whose vision stage is `views` views of `px` pixels in one call."""
    for mode, spec in MODES[variant].items():
        if spec.tile_px is None and spec.global_px == px:
            return Workload(variant=variant, mode=mode, page_width_px=px, page_height_px=px, prompt_text_tokens=0,
                            new_tokens=1, batch=views), "global"
    for mode, spec in MODES[variant].items():
        if spec.tile_px == px:
            return Workload(variant=variant, mode=mode, page_width_px=px * 2, page_height_px=px * 2,
                            tile_grid=_tile_grid(views), prompt_text_tokens=0, new_tokens=1, batch=1), "tile"
    raise MeasurementError(f"{where}: no mode of {variant} has views of {px} px")


# The fields of a row that its workload, stage and description follow from: rows equal in these (value and type)
# map alike, so a file of many rows builds each distinct workload once.
MAPPING_FIELDS = ("kind", "variant", "batch", "experts", "image", "tokens", "context", "new_tokens", "global_image",
                  "tiles", "tile_image", "prefill_context", "prompt_tokens")


def _mapping_key(row: dict) -> tuple | None:
    """The row's MAPPING_FIELDS with their types (1, 1.0 and True are equal in Python, not to the checks); None
    when a value cannot be a key (a list, an object), so the row is mapped on its own."""
    values = tuple(map(row.get, MAPPING_FIELDS))
    key = (values, tuple(map(type, values)))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def map_row(row: Any, index: int, label: str, mapped: dict | None = None) -> MappedRow:
    """The row's workload and stage. `mapped`: the rows mapped so far by their mapping key (read and extended),
    so that equal rows share one mapping instead of building their workload again."""
    where = f"{label}: row {index}"
    if not isinstance(row, dict):
        raise MeasurementError(f"{where}: a row must be an object")
    kind = row.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise MeasurementError(f"{where}: unknown kind {quote(kind)}; expected one of {', '.join(sorted(KINDS))}")
    for key in ("median_ms", "min_ms", "max_ms"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise MeasurementError(f"{where}: {key} must be a time >= 0 in ms, got {quote(value)}")
    if kind in UNTIMED_KINDS or (row.get("median_ms") is None and isinstance(row.get("error"), str)):
        what = row.get("what") or kind
        note = f"not timed: {str(row['error'])[:200]}" if "error" in row else "not a timed workload"
        return MappedRow(index, kind, None, row.get("batch"), None, None, None, str(what), False, note, row)
    if row.get("median_ms") is None:
        raise MeasurementError(f"{where}: missing median_ms")
    key = _mapping_key(row) if mapped is not None else None
    if key is not None and key in mapped:
        same = mapped[key]
        return MappedRow(index, same.kind, same.variant, same.batch, same.workload, same.stage, same.view_kind,
                         same.description, same.compared, same.note, row)
    result = _map_timed_row(row, index, where, kind)
    if key is not None:
        mapped[key] = result
    return result


def _map_timed_row(row: dict, index: int, where: str, kind: str) -> MappedRow:
    try:
        variant = canonical_variant(row.get("variant", ""))
    except AnalyzerInputError:
        raise MeasurementError(f"{where}: unknown variant {quote(row.get('variant'))}; expected "
                               f"{one_of(MEASUREMENT_VARIANT_NAMES)}") from None
    batch = _int(row, "batch", where, 1)
    experts = row.get("experts")
    compared, note = True, ""
    if not (experts is None or isinstance(experts, str)) or experts not in COUNTED_EXPERTS:
        compared, note = False, f"experts implementation {quote(experts)} is not the one the runtime profiles model"
    try:
        if kind in ("vision_tower", "projector"):
            px = _int(row, "image", where, 1)
            workload, view = _views_workload(variant, px, batch, where)
            return MappedRow(index, kind, variant, batch, workload, STAGE_OF_KIND[kind], view,
                             f"{batch} x {px} px views", compared, note, row)
        if kind == "prefill":
            tokens = _int(row, "tokens", where, 1)
            base = Workload(variant=variant, mode="base", page_width_px=1024, page_height_px=1024,
                            prompt_text_tokens=0, new_tokens=1, batch=batch)
            text = tokens - base.layout.image_placeholder_tokens
            if text < 0:
                raise MeasurementError(f"{where}: {tokens} tokens is fewer than one image's "
                                       f"{base.layout.image_placeholder_tokens}")
            workload = attrs.evolve(base, prompt_text_tokens=text)
            return MappedRow(index, kind, variant, batch, workload, "prefill", "", f"{batch} x {tokens} tokens",
                             compared, note, row)
        if kind in DECODE_STEP_KINDS:
            # the step writes the token at context - 1 and reads `context` tokens: the one decode step of a
            # workload whose prefill holds context - 1 tokens
            context = _int(row, "context", where, 2)
            base = Workload(variant=variant, mode="base", page_width_px=1024, page_height_px=1024,
                            prompt_text_tokens=0, new_tokens=2, batch=batch)
            text = context - 1 - base.layout.image_placeholder_tokens
            if text < 0:
                raise MeasurementError(f"{where}: a context of {context} tokens is shorter than one image's "
                                       f"{base.layout.image_placeholder_tokens}")
            return MappedRow(index, kind, variant, batch, attrs.evolve(base, prompt_text_tokens=text), "decode", "",
                             f"{batch} x 1 token at context {context}", False,
                             f"{DECODE_STEP_KINDS[kind]}: a reference, not compared", row)
        # end to end: the whole generation loop
        new_tokens = _int(row, "new_tokens", where, 1)
        if kind == "end_to_end_views":
            global_px = _int(row, "global_image", where, 1)
            tiles = _int(row, "tiles", where, 0)
            tile_px = row.get("tile_image") or 0
            mode = next((m for m, spec in MODES[variant].items()
                         if spec.global_px == global_px and (spec.tile_px or 0) == (tile_px if tiles else 0)
                         or (tiles == 0 and spec.global_px == global_px and spec.tile_px is not None)), None)
            if mode is None:
                raise MeasurementError(f"{where}: no mode of {variant} has a {global_px} px global view"
                                       + (f" and {tile_px} px tiles" if tiles else ""))
            grid = _tile_grid(tiles) if tiles else (0, 0)
            if MODES[variant][mode].tile_px is None:
                grid = None
            probe = Workload(variant=variant, mode=mode, page_width_px=global_px, page_height_px=global_px,
                             tile_grid=grid, prompt_text_tokens=0, new_tokens=new_tokens, batch=batch)
            context = row.get("prefill_context")
            text = (context - probe.layout.image_placeholder_tokens if isinstance(context, int)
                    else _int(row, "prompt_tokens", where, 0))
            workload = attrs.evolve(probe, prompt_text_tokens=max(text, 0))
            label_views = f"{global_px} px" + (f" + {tiles} x {tile_px} px" if tiles else "")
        else:
            px = _int(row, "image", where, 1)
            workload, _ = _views_workload(variant, px, 1, where)
            workload = attrs.evolve(workload, batch=batch, new_tokens=new_tokens,
                                    prompt_text_tokens=_int(row, "prompt_tokens", where, 0))
            label_views = f"{px} px"
        return MappedRow(index, kind, variant, batch, workload, None, None,
                         f"batch {batch}, {label_views}, {workload.prefill_tokens} prefill, {new_tokens} new",
                         compared, note, row)
    except AnalyzerInputError as exc:
        raise MeasurementError(f"{where}: {exc}") from None


def parse(path: str | pathlib.Path) -> tuple[dict, list[MappedRow], str]:
    env, rows, file_hash = load_file(path)
    if not rows:
        raise MeasurementError(f"{path}: no rows")
    by_key: dict[tuple, MappedRow] = {}
    mapped = [map_row(row, i, str(path), by_key) for i, row in enumerate(rows)]
    _check_stored_rows(mapped, str(path))
    return env, mapped, file_hash


def _check_stored_rows(rows: list[MappedRow], label: str) -> None:
    """`_check_stored` over every row, a column at a time: the first row that fails any check gets that row's
    own message."""
    from registry.store.models import ColumnValueError, check_columns

    columns = {"kind": [r.kind for r in rows], "variant": [r.variant for r in rows],
               "batch": [r.batch for r in rows], "reps": [r.raw.get("reps") for r in rows],
               "stage": [r.stage for r in rows], "view_kind": [r.view_kind for r in rows]}
    failing: list[int] = []
    for name, values in columns.items():
        if name in ("batch", "reps"):  # integers only: the range check below compares them
            wrong_type = next((i for i, value in enumerate(values) if value is not None and (
                isinstance(value, bool) or not isinstance(value, int))), None)
            if wrong_type is not None:
                failing.append(wrong_type)
                values = values[:wrong_type]
        try:
            check_columns("measurements", {name: values})
        except ColumnValueError as exc:
            failing.append(exc.index)
    first = min(failing, default=len(rows))
    if first < len(rows):
        _check_stored(rows[first], f"{label}: row {rows[first].index}")


def _check_stored(row: MappedRow, where: str) -> None:
    """The values of a row's `measurements` columns: integers where the column holds integers, and within the
    column (the same verdict on both backends)."""
    from registry.store.models import ColumnValueError, check_row

    values = {"kind": row.kind, "variant": row.variant, "batch": row.batch, "reps": row.raw.get("reps"),
              "stage": row.stage, "view_kind": row.view_kind}
    for key in ("batch", "reps"):
        value = values[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise MeasurementError(f"{where}: {key} must be an integer, got {quote(value)}")
    try:
        check_row("measurements", values)
    except ColumnValueError as exc:
        raise MeasurementError(f"{where}: {exc.column}: {quote(exc.value)} does not fit the registry (it holds "
                               f"{exc.limit})") from None


def resolve(conn, hardware: str, runtime: str) -> tuple[int, int, str]:
    """(hardware id, runtime profile id, 'name@version'); a typo gets the closest name."""
    from registry.pricing.catalog import resolve_hardware, resolve_runtime

    hardware_id, _ = resolve_hardware(conn, hardware)
    runtime_id, name, version = resolve_runtime(conn, runtime)
    return hardware_id, runtime_id, f"{name}@{version}"


def _float(value) -> float | None:
    return None if value is None else float(value)


def measurement_columns(rows: list[MappedRow], set_id: int, report_of: dict[int, int]) -> dict[str, list]:
    """The `measurements` rows of a set as column lists (one bulk insert); `report_of`: row index -> report key."""
    return {
        "measurement_set_id": [set_id] * len(rows), "row_index": [r.index for r in rows],
        "kind": [r.kind for r in rows], "variant": [r.variant for r in rows], "batch": [r.batch for r in rows],
        "workload": [r.description[:300] for r in rows],
        "median_ms": [_float(r.raw.get("median_ms")) for r in rows],
        "min_ms": [_float(r.raw.get("min_ms")) for r in rows], "max_ms": [_float(r.raw.get("max_ms")) for r in rows],
        "reps": [r.raw.get("reps") for r in rows], "report_id": [report_of.get(r.index) for r in rows],
        "stage": [r.stage for r in rows], "view_kind": [r.view_kind for r in rows],
        "compared": [bool(r.compared and r.workload is not None) for r in rows], "note": [r.note for r in rows],
        "raw": [json.dumps(r.raw, sort_keys=True) for r in rows]}


def runtime_mismatch(env: dict, execution: str, runtime_label: str, path) -> str | None:
    """The warning for a file measured under one runtime (env.runtime, as `measure` records it) and priced under a
    runtime profile of another execution: its error then measures the difference of the runtimes, not the model."""
    measured = env.get("runtime")
    if not isinstance(measured, str) or measured == execution:
        return None
    return (f"warning: {source_name(path)} was measured under {quote(measured)} (env.runtime) and is priced here "
            f"under {runtime_label}, a {execution} runtime: the errors compare two runtimes, not the model with "
            f"its measurement (give --runtime a {quote(measured)} profile)")


def ingest_measurements(registry: Registry, path: str | pathlib.Path, hardware: str, runtime: str,
                        progress: bool = False, warn: Callable[[str], None] | None = None
                        ) -> tuple[int, bool, list[MappedRow]]:
    """Store a measurement file for one GPU and runtime; returns (set id, newly stored, rows).

    The reports of its distinct workloads are looked up (and those not stored yet analyzed) once each; the set,
    its scenario and all its rows then go in in one transaction, the rows as one bulk insert."""
    from registry.pricing.catalog import runtime_execution
    from registry.store.ingest import bulk_insert
    from registry.pricing.points import PointKey, ScenarioRecord, record_scenario
    from registry.store.analyzed import ensure_reports

    env, rows, file_hash = parse(path)
    with registry.begin() as conn:
        hardware_id, runtime_id, runtime_label = resolve(conn, hardware, runtime)
        execution = runtime_execution(conn, runtime_id)
        mismatch = runtime_mismatch(env, execution, runtime_label, path)
        if mismatch is not None and warn is not None:
            warn(mismatch)
        existing = conn.execute(sa.text(
            "SELECT id FROM measurement_sets WHERE file_hash = :h AND hardware_id = :hw AND runtime_profile_id = :rt"),
            {"h": file_hash, "hw": hardware_id, "rt": runtime_id}).scalar()
    if existing is not None:
        return int(existing), False, rows
    if registry.read_only():
        raise RegistryError(f"{path}: not in the registry for {hardware} / {runtime_label}, which this connection "
                            "may only read: ingest it first with a role that can write (ingest --measurements)")
    timed = [r for r in rows if r.workload is not None]
    # distinct, in the order of their first row (equal rows share one Workload object: the identity check first)
    workloads = list(dict.fromkeys({id(r.workload): r.workload for r in timed}.values()))
    report_ids = ensure_reports(registry, workloads, f"measurements:{pathlib.Path(path).name}", progress, execution)
    report_of_workload = dict(zip(workloads, report_ids))
    report_of = {r.index: report_of_workload[r.workload] for r in timed}
    with registry.begin() as conn:
        distinct = sorted(set(report_ids))
        scenario_id = record_scenario(
            conn, ScenarioRecord(name=f"measurements:{pathlib.Path(path).name}", kind="measurement",
                                 definition={"measurements": str(path), "hardware": hardware, "runtime": runtime_label}),
            [PointKey(report, hardware_id, runtime_id) for report in distinct],
            new_run=True).scenario_id  # each set prices its own points
        set_id = conn.execute(sa.text(
            "INSERT INTO measurement_sets (file_hash, source, hardware_id, runtime_profile_id, scenario_id, env, "
            "ingested_at) VALUES (:h, :src, :hw, :rt, :sc, :env, :at) RETURNING id"),
            {"h": file_hash, "src": str(path)[:1000], "hw": hardware_id, "rt": runtime_id, "sc": scenario_id,
             "env": json.dumps(env, sort_keys=True), "at": datetime.datetime.now(datetime.UTC).replace(tzinfo=None)}
        ).scalar_one()
        bulk_insert(conn, "measurements", measurement_columns(rows, int(set_id), report_of))
    return int(set_id), True, rows
