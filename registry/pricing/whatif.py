"""What-if scenarios: a YAML file -> workloads x GPUs x runtimes, priced through registry.pricing.points.

This module reads and checks scenario files and expands their sweeps into workloads; recording the points and
reading the answers (every formula is in the SQL views) is registry.pricing.points's.
"""

from __future__ import annotations

import itertools
import math
import pathlib
from typing import Any

import attrs
import yaml

from analyzer import ranges
from analyzer.errors import AnalyzerInputError
from analyzer.execution import DEFAULT_EXECUTION, execution_spec
from analyzer.fileio import (MAX_SMALL_FILE_BYTES, document_kind, document_kind_of_head, key_path, read_document,
                            source_name)
from registry.pricing.catalog import suggestion
from registry.store.db import Registry, RegistryError
from registry.pricing.points import PointKey, ScenarioRecord, read_points, record_scenario
from registry.store.analyzed import ensure_reports

SCENARIO_KEYS = {"name", "description", "base", "sweep", "overrides", "target", "serving", "plan"}
BASE_KEYS = {"profile", "variant", "mode", "page", "tiles", "min_tiles", "max_tiles", "prompt_text_tokens",
             "new_tokens", "batch"}
# What a point is priced on: the GPU, the runtime and the precision of its weights and KV cache (the other sweep
# keys are workload axes).
DEVICE_AXES = ("hardware", "runtime", "weights_dtype", "kv_cache_dtype")
SWEEP_KEYS = {*DEVICE_AXES, "variant", "mode", "page", "tiles", "batch", "new_tokens"}
OVERRIDE_KEYS = {"peak_tflops", "peak_fp8_tflops", "memory_tb_per_s", "memory_gb", "efficiency_scale"}
TARGET_KEYS = {"pages_per_day", "page_latency_s", "ttft_p99_s", "page_latency_p99_s"}
DEFAULT_PROFILE = "dsocr-standard-v1"  # the base workload when a scenario names none
# The runtime a scenario prices under when it names none: the shipped profile of the default execution (hf-eager).
DEFAULT_WHATIF_RUNTIME = execution_spec(DEFAULT_EXECUTION).shipped_runtime
MAX_SWEEP_POINTS = 10_000  # combinations of a sweep (each is a workload analyzed and priced)


class ScenarioError(RegistryError):
    pass


def _lines(node, path=(), out=None) -> dict[tuple, int]:
    """Line number (1-based) of every key path in a composed YAML document (a list item's path part: its index)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_path = path + (key.value,)
            out[key_path] = key.start_mark.line + 1
            _lines(value, key_path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[path + (index,)] = item.start_mark.line + 1
            _lines(item, path + (index,), out)
    return out


@attrs.frozen
class Scenario:
    name: str
    source: str
    data: dict[str, Any]
    lines: dict[tuple, int]
    # base.profile may name a profile file: a scenario file's may, a request's never (see ProfileSource)
    allow_profile_paths: bool = True
    folder: pathlib.Path | None = None  # the scenario file's folder: relative paths in it (serving.requests) start there

    def where(self, *path) -> str:
        for depth in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:depth]))
            if line is not None:
                return f"{self.source}:{line}"
        return self.source

    def fail(self, path: tuple, message: str) -> ScenarioError:
        """'SOURCE:LINE: key.path: message', the key path's control characters escaped."""
        return ScenarioError(f"{self.where(*path)}: {key_path(tuple(map(str, path)))}: {message}" if path
                             else f"{self.source}: {message}")


def load_scenario(path: str | pathlib.Path) -> Scenario:
    path = pathlib.Path(path)
    # read once, within the input limits; aliases are accepted (a sweep may repeat a list), their expanded size
    # capped
    try:
        text, data = read_document(path, "yaml", MAX_SMALL_FILE_BYTES, ScenarioError, aliases=True)
    except ScenarioError:
        _refuse_other_document(path, None)  # a report is larger than a scenario may be: name it for what it is
        raise
    _refuse_other_document(path, data)
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # its marks give key lines
    scenario = Scenario(name=path.stem, source=source_name(path), data=data if isinstance(data, dict) else {},
                        lines=_lines(node) if node is not None else {}, folder=path.parent)
    return _checked(scenario, data)


