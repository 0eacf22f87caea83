"""What-if scenarios: a YAML file -> workloads x GPUs x runtimes -> scenario points -> the pricing views.

Python assembles parameters only (workloads, effective device figures) and reads the answers from
v_point_summary / v_point_stage_time; every formula lives in the SQL views.
"""

from __future__ import annotations

import datetime
import itertools
import json
import pathlib
import sys
from typing import Any

import attrs
import sqlalchemy as sa
import yaml

from analyzer.errors import AnalyzerInputError
from registry.catalog import suggestion
from registry.db import Registry, RegistryError

SCENARIO_KEYS = {"name", "description", "base", "sweep", "overrides", "target"}
BASE_KEYS = {"profile", "variant", "mode", "page", "tiles", "min_tiles", "max_tiles", "prompt_text_tokens",
             "new_tokens", "batch"}
SWEEP_KEYS = {"hardware", "runtime", "variant", "mode", "page", "tiles", "batch", "new_tokens"}
OVERRIDE_KEYS = {"peak_tflops", "memory_tb_per_s", "memory_gb", "efficiency_scale"}
TARGET_KEYS = {"pages_per_day", "page_latency_s"}
DEFAULT_PROFILE = "dsocr-standard-v1"  # the base workload when a scenario names none
SUMMARY_COLUMNS = ["point_index", "hardware", "runtime", "variant", "mode", "tiles", "batch", "new_tokens",
                   "page_latency_s", "pages_per_s", "tokens_per_s", "pages_per_gpu_day", "gpu_seconds_per_page",
                   "gpus_needed", "meets_latency_target", "memory_needed_bytes", "fits_in_memory",
                   "max_batch_in_memory", "vision_s", "projector_s", "prefill_s", "decode_s", "report_id"]


class ScenarioError(RegistryError):
    pass


