"""The hardware catalog and the runtime profiles: YAML files in registry/data, upserted into their tables on
every `db upgrade`; users add their own with `dsocr-registry hardware add` / `runtime add`."""

from __future__ import annotations

import importlib.resources
import math
import pathlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analyzer.categories import CategoryId
from analyzer.fileio import parse_yaml
from registry.db import RegistryError

HARDWARE_KEYS = {"name", "display_name", "dense_bf16_tflops", "memory_tb_per_s", "memory_gb", "source"}
RUNTIME_KEYS = {"name", "version", "description", "source", "kernel_launch_us", "stage_call_overhead_ms",
                "decode_step_overhead_ms", "fused_bytes_factor", "categories"}
CATEGORY_KEYS = {"compute_efficiency", "bandwidth_efficiency", "fused"}


def read_catalog_file(path: str | pathlib.Path) -> Any:
    """The YAML document of a catalog file (hardware or runtime profiles)."""
    try:
        text = pathlib.Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_yaml(text, str(path), RegistryError)


def _number(label: str, key: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e11 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegistryError(f"{label}: {key} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise RegistryError(f"{label}: {key} must be {bound}, got {value!r}")
    return float(value)


def _entries(data: Any, label: str) -> list[dict]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise RegistryError(f"{label}: expected a list of mappings")
    return data


def _checked(entry: dict, label: str, kind: str, keys: set[str], required: set[str]) -> tuple[str, str]:
    """(name, where-prefix for messages) of a catalog entry whose keys are known and complete."""
    name = entry.get("name")
    where = f"{label}: {kind} {name!r}" if name else label
    unknown = set(entry) - keys
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = required - set(entry)
    if missing:
        raise RegistryError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"{label}: name must be a non-empty string")
    return name, where


def parse_hardware(data: Any, label: str) -> list[dict[str, Any]]:
    rows = []
    for entry in _entries(data, label):
        name, where = _checked(entry, label, "hardware", HARDWARE_KEYS,
                               {"name", "dense_bf16_tflops", "memory_tb_per_s", "memory_gb"})
        rows.append(dict(
            name=name.strip().lower(), display_name=str(entry.get("display_name", name)),
            # upper bounds far beyond any one accelerator, so that a unit slip (bytes for GB) is caught here
            peak_bf16_flops_per_s=_number(where, "dense_bf16_tflops", entry["dense_bf16_tflops"], 1e-3, 1e6) * 1e12,
            memory_bandwidth_bytes_per_s=_number(where, "memory_tb_per_s", entry["memory_tb_per_s"], 1e-3,
                                                 1e3) * 1e12,
            memory_bytes=int(_number(where, "memory_gb", entry["memory_gb"], 1e-3, 1e6) * 1e9),
            source=str(entry.get("source", ""))))
    return rows


def parse_runtimes(data: Any, label: str) -> list[dict[str, Any]]:
    profiles = []
    for entry in _entries(data, label):
        name, where = _checked(entry, label, "runtime", RUNTIME_KEYS, RUNTIME_KEYS - {"description", "source"})
        categories = entry["categories"]
        if not isinstance(categories, dict):
            raise RegistryError(f"{where}: categories must be a mapping")
        names = {c.value for c in CategoryId}
        if set(categories) != names:
            extra, absent = set(categories) - names, names - set(categories)
            detail = (f"unknown {', '.join(sorted(extra))}" if extra else f"missing {', '.join(sorted(absent))}")
            raise RegistryError(f"{where}: categories: {detail}")
        rows = {}
        for category, values in categories.items():
            if not isinstance(values, dict) or set(values) - CATEGORY_KEYS:
                raise RegistryError(f"{where}: categories.{category}: expected compute_efficiency, "
                                    f"bandwidth_efficiency and optionally fused")
            rows[category] = dict(
                compute_efficiency=_number(where, f"{category}.compute_efficiency",
                                           values.get("compute_efficiency"), 1e-4, 1.0),
                bandwidth_efficiency=_number(where, f"{category}.bandwidth_efficiency",
                                             values.get("bandwidth_efficiency"), 1e-4, 1.0),
                fused=bool(values.get("fused", False)))
        version = entry["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistryError(f"{where}: version must be an integer >= 1")
        profiles.append(dict(
            name=str(name).strip().lower(), version=version, description=str(entry.get("description", "")),
            source=str(entry.get("source", "")),
            kernel_launch_s=_number(where, "kernel_launch_us", entry["kernel_launch_us"], 0) * 1e-6,
            stage_call_overhead_s=_number(where, "stage_call_overhead_ms", entry["stage_call_overhead_ms"], 0) * 1e-3,
            decode_step_overhead_s=_number(where, "decode_step_overhead_ms", entry["decode_step_overhead_ms"],
                                           0) * 1e-3,
            fused_bytes_factor=_number(where, "fused_bytes_factor", entry["fused_bytes_factor"], 0, 1.0),
            categories=rows))
    return profiles


def shipped(name: str) -> str:
    return importlib.resources.files("registry.data").joinpath(name).read_text("utf-8")


def upsert_hardware(conn: Connection, row: dict[str, Any], origin: str) -> None:
    values = dict(row, origin=origin)
    found = conn.execute(sa.text("SELECT id FROM hardware WHERE name = :name"), {"name": row["name"]}).scalar()
    if found is None:
        conn.execute(sa.text(
            "INSERT INTO hardware (name, display_name, peak_bf16_flops_per_s, memory_bandwidth_bytes_per_s, "
            "memory_bytes, source, origin) VALUES (:name, :display_name, :peak_bf16_flops_per_s, "
            ":memory_bandwidth_bytes_per_s, :memory_bytes, :source, :origin)"), values)
    else:
        conn.execute(sa.text(
            "UPDATE hardware SET display_name = :display_name, peak_bf16_flops_per_s = :peak_bf16_flops_per_s, "
            "memory_bandwidth_bytes_per_s = :memory_bandwidth_bytes_per_s, memory_bytes = :memory_bytes, "
            "source = :source, origin = :origin WHERE id = :id"), dict(values, id=found))


def upsert_runtime(conn: Connection, profile: dict[str, Any], origin: str) -> int:
    category_ids = dict(conn.execute(sa.text("SELECT name, id FROM operator_categories")).all())
    values = {k: v for k, v in profile.items() if k != "categories"}
    values["origin"] = origin
    found = conn.execute(sa.text("SELECT id FROM runtime_profiles WHERE name = :name AND version = :version"),
                         values).scalar()
    if found is None:
        found = conn.execute(sa.text(
            "INSERT INTO runtime_profiles (name, version, description, source, kernel_launch_s, "
            "stage_call_overhead_s, decode_step_overhead_s, fused_bytes_factor, origin) VALUES (:name, :version, "
            ":description, :source, :kernel_launch_s, :stage_call_overhead_s, :decode_step_overhead_s, "
            ":fused_bytes_factor, :origin) RETURNING id"), values).scalar_one()
    else:
        conn.execute(sa.text(
            "UPDATE runtime_profiles SET description = :description, source = :source, "
            "kernel_launch_s = :kernel_launch_s, stage_call_overhead_s = :stage_call_overhead_s, "
            "decode_step_overhead_s = :decode_step_overhead_s, fused_bytes_factor = :fused_bytes_factor, "
            "origin = :origin WHERE id = :id"), dict(values, id=found))
        conn.execute(sa.text("DELETE FROM runtime_profile_categories WHERE runtime_profile_id = :id"), {"id": found})
    for category, row in profile["categories"].items():
        conn.execute(sa.text(
            "INSERT INTO runtime_profile_categories (runtime_profile_id, category_id, compute_efficiency, "
            "bandwidth_efficiency, fused) VALUES (:p, :c, :ce, :be, :fused)"),
            {"p": found, "c": category_ids[category], "ce": row["compute_efficiency"],
             "be": row["bandwidth_efficiency"], "fused": row["fused"]})
    return int(found)


def suggestion(word: str, options) -> str:
    """' (did you mean X?)' for the closest of `options`, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_hardware(conn: Connection, name: str) -> tuple[int, str]:
    """(id, catalog name) of a GPU; an unknown name gets the closest one and the list."""
    known = dict(conn.execute(sa.text("SELECT name, id FROM hardware")).all())
    key = str(name).strip().lower()
    if key not in known:
        raise RegistryError(f"unknown hardware {name!r}{suggestion(key, known)}; known: {', '.join(sorted(known))}")
    return int(known[key]), key


def resolve_runtime(conn: Connection, name: str) -> tuple[int, str, int]:
    """(id, name, version) of a runtime profile given as NAME (its latest version) or NAME@VERSION."""
    key, _, version = str(name).strip().lower().partition("@")
    profiles: dict[str, dict[int, int]] = {}
    for pid, pname, pversion in conn.execute(sa.text("SELECT id, name, version FROM runtime_profiles")).all():
        profiles.setdefault(pname, {})[int(pversion)] = int(pid)
    if key not in profiles:
        raise RegistryError(f"unknown runtime {name!r}{suggestion(key, profiles)}; "
                            f"known: {', '.join(sorted(profiles))}")
    versions = profiles[key]
    if version and (not version.isdigit() or int(version) not in versions):
        raise RegistryError(f"runtime {key} has no version {version!r}; "
                            f"known: {', '.join(map(str, sorted(versions)))}")
    chosen = int(version) if version else max(versions)
    return versions[chosen], key, chosen


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


# -- reading the catalogs back -------------------------------------------------------------------------------------

HARDWARE_COLUMNS = ["name", "display_name", "bf16_tflops", "memory_tb_per_s", "memory_gb", "origin"]
RUNTIME_COLUMNS = ["name", "version", "launch_us", "call_overhead_ms", "decode_step_ms", "fused_bytes_factor",
                   "origin"]
RUNTIME_CATEGORY_COLUMNS = ["category", "compute_efficiency", "bandwidth_efficiency", "fused"]


def list_hardware(conn: Connection) -> list[tuple]:
    """The GPUs, in decimal display units (TFLOP/s, TB/s, GB), by name."""
    return [tuple(r) for r in conn.execute(sa.text(
        "SELECT name, display_name, peak_bf16_flops_per_s / 1e12, memory_bandwidth_bytes_per_s / 1e12, "
        "memory_bytes / 1e9, origin FROM hardware ORDER BY name")).all()]


def hardware_details(conn: Connection, name: str) -> dict[str, Any]:
    hardware_id, _ = resolve_hardware(conn, name)
    return dict(conn.execute(sa.text(
        "SELECT name, display_name, peak_bf16_flops_per_s, memory_bandwidth_bytes_per_s, memory_bytes, source, "
        "origin FROM hardware WHERE id = :i"), {"i": hardware_id}).mappings().one())


def list_runtimes(conn: Connection) -> list[tuple]:
    """The runtime profiles (µs per launch, ms of host time per stage call and decode step), by name and version."""
    return [tuple(r) for r in conn.execute(sa.text(
        "SELECT name, version, kernel_launch_s * 1e6, stage_call_overhead_s * 1e3, decode_step_overhead_s * 1e3, "
        "fused_bytes_factor, origin FROM runtime_profiles ORDER BY name, version")).all()]


def runtime_details(conn: Connection, name: str) -> tuple[dict[str, Any], list[tuple]]:
    """A runtime profile (NAME or NAME@VERSION) and its per-category rows."""
    runtime_id, _, _ = resolve_runtime(conn, name)
    profile = dict(conn.execute(sa.text(
        "SELECT id, name, version, description, source FROM runtime_profiles WHERE id = :i"),
        {"i": runtime_id}).mappings().one())
    categories = [tuple(r) for r in conn.execute(sa.text(
        "SELECT c.name, rc.compute_efficiency, rc.bandwidth_efficiency, rc.fused FROM runtime_profile_categories rc "
        "JOIN operator_categories c ON c.id = rc.category_id WHERE rc.runtime_profile_id = :p ORDER BY c.id"),
        {"p": runtime_id}).all()]
    return profile, categories


def next_runtime_version(conn: Connection, name: str) -> int:
    return 1 + int(conn.execute(sa.text("SELECT COALESCE(MAX(version), 0) FROM runtime_profiles WHERE name = :n"),
                                {"n": name}).scalar() or 0)


def add_catalog_file(registry, path: str | pathlib.Path, kind: str) -> list[dict[str, Any]]:
    """The entries of a hardware or runtime catalog file, validated whole, then upserted in one transaction as the
    user's own."""
    parse, upsert = {"hardware": (parse_hardware, upsert_hardware), "runtime": (parse_runtimes, upsert_runtime)}[kind]
    entries = parse(read_catalog_file(path), str(path))
    with registry.begin() as conn:
        for entry in entries:
            upsert(conn, entry, "user")
    return entries