def _refuse_other_document(path: pathlib.Path, data: Any) -> None:
    """A file of another kind (a report, a measurement file, a profile) given as a scenario is named as such;
    `data` None: the file could not be read as a scenario, and its first bytes tell."""
    if data is None:
        if not path.is_file():  # a FIFO or a device is not read again (its refusal stands)
            return
        try:
            with open(path, "rb") as file:
                kind = document_kind_of_head(file.read(4096))
        except OSError:
            return
    else:
        kind = document_kind(data)
    if kind is not None and kind[0] != "a scenario":
        raise ScenarioError(f"{source_name(path)}: not a scenario: this is {kind[0]} (for {kind[1]}); a scenario "
                            "has name, base, sweep, target (see queries/examples/capacity.yaml)")


def scenario_from_mapping(data: Any, source: str, allow_profile_paths: bool = False) -> Scenario:
    """A scenario given as a mapping (an HTTP request body) rather than a file; errors name `source` and the key.
    Its base.profile is a shipped name or an inline profile mapping unless `allow_profile_paths`."""
    name = data.get("name") if isinstance(data, dict) else None
    scenario = Scenario(name=str(name or "scenario"), source=source, data=data if isinstance(data, dict) else {},
                        lines={}, allow_profile_paths=allow_profile_paths)
    return _checked(scenario, data)


def _checked(scenario: Scenario, data: Any) -> Scenario:
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
    if not isinstance(data.get("sweep"), dict):
        raise scenario.fail((), "missing key 'sweep' (at least hardware: [...])")
    for key, values in data["sweep"].items():
        if not isinstance(values, list):
            raise scenario.fail(("sweep", key), "must be a list")
        if not values:
            raise scenario.fail(("sweep", key), "is empty: list at least one value")
    if "hardware" not in data["sweep"]:
        raise scenario.fail(("sweep",), "missing key 'hardware'")
    points = math.prod(len(values) for values in data["sweep"].values())
    if points > MAX_SWEEP_POINTS:
        raise scenario.fail(("sweep",), f"{points:,} combinations exceed the limit of {MAX_SWEEP_POINTS:,}")
    name = data.get("name", scenario.name)
    return attrs.evolve(scenario, name=str(name))


def _check_keys(scenario: Scenario, path: tuple, mapping: dict, allowed: set[str]) -> None:
    for key in mapping:
        if key not in allowed:
            raise scenario.fail(path + (key,), f"unknown key{suggestion(key, allowed)}")


def expand_workloads(scenario: Scenario) -> list:
    """The workloads of the sweep (variant x mode x page x tiles x batch x new tokens), in file order."""
    from analyzer.workload import ProfileSource, Workload, load_profile, parse_page, parse_tiles

    base = dict(scenario.data.get("base") or {"profile": DEFAULT_PROFILE})
    profile = base.pop("profile", None)
    profile = None if profile is None else ProfileSource(profile, scenario.allow_profile_paths)
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
                missing = {key for key in ("variant", "mode") if overrides.get(key) is None}
                if missing:
                    raise scenario.fail(("base",), f"missing {', '.join(sorted(missing))} (or a profile)")
                workload = Workload(**overrides)  # the fields the scenario leaves out take Workload's defaults
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
    from registry.pricing.catalog import resolve_hardware, resolve_runtime

    def located(key: str, resolve, name):
        try:
            return resolve(conn, name)
        except RegistryError as exc:
            raise ScenarioError(f"{scenario.where('sweep', key)}: sweep.{key}: {exc}") from None

    sweep = scenario.data["sweep"]
    return ([located("hardware", resolve_hardware, name) for name in sweep["hardware"]],
            [located("runtime", resolve_runtime, name) for name in sweep.get("runtime", [DEFAULT_WHATIF_RUNTIME])])