def _lines(node, path=(), out=None) -> dict[tuple, int]:
    """Line number (1-based) of every key path in a composed YAML document."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_path = path + (key.value,)
            out[key_path] = key.start_mark.line + 1
            _lines(value, key_path, out)
    return out


@attrs.frozen
class Scenario:
    name: str
    source: str
    data: dict[str, Any]
    lines: dict[tuple, int]

    def where(self, *path) -> str:
        for depth in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:depth]))
            if line is not None:
                return f"{self.source}:{line}"
        return self.source

    def fail(self, path: tuple, message: str) -> ScenarioError:
        return ScenarioError(f"{self.where(*path)}: {'.'.join(map(str, path))}: {message}" if path
                             else f"{self.source}: {message}")


def load_scenario(path: str | pathlib.Path) -> Scenario:
    path = pathlib.Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(f"{path}:{mark.line + 1 if mark else '?'}: malformed YAML") from None
    scenario = Scenario(name=path.stem, source=str(path), data=data if isinstance(data, dict) else {},
                        lines=_lines(node) if node is not None else {})
    if not isinstance(data, dict):
        raise scenario.fail((), "a scenario must be a mapping with base, sweep, overrides and target")
    _check_keys(scenario, (), data, SCENARIO_KEYS)
    for section, keys in (("base", BASE_KEYS), ("sweep", SWEEP_KEYS), ("overrides", OVERRIDE_KEYS),
                          ("target", TARGET_KEYS)):
        value = data.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise scenario.fail((section,), "must be a mapping")
        _check_keys(scenario, (section,), value, keys)
    if "sweep" not in data:
        raise scenario.fail((), "missing key 'sweep' (at least hardware: [...])")
    for key, values in data["sweep"].items():
        if not isinstance(values, list):
            raise scenario.fail(("sweep", key), "must be a list")
        if not values:
            raise scenario.fail(("sweep", key), "is empty: list at least one value")
    if "hardware" not in data["sweep"]:
        raise scenario.fail(("sweep",), "missing key 'hardware'")
    name = data.get("name", path.stem)
    return attrs.evolve(scenario, name=str(name))


def _check_keys(scenario: Scenario, path: tuple, mapping: dict, allowed: set[str]) -> None:
    for key in mapping:
        if key not in allowed:
            raise scenario.fail(path + (key,), f"unknown key{suggestion(key, allowed)}")


def expand_workloads(scenario: Scenario) -> list:
    """The workloads of the sweep (variant x mode x page x tiles x batch x new tokens), in file order."""
    from analyzer.workload import load_profile, parse_page, parse_tiles

    base = dict(scenario.data.get("base") or {"profile": DEFAULT_PROFILE})
    profile = base.pop("profile", None)
    sweep = scenario.data["sweep"]
    axes = [key for key in ("variant", "mode", "page", "tiles", "batch", "new_tokens") if key in sweep]
    workloads, skipped = [], 0
    for combo in itertools.product(*(sweep[key] for key in axes)):
        fields = dict(base)
        fields.update(zip(axes, combo))
        overrides: dict[str, Any] = {}
        try:
            if "page" in fields:
                width, height = parse_page(fields.pop("page"))
                overrides.update(page_width_px=width, page_height_px=height)
            if fields.get("tiles") is not None:
                overrides["tile_grid"] = parse_tiles(fields.pop("tiles"))
            fields.pop("tiles", None)
            if "prompt_text_tokens" in fields:
                overrides["prompt_text_tokens"] = fields.pop("prompt_text_tokens")
            overrides.update(fields)
            if profile is not None:
                workload = load_profile(profile, **overrides)
            else:
                missing = {"variant", "mode", "new_tokens"} - set(overrides)
                if missing:
                    raise scenario.fail(("base",), f"missing {', '.join(sorted(missing))} (or a profile)")
                defaults = dict(page_width_px=1654, page_height_px=2339, prompt_text_tokens=9, batch=1)
                defaults.update(overrides)
                from analyzer.workload import Workload

                workload = Workload(**defaults)
        except AnalyzerInputError as exc:
            message = str(exc)
            if message.startswith("unknown mode") and "variant" in axes and "mode" in axes:
                skipped += 1  # this variant lacks the mode; the sweep's other variants have it
                continue
            culprit = next((("sweep", key) for key in axes if key.replace("_", " ") in message
                            or key in message), ("base",))
            raise scenario.fail(culprit, message) from None
        workloads.append(workload)
    if not workloads:
        raise scenario.fail(("sweep",), "no valid workload (each mode is unknown to each variant)")
    return workloads


def resolve_devices(scenario: Scenario, conn) -> tuple[list[tuple[int, str]], list[tuple[int, str, int]]]:
    from registry.catalog import resolve_hardware, resolve_runtime

    def located(key: str, resolve, name):
        try:
            return resolve(conn, name)
        except RegistryError as exc:
            raise ScenarioError(f"{scenario.where('sweep', key)}: sweep.{key}: {exc}") from None

    sweep = scenario.data["sweep"]
    return ([located("hardware", resolve_hardware, name) for name in sweep["hardware"]],
            [located("runtime", resolve_runtime, name) for name in sweep.get("runtime", ["hf-eager"])])


def _overrides(scenario: Scenario) -> dict[str, float | None]:
    data = scenario.data.get("overrides") or {}
    out: dict[str, float | None] = {}
    for key in OVERRIDE_KEYS:
        value = data.get(key)
        if value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise scenario.fail(("overrides", key), f"must be a positive number, got {value!r}")
        out[key] = float(value)
    target = scenario.data.get("target") or {}
    for key in TARGET_KEYS:
        value = target.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise scenario.fail(("target", key), f"must be a positive number, got {value!r}")
    return out


def find_report(conn, workload) -> int | None:
    """A stored report of this workload made by this analyzer on this transformers version (the newest schema
    version first)."""
    import transformers

    from analyzer import __version__
    from analyzer.analysis import workload_record
    from registry.ingest import workload_hash

    return conn.execute(sa.text(
        "SELECT r.id FROM reports r JOIN workloads w ON w.id = r.workload_id "
        "JOIN architectures a ON a.id = r.architecture_id "
        "WHERE w.workload_hash = :h AND r.analyzer_version = :v AND a.transformers_version = :t "
        "ORDER BY r.schema_version DESC, r.id LIMIT 1"),
        {"h": workload_hash(workload_record(workload)), "v": __version__, "t": transformers.__version__}).scalar()


def ensure_reports(registry: Registry, workloads: list, label: str, progress: bool = False) -> list[int]:
    """The stored report of each workload, analyzing and ingesting those not stored yet."""
    from tqdm import tqdm

    from analyzer.analysis import analyze
    from registry.ingest import write_report

    with registry.begin() as conn:
        report_ids = [find_report(conn, w) for w in workloads]
    missing = [i for i, rid in enumerate(report_ids) if rid is None]
    bar = tqdm(total=len(missing), unit="workload", desc="analyzing", file=sys.stderr,
               disable=not progress or len(missing) < 2, leave=False)
    try:
        for index in missing:
            stored = None
            with registry.begin(keep_open=True) as conn:
                stored = find_report(conn, workloads[index])  # an earlier duplicate in this list
            if stored is None:
                write_report(registry, analyze(workloads[index]), label, keep_open=True)
                with registry.begin(keep_open=True) as conn:
                    stored = find_report(conn, workloads[index])
            report_ids[index] = stored
            bar.update(1)
    finally:
        bar.close()
        registry.release()
    return report_ids


def record_scenario(conn, name: str, definition: dict, target: dict, report_ids: list[int],
                    hardware_ids: list[int], runtime_ids: list[int], overrides: dict) -> int:
    """The scenario row and one point per report x GPU x runtime, with the effective device figures."""
    from registry.ingest import bulk_insert

    devices = {hid: row for hid, *row in conn.execute(sa.text(
        "SELECT id, peak_bf16_flops_per_s, memory_bandwidth_bytes_per_s, memory_bytes FROM hardware")).all()}
    scenario_id = conn.execute(sa.text(
        "INSERT INTO scenarios (name, definition, target_pages_per_day, target_page_latency_s, created_at) "
        "VALUES (:name, :definition, :pages, :latency, :created) RETURNING id"),
        {"name": name, "definition": json.dumps(definition, sort_keys=True, default=str),
         "pages": target.get("pages_per_day"), "latency": target.get("page_latency_s"),
         "created": datetime.datetime.now(datetime.UTC).replace(tzinfo=None)}).scalar_one()
    points = []
    for report_pk, hid, rid in itertools.product(report_ids, hardware_ids, runtime_ids):
        peak, bandwidth, memory = devices[hid]
        points.append({
            "scenario_id": scenario_id, "point_index": len(points) + 1, "report_id": report_pk,
            "hardware_id": hid, "runtime_profile_id": rid,
            "peak_flops_per_s": overrides["peak_tflops"] * 1e12 if overrides.get("peak_tflops") else peak,
            "memory_bandwidth_bytes_per_s": (overrides["memory_tb_per_s"] * 1e12
                                             if overrides.get("memory_tb_per_s") else bandwidth),
            "memory_bytes": int(overrides["memory_gb"] * 1e9) if overrides.get("memory_gb") else memory,
            "efficiency_scale": overrides.get("efficiency_scale") or 1.0})
    bulk_insert(conn, "scenario_points", {key: [p[key] for p in points] for key in points[0]})
    return int(scenario_id)


def run_scenario(registry: Registry, scenario: Scenario, progress: bool = False) -> tuple[int, list[dict]]:
    """Analyze what is missing, record the scenario and its points, and read the priced points."""
    overrides = _overrides(scenario)
    workloads = expand_workloads(scenario)
    with registry.begin() as conn:
        hardware, runtimes = resolve_devices(scenario, conn)
    report_ids = ensure_reports(registry, workloads, f"whatif:{scenario.name}", progress)
    with registry.begin() as conn:
        scenario_id = record_scenario(conn, scenario.name, scenario.data, scenario.data.get("target") or {},
                                      report_ids, [h for h, _ in hardware], [r for r, _, _ in runtimes], overrides)
    return scenario_id, read_points(registry, scenario_id)


def read_points(registry: Registry, scenario_id: int) -> list[dict]:
    with registry.begin() as conn:
        result = conn.execute(sa.text(
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM v_point_summary WHERE scenario_id = :s "
            "ORDER BY CASE WHEN fits_in_memory THEN 0 ELSE 1 END, gpu_seconds_per_page, point_index"),
            {"s": scenario_id})
        return [dict(zip(SUMMARY_COLUMNS, row)) for row in result.all()]


def read_stage_times(registry: Registry, scenario_id: int) -> list[dict]:
    with registry.begin() as conn:
        result = conn.execute(sa.text(
            "SELECT point_index, stage, SUM(stage_time_s) FROM v_point_stage_time WHERE scenario_id = :s "
            "GROUP BY point_index, stage ORDER BY point_index, stage"), {"s": scenario_id})
        return [dict(point_index=p, stage=s, seconds=t) for p, s, t in result.all()]
