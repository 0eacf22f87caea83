"""The hardware catalog and the runtime profiles: YAML files in registry/data, upserted into their tables on
every `db upgrade`; users add their own with `dsocr-registry hardware add` / `runtime add`."""

from __future__ import annotations

import datetime
import functools
import importlib.resources
import math
import pathlib
import re
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analyzer import ranges
from analyzer.categories import CategoryId
from analyzer.errors import AnalyzerInputError
from analyzer.execution import EXECUTION_SPECS, MEMORY_MODELS, ExecutionSpec, execution_names, execution_spec
from analyzer.fileio import MAX_SMALL_FILE_BYTES, load_document, one_of, parse_yaml, quote, quote_names, source_name
from registry.pricing.model import DEFAULT_DTYPE, DTYPES
from registry.store.db import RegistryError

HARDWARE_KEYS = {"name", "display_name", "dense_bf16_tflops", "dense_fp8_tflops", "memory_tb_per_s", "memory_gb",
                 "interconnect", "interconnect_gb_per_s", "source", "usd_per_hour", "example_usd_per_hour",
                 "example_price_source", "example_price_date"}
EXAMPLE_PRICE_KEYS = ("example_usd_per_hour", "example_price_source", "example_price_date")
# An fp8 tensor rate is 2x the bf16 one on every GPU of the catalog; past 2.5x it is a sparse figure or another GPU's.
FP8_OVER_BF16_MAX = 2.5
USER_PRICE = "user"


@attrs.frozen
class KnownGpu:
    """Datasheet facts of a GPU family: its dense and 2:4-sparse tensor rates (TFLOP/s), so that a catalog entry
    that names the GPU and gives the sparse figure (datasheets print it first, with an asterisk) is refused."""

    family: str
    pattern: str  # matched against the entry's name and display name, lowercased, words split at non-alphanumerics
    dense_bf16: float
    sparse_bf16: float
    dense_fp8: float | None = None
    sparse_fp8: float | None = None


KNOWN_GPUS = (
    KnownGpu("NVIDIA H100 SXM", r"\bh100\b(?!.*\b(pcie|nvl)\b)", 989, 1979, 1979, 3958),
    KnownGpu("NVIDIA H100 PCIe", r"\bh100\b.*\bpcie\b", 756, 1513, 1513, 3026),
    KnownGpu("NVIDIA H200", r"\bh200\b(?!.*\bnvl\b)", 989, 1979, 1979, 3958),
    KnownGpu("NVIDIA H20", r"\bh20\b", 148, 296, 296, 592),
    KnownGpu("NVIDIA B200", r"\bb200\b", 2250, 4500, 4500, 9000),
    KnownGpu("NVIDIA A100", r"\ba100\b", 312, 624),
    KnownGpu("NVIDIA A10", r"\ba10\b", 125, 250),
    KnownGpu("NVIDIA L4", r"\bl4\b", 121, 242, 242.5, 485),
    KnownGpu("NVIDIA L40", r"\bl40\b", 181.05, 362.1, 362, 724),
    KnownGpu("NVIDIA L40S", r"\bl40s\b", 362, 733, 733, 1466),
    KnownGpu("NVIDIA GeForce RTX 4090", r"\b4090\b", 165.2, 330.4, 330.3, 660.6),
    KnownGpu("NVIDIA GeForce RTX 5090", r"\b5090\b", 209.5, 419, 419, 838),
    KnownGpu("NVIDIA RTX PRO 6000 Blackwell", r"\bpro 6000\b", 503.8, 1007.6, 1007.6, 2015.2),
    KnownGpu("AMD Instinct MI300X", r"\bmi300x\b", 1307.4, 2614.9, 2614.9, 5229.8),
    KnownGpu("AMD Instinct MI325X", r"\bmi325x\b", 1307.4, 2614.9, 2614.9, 5229.8),
)


def known_gpus(*names: str) -> list[KnownGpu]:
    """The families of KNOWN_GPUS that any of `names` (a catalog name, a display name) names."""
    words = " ".join(re.sub(r"[^a-z0-9]+", " ", str(n).lower()) for n in names)
    return [gpu for gpu in KNOWN_GPUS if re.search(gpu.pattern, words)]


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.01)


def refuse_sparse(where: str, names: tuple[str, ...], key: str, tflops: float) -> None:
    """A dense rate (`key` dense_bf16_tflops or dense_fp8_tflops) that is the 2:4-sparse figure of the GPU the entry
    names is refused in one line naming the key and the dense figure."""
    for gpu in known_gpus(*names):
        dense, sparse = ((gpu.dense_bf16, gpu.sparse_bf16) if key == "dense_bf16_tflops"
                         else (gpu.dense_fp8, gpu.sparse_fp8))
        if sparse is not None and _same(tflops, sparse) and not _same(tflops, dense):
            raise RegistryError(f"{where}: {key}: {tflops:g} TFLOP/s is the 2:4-sparse figure of the {gpu.family}; "
                                f"its dense figure is {dense:g} (datasheets print the sparse one with an asterisk)")


