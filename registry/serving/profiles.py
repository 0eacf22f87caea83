"""Engine profiles (registry/data/engines.yaml) and host profiles (registry/data/hosts.yaml, `measure-host`):
parsed and checked whole, every problem one line `FILE:LINE: key: message`.

An engine profile says how an engine schedules and overlaps its host work; a host profile says what each host piece
costs on one CPU (measured, with its spread). The registry stores both (table serving_profiles, kind engine | host)
beside the runtime catalog: the shipped ones on every upgrade, the user's with `engine add` / `host add`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs
import yaml

from analyzer.fileio import key_path, quote
from registry.serving.host import PIECES, HostModel, NGramProcessor
from registry.serving.scheduler import POLICIES
from registry.store.db import RegistryError

MAX_CAPTURE_SIZE = 65_536  # a batch size: max_num_seqs' own limit (analyzer.ranges.MAX_NUM_SEQS)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
HOW = ("measured", "scaled", "fitted")  # fitted: calibrate --serving
HOST_COST_KEYS = ("schedule_step_us", "schedule_per_request_us", "prepare_inputs_step_us",
                  "prepare_inputs_per_request_us", "sampling_metadata_step_us", "sampling_metadata_per_request_us",
                  "sampler_step_us", "sampler_per_request_us", "bookkeeping_per_request_us",
                  "logits_call_per_request_us", "logits_history_per_token_us", "ngram_call_us",
                  "ngram_per_window_token_us", "detokenize_per_token_us")
PREPROCESS_KEYS = ("fixed_ms", "per_megapixel_ms", "per_crop_ms")
ENGINE_KEYS = {"name", "version", "follows", "source", "policy", "block_size", "cuda_graph_capture_sizes",
               "host_serial", "host_overlapped", "rebuilds_logits_history", "max_num_seqs",
               "max_num_batched_tokens", "cpu_workers", "default_host"}
HOST_KEYS = {"name", "version", "description", "source", "measured_on", "python_speed_kernel_us", "costs",
             "preprocess", "render_per_megapixel_ms"}


class ProfileError(RegistryError):
    pass


@attrs.frozen
class Located:
    """A parsed YAML document with the line of every key path, for one-line errors naming file, line and key."""

    source: str
    lines: dict[tuple, int]

    def fail(self, path: tuple, message: str) -> ProfileError:
        """'SOURCE:LINE: key.path: message'; the entry's index in the file's list is left to the line number."""
        shown = key_path(path[1:] if path and isinstance(path[0], int) else path)
        for depth in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:depth]))
            if line is not None:
                return ProfileError(f"{self.source}:{line}: {shown}: {message}")
        return ProfileError(f"{self.source}: {shown}: {message}")


def located(text: str, source: str) -> tuple[Any, Located]:
    from registry.pricing.whatif import _lines

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ProfileError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    return data, Located(source, _lines(node) if node is not None else {})


def _entries(data: Any, at: Located) -> list[dict]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise at.fail((), "expected a list of profiles (mappings)")
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise at.fail((index,), "each profile must be a mapping")
    return data


def _keys(entry: dict, index: int, at: Located, keys: set[str], required: set[str]) -> None:
    for key in entry:
        if key not in keys:
            raise at.fail((index, str(key)), f"unknown key; expected one of: {', '.join(sorted(keys))}")
    for key in sorted(required - set(entry)):
        raise at.fail((index,), f"missing key {key!r}")


def _name(entry: dict, index: int, at: Located) -> tuple[str, int]:
    name, version = entry.get("name"), entry.get("version", 1)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise at.fail((index, "name"), f"must be lower-case letters, digits, '.', '_' or '-' (up to 100), got "
                                       f"{quote(name)}")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 1_000_000:
        raise at.fail((index, "version"), f"must be an integer from 1 to 1,000,000, got {quote(version)}")
    return name, version


def _text(entry: dict, index: int, key: str, at: Located, required: bool = True) -> str:
    value = entry.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 4000:
        raise at.fail((index, key), f"must be text of 1 to 4,000 characters, got {quote(value, 40)}")
    return value.strip()


def _positive_int(value: Any, path: tuple, at: Located, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise at.fail(path, f"must be an integer from 1 to {high:,}, got {quote(value)}")
    return value


def capture_sizes(value: Any, path: tuple, at) -> tuple[int, ...]:
    """CUDA-graph capture sizes: increasing positive integers, a {from, to, step} mapping standing for a range;
    an empty list: no captured graphs (no padding). `at.fail(path, message)` makes the error."""
    if not isinstance(value, list):
        raise at.fail(path, f"must be a list of increasing batch sizes, got {quote(value, 40)}")
    sizes: list[int] = []
    for index, item in enumerate(value):
        where = path + (index,)
        if isinstance(item, dict):
            unknown = set(item) - {"from", "to", "step"}
            if unknown or set(item) != {"from", "to", "step"}:
                raise at.fail(where, "a range is {from: N, to: M, step: S}")
            low, high, step = (_positive_int(item[k], where + (k,), at, MAX_CAPTURE_SIZE)
                               for k in ("from", "to", "step"))
            if high < low:
                raise at.fail(where + ("to",), f"must be >= from ({low}), got {high}")
            sizes.extend(range(low, high + 1, step))
        else:
            sizes.append(_positive_int(item, where, at, MAX_CAPTURE_SIZE))
    for before, after in zip(sizes, sizes[1:]):
        if after <= before:
            raise at.fail(path, f"must be increasing: {after} follows {before}")
    return tuple(sizes)


@attrs.frozen
class EngineProfile:
    name: str
    version: int
    follows: str
    source: str
    policy: str
    block_size: int
    capture_sizes: tuple[int, ...]
    host_serial: tuple[str, ...]
    host_overlapped: tuple[str, ...]
    rebuilds_logits_history: bool
    max_num_seqs: int
    max_num_batched_tokens: int
    cpu_workers: int
    default_host: str

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def host_model(self, host: HostProfile, ngram: NGramProcessor | None) -> HostModel:
        return HostModel.from_costs(host.costs_us, set(self.host_overlapped), ngram, self.rebuilds_logits_history)


def parse_engine_profiles(data: Any, at: Located) -> list[EngineProfile]:
    from analyzer import ranges

    profiles = []
    for index, entry in enumerate(_entries(data, at)):
        _keys(entry, index, at, ENGINE_KEYS, ENGINE_KEYS - {"version"})
        name, version = _name(entry, index, at)
        policy = entry["policy"]
        if policy not in POLICIES:
            raise at.fail((index, "policy"), f"unknown policy {quote(policy)}; known: {', '.join(POLICIES)}")
        limits = {}
        for key, bounds in (("block_size", ranges.BLOCK_SIZE), ("max_num_seqs", ranges.MAX_NUM_SEQS),
                            ("max_num_batched_tokens", ranges.MAX_NUM_BATCHED_TOKENS),
                            ("cpu_workers", ranges.CPU_WORKERS)):
            problem = bounds.problem(entry[key])
            if problem:
                raise at.fail((index, key), problem)
            limits[key] = int(entry[key])
        serial, overlapped = [], []
        for key, into in (("host_serial", serial), ("host_overlapped", overlapped)):
            value = entry[key]
            if not isinstance(value, list):
                raise at.fail((index, key), f"must be a list of host pieces ({', '.join(PIECES)})")
            for position, piece in enumerate(value):
                if piece not in PIECES:
                    raise at.fail((index, key, position), f"unknown host piece {quote(piece)}; known: "
                                                          f"{', '.join(PIECES)}")
                into.append(piece)
        every = serial + overlapped
        for piece in PIECES:
            if every.count(piece) != 1:
                raise at.fail((index, "host_serial"), f"host piece {piece!r} must be listed exactly once in "
                                                      f"host_serial or host_overlapped (listed {every.count(piece)}"
                                                      " times)")
        history = entry["rebuilds_logits_history"]
        if not isinstance(history, bool):
            raise at.fail((index, "rebuilds_logits_history"), f"must be true or false, got {quote(history)}")
        default_host = entry["default_host"]
        if not isinstance(default_host, str) or not NAME_PATTERN.match(default_host):
            raise at.fail((index, "default_host"), f"must name a host profile, got {quote(default_host)}")
        profiles.append(EngineProfile(
            name=name, version=version, follows=_text(entry, index, "follows", at),
            source=_text(entry, index, "source", at), policy=policy,
            capture_sizes=capture_sizes(entry["cuda_graph_capture_sizes"], (index, "cuda_graph_capture_sizes"),
                                        at),
            host_serial=tuple(serial), host_overlapped=tuple(overlapped), rebuilds_logits_history=history,
            default_host=default_host, **limits))
    _unique(profiles, at)
    return profiles


def _unique(profiles, at: Located) -> None:
    seen = set()
    for index, profile in enumerate(profiles):
        if (profile.name, profile.version) in seen:
            raise at.fail((index, "name"), f"{profile.name}@{profile.version} is listed twice")
        seen.add((profile.name, profile.version))


@attrs.frozen
class Figure:
    value: float
    spread: float
    how: str


@attrs.frozen
class HostProfile:
    name: str
    version: int
    description: str
    source: str
    measured_on: dict
    costs: dict[str, Figure]
    preprocess: dict[str, dict[str, dict[str, Figure]]]  # variant -> mode -> PREPROCESS_KEYS
    render_per_megapixel_ms: Figure | None
    python_speed_kernel_us: Figure | None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def costs_us(self) -> dict[str, float]:
        return {key: figure.value for key, figure in self.costs.items()}

    def preprocess_s(self, variant: str, mode: str, megapixels: float, crops: int) -> float:
        """CPU seconds of one worker to preprocess a page of `megapixels` source pixels cut into `crops` crops. A
        profile with no figures at all (`none`) prices it at zero; one that lacks this variant and mode is
        refused."""
        if not self.preprocess:
            return 0.0
        terms = self.preprocess.get(variant, {}).get(mode)
        if terms is None:
            raise ProfileError(f"host profile {self.label} has no preprocessing figures for {variant} mode {mode} "
                               "(measure-host measures every mode)")
        return (terms["fixed_ms"].value + terms["per_megapixel_ms"].value * megapixels
                + terms["per_crop_ms"].value * crops) / 1000.0

    def render_s(self, megapixels: float) -> float:
        """CPU seconds of one renderer to render a page of `megapixels` pixels (zero without a figure)."""
        figure = self.render_per_megapixel_ms
        return 0.0 if figure is None else figure.value * megapixels / 1000.0


def _figure(value: Any, path: tuple, at: Located) -> Figure:
    if not isinstance(value, dict) or not {"value", "spread"} <= set(value) or set(value) - {"value", "spread", "how"}:
        raise at.fail(path, "must be {value: N, spread: N, how: measured|scaled|fitted}")
    numbers = []
    for key in ("value", "spread"):
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
                or number < 0 or number > 1e9:
            raise at.fail(path + (key,), f"must be a number from 0 to 1e9, got {quote(number)}")
        numbers.append(float(number))
    how = value.get("how", "measured")
    if how not in HOW:
        raise at.fail(path + ("how",), f"must be one of: {', '.join(HOW)}; got {quote(how)}")
    return Figure(numbers[0], numbers[1], how)


def parse_host_profiles(data: Any, at: Located) -> list[HostProfile]:
    from analyzer.variants import VARIANTS

    profiles = []
    for index, entry in enumerate(_entries(data, at)):
        _keys(entry, index, at, HOST_KEYS, {"name", "description", "source", "costs"})
        name, version = _name(entry, index, at)
        costs = entry["costs"]
        if not isinstance(costs, dict):
            raise at.fail((index, "costs"), "must be a mapping of host costs")
        figures = {}
        for key in costs:
            if key not in HOST_COST_KEYS:
                raise at.fail((index, "costs", str(key)), f"unknown host cost; known: {', '.join(HOST_COST_KEYS)}")
        for key in HOST_COST_KEYS:
            if key in costs:
                figures[key] = _figure(costs[key], (index, "costs", key), at)
            elif costs:  # a profile gives every cost or none (`none`: no host work)
                raise at.fail((index, "costs"), f"missing host cost {key!r}")
        preprocess = entry.get("preprocess") or {}
        if not isinstance(preprocess, dict):
            raise at.fail((index, "preprocess"), "must be a mapping variant -> mode -> figures")
        modes: dict[str, dict[str, dict[str, Figure]]] = {}
        for variant, per_mode in preprocess.items():
            if variant not in VARIANTS:
                raise at.fail((index, "preprocess", str(variant)), f"unknown variant; known: {', '.join(VARIANTS)}")
            if not isinstance(per_mode, dict):
                raise at.fail((index, "preprocess", variant), "must be a mapping mode -> figures")
            for mode, terms in per_mode.items():
                where = (index, "preprocess", variant, str(mode))
                if mode not in VARIANTS[variant].modes:
                    raise at.fail(where, f"unknown mode of {variant}; known: {', '.join(VARIANTS[variant].modes)}")
                if not isinstance(terms, dict) or set(terms) != set(PREPROCESS_KEYS):
                    raise at.fail(where, f"must give {', '.join(PREPROCESS_KEYS)}")
                modes.setdefault(variant, {})[mode] = {k: _figure(terms[k], where + (k,), at)
                                                       for k in PREPROCESS_KEYS}
        render = entry.get("render_per_megapixel_ms")
        speed = entry.get("python_speed_kernel_us")
        measured_on = entry.get("measured_on") or {}
        if not isinstance(measured_on, dict):
            raise at.fail((index, "measured_on"), "must be a mapping (cpu, cores, python, date, libraries)")
        profiles.append(HostProfile(
            name=name, version=version, description=_text(entry, index, "description", at),
            source=_text(entry, index, "source", at), measured_on=json.loads(json.dumps(measured_on, default=str)),
            costs=figures, preprocess=modes,
            render_per_megapixel_ms=None if render is None else _figure(render, (index, "render_per_megapixel_ms"),
                                                                       at),
            python_speed_kernel_us=None if speed is None else _figure(speed, (index, "python_speed_kernel_us"), at)))
    _unique(profiles, at)
    return profiles


# -- the registry's copies: table serving_profiles (kind engine | host) ----------------------------------------------

SHIPPED_FILES = {"engine": "engines.yaml", "host": "hosts.yaml"}


def _parse(kind: str, data: Any, at: Located) -> list:
    return (parse_engine_profiles if kind == "engine" else parse_host_profiles)(data, at)


def shipped_profiles(kind: str) -> list[tuple[dict, Any]]:
    """(document entry, parsed profile) of each shipped engine or host profile."""
    from registry.pricing.catalog import shipped

    name = SHIPPED_FILES[kind]
    data, at = located(shipped(name), name)
    return list(zip(_entries(data, at), _parse(kind, data, at)))


def read_profile_file(path, kind: str) -> list[tuple[dict, Any]]:
    """(document entry, parsed profile) of each profile of a user's file, checked whole."""
    from analyzer.fileio import MAX_SMALL_FILE_BYTES, read_document, source_name

    text, _ = read_document(path, "yaml", MAX_SMALL_FILE_BYTES, ProfileError, aliases=True)
    data, at = located(text, source_name(path))
    return list(zip(_entries(data, at), _parse(kind, data, at)))