def scenario_analyses(registry: Registry, scenario: Scenario) -> list[tuple]:
    """(workload, execution) of every report price_scenario prices: the service analyzes those not stored yet
    before it takes its writer."""
    from registry.pricing.catalog import runtime_execution

    workloads = expand_workloads(scenario)
    with registry.begin() as conn:
        _, runtimes = resolve_devices(scenario, conn)
        executions = list(dict.fromkeys(runtime_execution(conn, runtime_id) for runtime_id, _, _ in runtimes))
    return [(workload, execution) for execution in executions for workload in workloads]


def workload_axes_product(scenario: Scenario) -> int:
    """Workloads the sweep expands to at most (the product of its workload axes' lengths), counted without
    expanding anything."""
    sweep = scenario.data["sweep"]
    return math.prod(len(values) for key, values in sweep.items() if key not in DEVICE_AXES)


def check_precisions(scenario: Scenario, conn, hardware, runtimes, combos) -> None:
    """Every GPU x runtime x precision of the sweep can be priced (fp8: a paged-KV runtime, a GPU with an fp8 rate
    for fp8 weights), or one line names the sweep key."""
    from registry.pricing.points import check_fp8_device, runtime_devices

    fp8_peak = (scenario.data.get("overrides") or {}).get("peak_fp8_tflops")
    devices, profiles = runtime_devices(conn)
    for hardware_id, hardware_name in hardware:
        for runtime_id, _, _ in runtimes:
            for weights, kv_cache in combos:
                weights = weights or profiles[runtime_id][0]
                kv_cache = kv_cache or profiles[runtime_id][1]
                if "fp8" not in (weights, kv_cache):
                    continue
                try:
                    check_fp8_device(hardware_name, profiles[runtime_id][2:],
                                     fp8_peak * 1e12 if fp8_peak else devices[hardware_id][2], weights)
                except RegistryError as exc:
                    key = "weights_dtype" if "weights_dtype" in scenario.data["sweep"] else "runtime"
                    raise ScenarioError(f"{scenario.where('sweep', key)}: sweep.{key}: {exc}") from None


def precisions(scenario: Scenario) -> list[tuple[str | None, str | None]]:
    """(weights_dtype, kv_cache_dtype) of every precision the sweep prices in (None: the runtime's own), each
    name checked."""
    from registry.pricing.catalog import parse_dtype

    sweep = scenario.data["sweep"]
    axes = []
    for key in ("weights_dtype", "kv_cache_dtype"):
        values = sweep.get(key)
        if values is None:
            axes.append([None])
            continue
        axes.append([parse_dtype(value, f"{scenario.where('sweep', key)}: sweep.{key}") for value in values])
    return list(itertools.product(*axes))


# The physical range of each override and target (analyzer.ranges): an override stands for a GPU's catalog figure.
OVERRIDE_RANGES = {"peak_tflops": ranges.PEAK_TFLOPS, "peak_fp8_tflops": ranges.PEAK_TFLOPS,
                   "memory_tb_per_s": ranges.MEMORY_TB_PER_S,
                   "memory_gb": ranges.MEMORY_GB, "efficiency_scale": ranges.EFFICIENCY_SCALE}
TARGET_RANGES = {"pages_per_day": ranges.PAGES_PER_DAY, "page_latency_s": ranges.TARGET_LATENCY_S,
                 "ttft_p99_s": ranges.TARGET_LATENCY_S, "page_latency_p99_s": ranges.TARGET_LATENCY_S}


def _overrides(scenario: Scenario) -> dict[str, float | None]:
    """The overrides (None where the catalog's figure stands), each and every target checked against its
    physical range."""
    data = scenario.data.get("overrides") or {}
    out: dict[str, float | None] = {}
    for key in sorted(OVERRIDE_KEYS):
        value = data.get(key)
        if value is None:
            out[key] = None
            continue
        problem = OVERRIDE_RANGES[key].problem(value)
        if problem:
            raise scenario.fail(("overrides", key), problem)
        out[key] = float(value)
    target = scenario.data.get("target") or {}
    for key in sorted(TARGET_KEYS):
        value = target.get(key)
        problem = None if value is None else TARGET_RANGES[key].problem(value)
        if problem:
            raise scenario.fail(("target", key), problem)
    return out