@attrs.frozen
class Parameter:
    """A runtime parameter: its key in a runtime file (in the file's unit), its column (SI units) and physical
    range. Catalog files are checked against these ranges and `calibrate` fits within them."""

    key: str
    column: str
    scale: float  # file unit -> SI unit
    low: float
    high: float
    low_open: bool = False  # the range excludes `low`

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


EFFICIENCY = Parameter("efficiency", "efficiency", 1.0, 0.05, 1.0, low_open=True)
RUNTIME_PARAMETERS = {p.key: p for p in (
    Parameter("kernel_launch_us", "kernel_launch_s", 1e-6, 0.5, 30.0),
    Parameter("aten_call_us", "aten_call_s", 1e-6, 0.5, 30.0),
    Parameter("module_call_us", "module_call_s", 1e-6, 0.0, 50.0),
    Parameter("graph_kernel_us", "graph_kernel_s", 1e-6, 0.2, 10.0),
    Parameter("stage_call_overhead_ms", "stage_call_overhead_s", 1e-3, 0.0, 100.0),
    Parameter("decode_step_overhead_ms", "decode_step_overhead_s", 1e-3, 0.0, 100.0),
    Parameter("gpu_memory_utilization", "gpu_memory_utilization", 1.0, 0.0, 1.0, low_open=True),
    Parameter("max_num_batched_tokens", "max_num_batched_tokens", 1.0, ranges.MAX_NUM_BATCHED_TOKENS.low,
              ranges.MAX_NUM_BATCHED_TOKENS.high),
)}
PARAMETER_OF_COLUMN = {p.column: p for p in RUNTIME_PARAMETERS.values()}
# Keys only the runtimes of some memory model take (paged-kv: gpu_memory_utilization, max_num_batched_tokens).
MEMORY_MODEL_KEYS = {key for model in MEMORY_MODELS.values() for key in model.profile_keys}
RUNTIME_KEYS = {"name", "version", "execution", "description", "source", "cuda_graph_decode", "categories",
                "weights_dtype", "kv_cache_dtype", "fp8_compute_efficiency", "calibrated_on", *RUNTIME_PARAMETERS}
RUNTIME_REQUIRED = {"name", "version", "execution", "kernel_launch_us", "aten_call_us", "module_call_us",
                    "stage_call_overhead_ms", "decode_step_overhead_ms", "categories"}
CATEGORY_KEYS = {"compute_efficiency", "bandwidth_efficiency"}
# Keys of the multiplier profiles before revision 0006: fused kernels are now traced by the analyzer (vllm).
LEGACY_KEYS = {"fused_bytes_factor", "fused"}
LEGACY_HINT = ("no longer a runtime parameter: fused kernels are traced by the analyzer (execution vllm); "
               "remove it")


def read_catalog_file(path: str | pathlib.Path) -> Any:
    """The YAML document of a catalog file (hardware or runtime profiles), within the input limits; aliases are
    accepted (runtimes may share category settings), their expanded size capped."""
    return load_document(path, "yaml", MAX_SMALL_FILE_BYTES, RegistryError, aliases=True)


def _number(label: str, key: str, value: Any, low: float, high: float | None = None, low_open: bool = False
            ) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e11 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegistryError(f"{label}: {key} must be a number, got {quote(value)}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        if high is None:
            bound = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            bound = f"in ({low:g}, {high:g}]" if low_open else f"between {low:g} and {high:g}"
        raise RegistryError(f"{label}: {key} must be {bound}, got {quote(value)}")
    return float(value)


def _ranged(label: str, key: str, value: Any, bounds: ranges.Range) -> float:
    return _number(label, key, value, bounds.low, bounds.high, bounds.low_open)


def _entries(data: Any, label: str) -> list[dict]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise RegistryError(f"{label}: expected a list of mappings")
    return data


def _checked(entry: dict, label: str, kind: str, keys: set[str], required: set[str]) -> tuple[str, str]:
    """(name, where-prefix for messages) of a catalog entry whose keys are known and complete."""
    name = entry.get("name")
    where = f"{label}: {kind} {quote(name, 40)}" if name else label
    unknown = set(entry) - keys
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {quote_names(unknown)}")
    missing = required - set(entry)
    if missing:
        raise RegistryError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"{label}: name must be a non-empty string")
    return name, where


def parse_price(value: Any, where: str, key: str = "usd_per_hour") -> float:
    """A price for one GPU-hour in USD: a finite number in (0, 10,000]; anything else (text, NaN, inf, zero, a
    negative) is refused in one line naming `where` (the file and entry, or the command) and `key`."""
    bounds = ranges.USD_PER_HOUR
    return _number(where, key, value, bounds.low, bounds.high, bounds.low_open)