def _row(kind: str, entry: dict, profile, origin: str) -> dict:
    description = profile.follows if kind == "engine" else profile.description
    return {"kind": kind, "name": profile.name, "version": profile.version, "description": description,
            "source": profile.source, "document": json.dumps(entry, default=str), "origin": origin}


def store_profiles(conn, kind: str, entries: list[tuple[dict, Any]], origin: str) -> None:
    """Upsert profiles (delete + insert: portable between DuckDB and PostgreSQL)."""
    import sqlalchemy as sa

    for entry, profile in entries:
        key = {"k": kind, "n": profile.name, "v": profile.version}
        conn.execute(sa.text("DELETE FROM serving_profiles WHERE kind = :k AND name = :n AND version = :v"), key)
        conn.execute(sa.text(
            "INSERT INTO serving_profiles (kind, name, version, description, source, document, origin) "
            "VALUES (:kind, :name, :version, :description, :source, :document, :origin)"),
            _row(kind, entry, profile, origin))


def seed_serving_profiles(conn) -> None:
    """The shipped engine and host profiles, as shipped (a user's profile of another name or version stays)."""
    for kind in SHIPPED_FILES:
        store_profiles(conn, kind, shipped_profiles(kind), "shipped")


def add_profile_file(registry, path, kind: str) -> list:
    """Validate a user's file whole, then store its profiles in one transaction; a shipped name@version is refused
    (give a new version)."""
    entries = read_profile_file(path, kind)
    shipped = {(p.name, p.version) for _, p in shipped_profiles(kind)}
    for _, profile in entries:
        if (profile.name, profile.version) in shipped:
            raise ProfileError(f"{kind} profile {profile.label} is shipped; give your own a new name or version")
    with registry.begin() as conn:
        store_profiles(conn, kind, entries, "user")
    return [profile for _, profile in entries]