@attrs.frozen
class PricedScenario:
    """A priced what-if: its scenario id, its priced points (v_point_summary_all rows, those that fit first),
    whether this run recorded it (False: the same run was recorded before, or the connection may only read), and
    what `then` read while the points existed."""

    scenario_id: int
    points: list[dict]
    recorded_now: bool
    then_result: object = None


def price_scenario(registry: Registry, scenario: Scenario, progress: bool = False, new_run: bool = False,
                   then=None, analyze=None) -> PricedScenario:
    """Analyze what is missing (each workload under the execution of every runtime it is priced under, with
    `analyze` if given: see ensure_reports), record the scenario and its points (workloads x GPUs x runtimes, each
    runtime paired with the report of its own execution), and read the priced points. `then(source, scenario id)`:
    more reading while the points exist, with a Registry or a connection as source.

    The same scenario file on the same registry reuses the scenario it recorded before, unless `new_run`. A
    registry this connection may only read prices the workloads it holds in temporary tables (nothing recorded;
    the id is then negative)."""
    from registry.pricing.catalog import runtime_execution
    from registry.pricing.points import SCRATCH_SCENARIO_ID, scratch_pricing
    from registry.store.analyzed import find_report

    overrides = _overrides(scenario)
    workloads = expand_workloads(scenario)
    # one connection for the steps that follow each other without pause (ensure_reports lets it go before it
    # analyzes anything): opening a DuckDB file is a good part of a what-if over stored reports
    combos = precisions(scenario)
    with registry.begin(keep_open=True) as conn:
        hardware, runtimes = resolve_devices(scenario, conn)
        executions = {runtime_id: runtime_execution(conn, runtime_id) for runtime_id, _, _ in runtimes}
        check_precisions(scenario, conn, hardware, runtimes, combos)  # before anything is analyzed
    read_only = registry.read_only()
    if read_only:
        with registry.begin() as conn:
            missing = sum(1 for execution in dict.fromkeys(executions.values()) for w in workloads
                          if find_report(conn, w, execution) is None)
        if missing:
            raise ScenarioError(f"{scenario.source}: {missing} workload(s) of the scenario are not in the registry, "
                                "which this connection may only read: run it once with a role that can write")
    report_keys = {execution: ensure_reports(registry, workloads, f"whatif:{scenario.name}", progress, execution,
                                             analyze)
                   for execution in dict.fromkeys(executions.values())}
    points = [PointKey(report_keys[executions[runtime_id]][index], hardware_id, runtime_id, weights, kv_cache)
              for index in range(len(workloads)) for hardware_id, _ in hardware for runtime_id, _, _ in runtimes
              for weights, kv_cache in combos]
    target = scenario.data.get("target") or {}
    then = then or (lambda source, scenario_id: None)
    record = ScenarioRecord(name=scenario.name, definition=scenario.data, target=target, overrides=overrides)
    if not read_only:
        with registry.begin(keep_open=True) as conn:
            recorded = record_scenario(conn, record, points, new_run=new_run)
        return PricedScenario(recorded.scenario_id, read_points(registry, recorded.scenario_id),
                              recorded.recorded_now, then(registry, recorded.scenario_id))
    with registry.begin() as conn:
        scenario_id = record_scenario(conn, record, points, lookup_only=True).scenario_id
    if scenario_id is not None:  # recorded before by a role that could write
        return PricedScenario(scenario_id, read_points(registry, scenario_id), False, then(registry, scenario_id))
    with scratch_pricing(registry) as conn:
        scenario_id = record_scenario(conn, record, points, scenario_id=SCRATCH_SCENARIO_ID).scenario_id
        return PricedScenario(scenario_id, read_points(conn, scenario_id), False, then(conn, scenario_id))