def _price_date(where: str, value: Any) -> str:
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return datetime.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise RegistryError(f"{where}: example_price_date: must be a date YYYY-MM-DD, got {quote(value)}")


def _text(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{where}: {key}: must be non-empty text, got {quote(value)}")
    return value.strip()


def parse_hardware(data: Any, label: str) -> list[dict[str, Any]]:
    """GPUs of a catalog file, checked whole: known keys, every figure positive and in its physical range, no
    2:4-sparse figure of a known GPU, an fp8 rate between 1x and 2.5x the bf16 one, a dated example price with its
    source or the user's own (usd_per_hour)."""
    rows = []
    for entry in _entries(data, label):
        name, where = _checked(entry, label, "hardware", HARDWARE_KEYS,
                               {"name", "dense_bf16_tflops", "memory_tb_per_s", "memory_gb"})
        names = (name, str(entry.get("display_name", name)))
        # the physical ranges of analyzer.ranges: far beyond any one accelerator, so that a unit slip (bytes for
        # GB) is caught here
        bf16 = _ranged(where, "dense_bf16_tflops", entry["dense_bf16_tflops"], ranges.PEAK_TFLOPS)
        refuse_sparse(where, names, "dense_bf16_tflops", bf16)
        fp8 = None
        if entry.get("dense_fp8_tflops") is not None:
            fp8 = _ranged(where, "dense_fp8_tflops", entry["dense_fp8_tflops"], ranges.PEAK_TFLOPS)
            refuse_sparse(where, names, "dense_fp8_tflops", fp8)
            if fp8 < bf16 or fp8 > FP8_OVER_BF16_MAX * bf16:
                raise RegistryError(
                    f"{where}: dense_fp8_tflops: {fp8:g} TFLOP/s must be between the dense bf16 rate ({bf16:g}) and "
                    f"{FP8_OVER_BF16_MAX:g}x it ({FP8_OVER_BF16_MAX * bf16:g}): a sparse figure, or another GPU's?")
        link = entry.get("interconnect_gb_per_s")
        link = None if link is None else _ranged(where, "interconnect_gb_per_s", link, ranges.INTERCONNECT_GB_PER_S)
        interconnect = entry.get("interconnect")
        interconnect = None if interconnect is None else _text(where, "interconnect", interconnect)
        if "source" in entry:
            _text(where, "source", entry["source"])
        usd, price_source = _entry_price(where, entry)
        rows.append(dict(
            name=name.strip().lower(), display_name=str(entry.get("display_name", name)),
            peak_bf16_flops_per_s=bf16 * 1e12,
            peak_fp8_flops_per_s=None if fp8 is None else fp8 * 1e12,
            memory_bandwidth_bytes_per_s=_ranged(where, "memory_tb_per_s", entry["memory_tb_per_s"],
                                                 ranges.MEMORY_TB_PER_S) * 1e12,
            memory_bytes=int(_ranged(where, "memory_gb", entry["memory_gb"], ranges.MEMORY_GB) * 1e9),
            interconnect=interconnect, interconnect_bytes_per_s=None if link is None else link * 1e9,
            source=str(entry.get("source", "")), usd_per_hour=usd, price_source=price_source))
        _fits(where, "hardware", rows[-1])
    return rows


def _entry_price(where: str, entry: dict) -> tuple[float | None, str | None]:
    """(USD per GPU-hour, price_source) of a catalog entry: the user's own `usd_per_hour` ("user"), else the dated
    example ("example: SOURCE, DATE"), else none."""
    given = [key for key in EXAMPLE_PRICE_KEYS if entry.get(key) is not None]
    if given and len(given) < len(EXAMPLE_PRICE_KEYS):
        missing = [key for key in EXAMPLE_PRICE_KEYS if key not in given]
        raise RegistryError(f"{where}: {missing[0]}: missing (an example price needs example_usd_per_hour, "
                            f"example_price_source and example_price_date)")
    example = None
    if given:
        usd = parse_price(entry["example_usd_per_hour"], where, "example_usd_per_hour")
        source = _text(where, "example_price_source", entry["example_price_source"])
        example = (usd, f"example: {source}, {_price_date(where, entry['example_price_date'])}")
    if entry.get("usd_per_hour") is not None:
        return parse_price(entry["usd_per_hour"], where), USER_PRICE
    return example if example else (None, None)


def _fits(where: str, table: str, row: dict[str, Any]) -> None:
    """A catalog row whose values its columns hold (string lengths, integer ranges), else one line naming it."""
    from registry.store.models import ColumnValueError, check_row

    try:
        check_row(table, row)
    except ColumnValueError as exc:
        what = f"{len(exc.value):,} characters" if isinstance(exc.value, str) else quote(exc.value, 40)
        raise RegistryError(f"{where}: {exc.column}: {what}; the registry holds {exc.limit}") from None


def _parameter(where: str, entry: dict, key: str) -> float:
    p = RUNTIME_PARAMETERS[key]
    return _number(where, key, entry[key], p.low, p.high, p.low_open) * p.scale


def parse_runtimes(data: Any, label: str) -> list[dict[str, Any]]:
    """Runtime profiles of a catalog file, checked whole: keys, execution, physical ranges, every category."""
    profiles = []
    for entry in _entries(data, label):
        name = entry.get("name")
        where = f"{label}: runtime {quote(name, 40)}" if name else label
        legacy = sorted(LEGACY_KEYS & set(entry))
        if legacy:
            raise RegistryError(f"{where}: {legacy[0]}: {LEGACY_HINT}")
        categories = entry.get("categories")
        if isinstance(categories, dict):
            for category, values in categories.items():
                if isinstance(values, dict) and LEGACY_KEYS & set(values):
                    key = sorted(LEGACY_KEYS & set(values))[0]
                    raise RegistryError(f"{where}: categories.{category}.{key}: {LEGACY_HINT}")
        name, where = _checked(entry, label, "runtime", RUNTIME_KEYS, RUNTIME_REQUIRED)
        try:
            execution = execution_spec(entry["execution"])
        except AnalyzerInputError:
            raise RegistryError(f"{where}: execution: unknown execution {quote(entry['execution'])}; expected one of: "
                                f"{', '.join(execution_names())}") from None
        version = entry["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistryError(f"{where}: version: must be an integer >= 1, got {quote(version)}")
        graph = entry.get("cuda_graph_decode", execution.cuda_graph_decode)
        if not isinstance(graph, bool):
            raise RegistryError(f"{where}: cuda_graph_decode: must be true or false, got {quote(graph)}")
        if graph and "graph_kernel_us" not in entry:
            raise RegistryError(f"{where}: graph_kernel_us: missing (device time per kernel of a CUDA-graph "
                                f"replay; needed with cuda_graph_decode: true)")
        if not graph and "graph_kernel_us" in entry:
            raise RegistryError(f"{where}: graph_kernel_us: only with cuda_graph_decode: true")
        for key in sorted(MEMORY_MODEL_KEYS):
            if key in execution.memory.profile_keys and key not in entry:
                raise RegistryError(f"{where}: {key}: missing (the {execution.name} memory model needs it)")
            if key not in execution.memory.profile_keys and key in entry:
                takers = one_of(e.name for e in EXECUTION_SPECS.values() if key in e.memory.profile_keys)
                raise RegistryError(f"{where}: {key}: only for execution {takers}")
        if not isinstance(categories, dict):
            raise RegistryError(f"{where}: categories: must be a mapping")
        names = {c.value for c in CategoryId}
        if set(categories) != names:
            extra, absent = set(categories) - names, names - set(categories)
            detail = (f"unknown {', '.join(sorted(extra))}" if extra else f"missing {', '.join(sorted(absent))}")
            raise RegistryError(f"{where}: categories: {detail}")
        rows = {}
        for category in (c.value for c in CategoryId):
            values = categories[category]
            if not isinstance(values, dict) or set(values) != CATEGORY_KEYS:
                raise RegistryError(f"{where}: categories.{category}: expected compute_efficiency and "
                                    f"bandwidth_efficiency")
            rows[category] = {key: _number(where, f"categories.{category}.{key}", values[key], EFFICIENCY.low,
                                           EFFICIENCY.high, EFFICIENCY.low_open) for key in sorted(CATEGORY_KEYS)}
        precision = {key: parse_dtype(entry.get(key, DEFAULT_DTYPE), f"{where}: {key}")
                     for key in ("weights_dtype", "kv_cache_dtype")}
        if DEFAULT_DTYPE != precision["weights_dtype"] or DEFAULT_DTYPE != precision["kv_cache_dtype"]:
            check_precision_execution(execution, where)
        # an fp8 matmul reaches, unless the profile says otherwise, the fraction of the fp8 rate that a bf16 matmul
        # reaches of its own (an assumption, not a measurement)
        fp8_efficiency = _number(where, "fp8_compute_efficiency",
                                 entry.get("fp8_compute_efficiency", rows["matmul"]["compute_efficiency"]),
                                 EFFICIENCY.low, EFFICIENCY.high, EFFICIENCY.low_open)
        calibrated_on = entry.get("calibrated_on")
        if calibrated_on is not None and (not isinstance(calibrated_on, str) or not calibrated_on.strip()):
            raise RegistryError(f"{where}: calibrated_on: must be the name of the GPU the profile was fitted on, "
                                f"got {quote(calibrated_on)}")
        profile = dict(name=str(name).strip().lower(), version=version, execution=execution.name,
                       description=str(entry.get("description", "")), source=str(entry.get("source", "")),
                       cuda_graph_decode=graph, graph_kernel_s=None, gpu_memory_utilization=None,
                       max_num_batched_tokens=None, **precision, fp8_compute_efficiency=fp8_efficiency,
                       calibrated_on=None if calibrated_on is None else calibrated_on.strip().lower())
        for key in RUNTIME_PARAMETERS:
            if key in entry:
                profile[RUNTIME_PARAMETERS[key].column] = _parameter(where, entry, key)
        if profile["max_num_batched_tokens"] is not None:
            tokens = profile["max_num_batched_tokens"]
            if tokens != int(tokens):
                raise RegistryError(f"{where}: max_num_batched_tokens: must be an integer, got {quote(tokens)}")
            profile["max_num_batched_tokens"] = int(tokens)
        _fits(where, "runtime_profiles", profile)
        profile["categories"] = rows
        profiles.append(profile)
    return profiles


def parse_dtype(value: Any, where: str) -> str:
    """A precision a deployment serves in (bf16 or fp8); anything else is refused in one line naming `where`."""
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in DTYPES:
        raise RegistryError(f"{where}: unknown dtype {quote(value)}; expected one of: {', '.join(DTYPES)}")
    return name


def check_precision_execution(execution: ExecutionSpec, where: str) -> None:
    """fp8 weights and an fp8 KV cache are priced for the paged-KV executions (the serving engines that run FP8
    GEMMs and an FP8 cache); a report traced otherwise runs in bf16."""
    if execution.memory_model != "paged-kv":
        takers = one_of(e.name for e in EXECUTION_SPECS.values() if e.memory_model == "paged-kv")
        raise RegistryError(f"{where}: fp8 is priced for the {takers} execution (FP8 GEMMs, an FP8 paged KV "
                            f"cache); {execution.name} runs in bf16")


def shipped(name: str) -> str:
    return importlib.resources.files("registry.data").joinpath(name).read_text("utf-8")


HARDWARE_COLUMNS_STORED = ("name", "display_name", "peak_bf16_flops_per_s", "peak_fp8_flops_per_s",
                           "memory_bandwidth_bytes_per_s", "memory_bytes", "interconnect", "interconnect_bytes_per_s",
                           "source", "origin")


def upsert_hardware(conn: Connection, row: dict[str, Any], origin: str) -> None:
    """Insert or update one GPU (by name). Its price: a shipped row's example replaces any price but the user's own
    (price_source 'user', which upgrades keep); a user's row sets the price it gives and keeps the one it omits."""
    values = {k: row.get(k) for k in HARDWARE_COLUMNS_STORED}
    values["origin"] = origin
    found = conn.execute(sa.text("SELECT id FROM hardware WHERE name = :name"), {"name": row["name"]}).scalar()
    if found is None:
        found = conn.execute(sa.text(
            f"INSERT INTO hardware ({', '.join(HARDWARE_COLUMNS_STORED)}) VALUES "
            f"({', '.join(':' + c for c in HARDWARE_COLUMNS_STORED)}) RETURNING id"), values).scalar_one()
    else:
        assignments = ", ".join(f"{c} = :{c}" for c in HARDWARE_COLUMNS_STORED if c != "name")
        conn.execute(sa.text(f"UPDATE hardware SET {assignments} WHERE id = :id"), dict(values, id=found))
    price = {"usd": row.get("usd_per_hour"), "source": row.get("price_source"), "id": found, "user": USER_PRICE}
    if origin == "shipped":
        conn.execute(sa.text(
            "UPDATE hardware SET usd_per_hour = :usd, price_source = :source WHERE id = :id "
            "AND (price_source IS NULL OR price_source <> :user)"), price)
    elif price["usd"] is not None:
        conn.execute(sa.text("UPDATE hardware SET usd_per_hour = :usd, price_source = :source WHERE id = :id"), price)


def shipped_hardware() -> dict[str, dict[str, Any]]:
    """name -> row of every GPU in the shipped hardware.yaml."""
    rows = parse_hardware(parse_yaml(shipped("hardware.yaml"), "hardware.yaml", RegistryError), "hardware.yaml")
    return {row["name"]: row for row in rows}


def set_hardware_price(conn: Connection, name: str, usd: float | None) -> dict[str, Any]:
    """Set a GPU's price per GPU-hour as the user's own (price_source 'user', kept over upgrades), or with `usd`
    None go back to the shipped catalog's example (or none). An unknown name is refused with the closest one.
    Returns the GPU's name, usd_per_hour and price_source as stored."""
    hardware_id, key = resolve_hardware(conn, name)
    if usd is None:
        example = shipped_hardware().get(key, {})
        usd, source = example.get("usd_per_hour"), example.get("price_source")
    else:
        usd, source = parse_price(usd, f"hardware price {key}", "USD"), USER_PRICE
    conn.execute(sa.text("UPDATE hardware SET usd_per_hour = :usd, price_source = :source WHERE id = :id"),
                 {"usd": usd, "source": source, "id": hardware_id})
    return {"name": key, "usd_per_hour": usd, "price_source": source}


def require_fp8(conn: Connection, hardware_id: int) -> float:
    """The GPU's dense fp8 tensor rate in FLOP/s; a GPU without one (the catalog gives none) is refused in one line,
    for an fp8 point to be priced in bf16 instead."""
    found = conn.execute(sa.text("SELECT name, peak_fp8_flops_per_s FROM hardware WHERE id = :i"),
                         {"i": hardware_id}).first()
    if found is None:
        raise RegistryError(f"no hardware with id {hardware_id}")
    name, fp8 = found
    if fp8 is None:
        raise RegistryError(f"GPU {name} has no fp8 tensor rate in the catalog: price it in bf16")
    return float(fp8)


RUNTIME_COLUMNS_STORED = ("name", "version", "execution", "description", "source", "kernel_launch_s", "aten_call_s",
                          "module_call_s", "stage_call_overhead_s", "decode_step_overhead_s", "cuda_graph_decode",
                          "graph_kernel_s", "gpu_memory_utilization", "max_num_batched_tokens",
                          "weights_dtype", "kv_cache_dtype", "fp8_compute_efficiency", "calibrated_on",
                          "fused_bytes_factor", "origin")


def upsert_runtime(conn: Connection, profile: dict[str, Any], origin: str) -> int:
    """Insert or update one profile (by name and version) and its per-category rows; returns its id. The legacy
    columns fused_bytes_factor and fused, which no view reads since revision 0006, are written as 1.0 and false."""
    category_ids = dict(conn.execute(sa.text("SELECT name, id FROM operator_categories")).all())
    values = {k: v for k, v in profile.items() if k != "categories"}
    values.update(origin=origin, fused_bytes_factor=1.0)
    values = {k: values.get(k) for k in RUNTIME_COLUMNS_STORED}
    found = conn.execute(sa.text("SELECT id FROM runtime_profiles WHERE name = :name AND version = :version"),
                         values).scalar()
    if found is None:
        found = conn.execute(sa.text(
            f"INSERT INTO runtime_profiles ({', '.join(RUNTIME_COLUMNS_STORED)}) VALUES "
            f"({', '.join(':' + c for c in RUNTIME_COLUMNS_STORED)}) RETURNING id"), values).scalar_one()
    else:
        assignments = ", ".join(f"{c} = :{c}" for c in RUNTIME_COLUMNS_STORED if c not in ("name", "version"))
        conn.execute(sa.text(f"UPDATE runtime_profiles SET {assignments} WHERE id = :id"), dict(values, id=found))
        conn.execute(sa.text("DELETE FROM runtime_profile_categories WHERE runtime_profile_id = :id"), {"id": found})
    for category, row in profile["categories"].items():
        conn.execute(sa.text(
            "INSERT INTO runtime_profile_categories (runtime_profile_id, category_id, compute_efficiency, "
            "bandwidth_efficiency, fused) VALUES (:p, :c, :ce, :be, :fused)"),
            {"p": found, "c": category_ids[category], "ce": row["compute_efficiency"],
             "be": row["bandwidth_efficiency"], "fused": False})
    return int(found)


def suggestion(word: str, options) -> str:
    """' (did you mean X?)' for the closest of `options`, or nothing. Names that start with the word come first
    (h100 -> h100-sxm), then names that contain it (4090 -> rtx-4090), then the closest spelling."""
    import difflib

    word, options = word.strip().lower(), sorted(options)
    close = [o for o in options if o.startswith(word)] or [o for o in options if word in o] if word else []
    if not close:
        close = difflib.get_close_matches(word, options, n=1)
    if not close:
        return ""
    return f" (did you mean {' or '.join(quote(o) for o in close[:3])}?)"


def resolve_hardware(conn: Connection, name: str) -> tuple[int, str]:
    """(id, catalog name) of a GPU; an unknown name gets the closest one and the list."""
    known = dict(conn.execute(sa.text("SELECT name, id FROM hardware")).all())
    key = str(name).strip().lower()
    if key not in known:
        raise RegistryError(f"unknown hardware {quote(name)}{suggestion(key, known)}; "
                            f"known: {', '.join(sorted(known))}")
    return int(known[key]), key


@functools.cache
def shipped_runtime_versions() -> dict[str, int]:
    """name -> version of every profile in the shipped runtimes.yaml: what a plain NAME means for those names."""
    profiles = parse_runtimes(parse_yaml(shipped("runtimes.yaml"), "runtimes.yaml", RegistryError), "runtimes.yaml")
    return {p["name"]: p["version"] for p in profiles}


def plain_versions(versions_by_name: dict[str, set[int]]) -> dict[str, int]:
    """The version a plain NAME means: the shipped version for the names of registry/data/runtimes.yaml, otherwise
    the name's first (lowest) version. `calibrate` and `runtime add` store other versions, which are reached only
    as NAME@VERSION: a plain name never moves to whatever was written last."""
    shipped_versions = shipped_runtime_versions()
    plain = {}
    for name, versions in versions_by_name.items():
        pinned = shipped_versions.get(name)
        plain[name] = pinned if pinned in versions else min(versions)
    return plain


def resolve_runtime(conn: Connection, name: str) -> tuple[int, str, int]:
    """(id, name, version) of a runtime profile given as NAME (its pinned version: see `plain_versions`) or
    NAME@VERSION."""
    key, at, version = str(name).strip().lower().partition("@")
    profiles: dict[str, dict[int, int]] = {}
    for pid, pname, pversion in conn.execute(sa.text("SELECT id, name, version FROM runtime_profiles")).all():
        profiles.setdefault(pname, {})[int(pversion)] = int(pid)
    if key not in profiles:
        raise RegistryError(f"unknown runtime {quote(name)}{suggestion(key, profiles)}; "
                            f"known: {', '.join(sorted(profiles))}")
    versions = profiles[key]
    if at and (not version.isdigit() or int(version) not in versions):
        raise RegistryError(f"runtime {key} has no version {quote(version)}; "
                            f"known: {', '.join(f'{key}@{v}' for v in sorted(versions))}")
    chosen = int(version) if at else plain_versions({key: set(versions)})[key]
    return versions[chosen], key, chosen


def runtime_label(name: str, version: int) -> str:
    return f"{name}@{version}"


def runtime_execution(conn: Connection, runtime_id: int) -> str:
    """The execution a stored profile prices; a name this version does not know is refused in one line."""
    name = conn.execute(sa.text("SELECT execution FROM runtime_profiles WHERE id = :i"),
                        {"i": runtime_id}).scalar_one()
    return known_execution(name, f"runtime profile {runtime_id}").name


def known_execution(name: str, what: str) -> ExecutionSpec:
    """The entry of an execution read from the registry: an unknown name is a RegistryError naming `what`."""
    try:
        return execution_spec(name)
    except AnalyzerInputError as exc:
        raise RegistryError(f"{what}: {exc}") from None


def has_table(conn: Connection, name: str) -> bool:
    return bool(conn.execute(sa.text(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = :n AND table_schema = current_schema()"),
        {"n": name}).scalar())


def seed_catalogs(conn: Connection) -> None:
    """Upsert the shipped hardware and runtime profiles (rows users added keep their values)."""
    if not has_table(conn, "hardware"):
        return
    for row in parse_hardware(parse_yaml(shipped("hardware.yaml"), "hardware.yaml", RegistryError), "hardware.yaml"):
        upsert_hardware(conn, row, "shipped")
    for profile in parse_runtimes(parse_yaml(shipped("runtimes.yaml"), "runtimes.yaml", RegistryError),
                                  "runtimes.yaml"):
        upsert_runtime(conn, profile, "shipped")
    if has_table(conn, "serving_profiles"):
        from registry.serving.profiles import seed_serving_profiles

        seed_serving_profiles(conn)


# -- reading the catalogs back -------------------------------------------------------------------------------------

HARDWARE_COLUMNS = ["name", "display_name", "bf16_tflops", "fp8_tflops", "memory_tb_per_s", "memory_gb",
                    "interconnect", "usd_per_hour", "price_source", "origin"]
RUNTIME_COLUMNS = ["runtime", "plain", "execution", "launch_us", "aten_call_us", "module_call_us", "graph_kernel_us",
                   "call_overhead_ms", "decode_step_ms", "gpu_mem_util", "max_batched_tokens", "origin"]
RUNTIME_CATEGORY_COLUMNS = ["category", "compute_efficiency", "bandwidth_efficiency"]


def list_hardware(conn: Connection) -> list[tuple]:
    """The GPUs, in decimal display units (TFLOP/s, TB/s, GB), with their interconnect and price per GPU-hour and
    its source ('example: ...' or 'user'), by name; no fp8 rate or no price is None."""
    return [tuple(r) for r in conn.execute(sa.text(
        "SELECT name, display_name, peak_bf16_flops_per_s / 1e12, peak_fp8_flops_per_s / 1e12, "
        "memory_bandwidth_bytes_per_s / 1e12, memory_bytes / 1e9, interconnect, usd_per_hour, price_source, origin "
        "FROM hardware ORDER BY name")).all()]


def hardware_details(conn: Connection, name: str) -> dict[str, Any]:
    hardware_id, _ = resolve_hardware(conn, name)
    return dict(conn.execute(sa.text(
        "SELECT name, display_name, peak_bf16_flops_per_s, peak_fp8_flops_per_s, memory_bandwidth_bytes_per_s, "
        "memory_bytes, interconnect, interconnect_bytes_per_s, usd_per_hour, price_source, source, origin "
        "FROM hardware WHERE id = :i"), {"i": hardware_id}).mappings().one())


def list_runtimes(conn: Connection) -> list[tuple]:
    """The runtime profiles as NAME@VERSION, whether a plain NAME means that version, the execution and the
    parameters in display units (µs per launch, aten call, module call and graph kernel; ms per stage call and
    decode step), by name and version."""
    found = conn.execute(sa.text(
        "SELECT name, version, execution, kernel_launch_s * 1e6, "
        "aten_call_s * 1e6, module_call_s * 1e6, "
        "CASE WHEN cuda_graph_decode THEN graph_kernel_s * 1e6 END, stage_call_overhead_s * 1e3, "
        "decode_step_overhead_s * 1e3, gpu_memory_utilization, max_num_batched_tokens, origin "
        "FROM runtime_profiles ORDER BY name, version")).all()
    versions: dict[str, set[int]] = {}
    for row in found:
        versions.setdefault(row[0], set()).add(int(row[1]))
    plain = plain_versions(versions)
    return [(runtime_label(name, version), plain[name] == int(version), *rest)
            for name, version, *rest in found]


def runtime_details(conn: Connection, name: str) -> tuple[dict[str, Any], list[tuple]]:
    """A runtime profile (NAME or NAME@VERSION), its parameters in SI units, and its per-category rows."""
    runtime_id, _, _ = resolve_runtime(conn, name)
    profile = dict(conn.execute(sa.text(
        "SELECT id, name, version, execution, description, source, "
        "kernel_launch_s, aten_call_s, module_call_s, "
        "cuda_graph_decode, graph_kernel_s, stage_call_overhead_s, "
        "decode_step_overhead_s, gpu_memory_utilization, max_num_batched_tokens, origin, weights_dtype, "
        "kv_cache_dtype, fp8_compute_efficiency, calibrated_on "
        "FROM runtime_profiles WHERE id = :i"), {"i": runtime_id}).mappings().one())
    categories = [tuple(r) for r in conn.execute(sa.text(
        "SELECT c.name, rc.compute_efficiency, rc.bandwidth_efficiency FROM runtime_profile_categories rc "
        "JOIN operator_categories c ON c.id = rc.category_id WHERE rc.runtime_profile_id = :p ORDER BY c.id"),
        {"p": runtime_id}).all()]
    return profile, categories


def next_runtime_version(conn: Connection, name: str) -> int:
    return 1 + int(conn.execute(sa.text("SELECT COALESCE(MAX(version), 0) FROM runtime_profiles WHERE name = :n"),
                                {"n": name}).scalar() or 0)


def add_catalog_file(registry, path: str | pathlib.Path, kind: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries of a hardware or runtime catalog file, validated whole, then upserted in one transaction as the
    user's own; returns (entries written, shipped entries the file repeats unchanged, which stay shipped)."""
    parse, upsert = {"hardware": (parse_hardware, upsert_hardware), "runtime": (parse_runtimes, upsert_runtime)}[kind]
    entries = parse(read_catalog_file(path), source_name(path))
    shipped_entries = {_catalog_key(kind, e): e for e in parse(parse_yaml(
        shipped(f"{kind}.yaml" if kind == "hardware" else "runtimes.yaml"), kind, RegistryError), kind)}
    for entry in entries:
        _refuse_shipped_edit(kind, entry, shipped_entries, path)
    written = [e for e in entries if _catalog_key(kind, e) not in shipped_entries]  # a shipped entry as is stays
    with registry.begin() as conn:
        for entry in written:
            upsert(conn, entry, "user")
    return written, [_catalog_key(kind, e) for e in entries if e not in written]


def _catalog_key(kind: str, entry: dict[str, Any]) -> str:
    return entry["name"] if kind == "hardware" else runtime_label(entry["name"], entry["version"])


def _refuse_shipped_edit(kind: str, entry: dict[str, Any], shipped_entries: dict[str, dict], path) -> None:
    """A shipped GPU or runtime version means the same figures in every registry, and `db upgrade` restores them:
    an entry that changes one is refused, naming what to do instead."""
    key = _catalog_key(kind, entry)
    if key not in shipped_entries or shipped_entries[key] == entry:
        return
    if kind == "hardware":
        unpriced = {k: v for k, v in entry.items() if k not in ("usd_per_hour", "price_source")}
        if unpriced == {k: v for k, v in shipped_entries[key].items() if k not in ("usd_per_hour", "price_source")}:
            raise RegistryError(f"{source_name(path)}: {key}: usd_per_hour: {key} is a shipped GPU; set your price "
                                f"with `dsocr-registry hardware price {key} USD` (kept over upgrades)")
        raise RegistryError(f"{source_name(path)}: {key} is a shipped GPU, kept at its datasheet figures (db upgrade "
                            f"restores them); add yours under a new name, e.g. {key}-custom")
    raise RegistryError(f"{source_name(path)}: {key} is a shipped runtime profile (db upgrade restores it); add "
                        f"yours as another version of {entry['name']} or under a new name")