def _split(label: str) -> tuple[str, int | None]:
    name, _, version = str(label).partition("@")
    if version:
        if not version.isdigit() or len(version) > 7:
            raise ProfileError(f"{quote(label)}: a version after @ must be a number")
        return name, int(version)
    return name, None


def load_profile(conn, kind: str, label: str):
    """The stored engine or host profile NAME (its highest version) or NAME@VERSION; unknown: one line naming
    those there are."""
    import sqlalchemy as sa

    from registry.pricing.catalog import suggestion

    name, version = _split(label)
    query = "SELECT document, version FROM serving_profiles WHERE kind = :k AND name = :n"
    params = {"k": kind, "n": name}
    if version is not None:
        query += " AND version = :v"
        params["v"] = version
    row = conn.execute(sa.text(query + " ORDER BY version DESC LIMIT 1"), params).first()
    if row is None:
        known = [r[0] for r in conn.execute(sa.text(
            "SELECT DISTINCT name FROM serving_profiles WHERE kind = :k ORDER BY name"), {"k": kind}).all()]
        raise ProfileError(f"unknown {kind} profile {quote(label)}{suggestion(name, set(known))}; known: "
                           f"{', '.join(known)} ({kind} list)")
    at = Located(f"registry {kind} profile {name}@{row[1]}", {})
    return _parse(kind, [json.loads(row[0])], at)[0]


def list_profiles(conn, kind: str) -> list[tuple]:
    """(name@version, description, origin) of the stored profiles of a kind, by name and version."""
    import sqlalchemy as sa

    return [(f"{name}@{version}", description, origin) for name, version, description, origin in conn.execute(
        sa.text("SELECT name, version, description, origin FROM serving_profiles WHERE kind = :k "
                "ORDER BY name, version"), {"k": kind}).all()]


def describe_profile(conn, kind: str, label: str) -> str:
    """A stored profile as YAML: its name and version, where it comes from, and its document."""
    import sqlalchemy as sa

    profile = load_profile(conn, kind, label)
    document, origin = conn.execute(sa.text(
        "SELECT document, origin FROM serving_profiles WHERE kind = :k AND name = :n AND version = :v"),
        {"k": kind, "n": profile.name, "v": profile.version}).one()
    entry = json.loads(document)
    header = f"# {kind} profile {profile.label} ({origin})\n"
    return header + yaml.safe_dump([entry], sort_keys=False, width=116)
