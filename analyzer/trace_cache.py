"""The persistent trace cache: each family's frame (analyzer/frame.py) on disk, so that a report of a family traced
before is assembled without torch or transformers.

Where: $DSOCR_CACHE_DIR, else the user's cache directory ($XDG_CACHE_HOME or ~/.cache, %LOCALAPPDATA% on Windows)
under dsocr-registry/. One file per family, named by the digest of everything the frame depends on: the family, the
model's config, the analyzer (its version and a digest of its source), and the installed torch and transformers.
An entry made by another analyzer, torch or transformers therefore has another name and is never read.

Each file is a header line (the key, the payload's length and SHA-256) and the payload (JSON). A file whose payload
does not match its checksum or whose key is not the one asked for is not trusted: it is traced again and
rewritten. Files are written beside their target and renamed onto it, so concurrent writers of one family leave
one whole entry (either writer's: both hold the same frame).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import sys

from analyzer import __version__
from analyzer.architecture import load_spec
from analyzer.categories import CategoryId
from analyzer.counts import CountVector, TraceResult
from analyzer.fileio import atomic_path
from analyzer.frame import COUNT_FIELDS, FamilyFrame, FamilyKey, ModelFacts, Polynomial, PrefillFit

CACHE_ENV = "DSOCR_CACHE_DIR"
ENTRY_FORMAT = 1
ENTRY_SUFFIX = ".frame"


def cache_dir() -> pathlib.Path:
    """The cache's directory: $DSOCR_CACHE_DIR, else dsocr-registry/ in the user's cache directory."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return pathlib.Path(configured).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = pathlib.Path(os.environ["LOCALAPPDATA"])
    else:
        base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    return base / "dsocr-registry"


@functools.cache
def analyzer_source_digest() -> str:
    """SHA-256 of the analyzer's Python source: a frame traced by other counting code is another entry, even
    under the same version number."""
    digest = hashlib.sha256()
    package = pathlib.Path(__file__).parent
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def environment() -> dict[str, str]:
    """The versions a frame depends on, from package metadata (no import of torch or transformers)."""
    return {"analyzer_version": __version__, "analyzer_source": analyzer_source_digest(),
            "torch": importlib.metadata.version("torch"),
            "transformers": importlib.metadata.version("transformers")}


def entry_key(key: FamilyKey) -> dict:
    spec = load_spec(key.variant)
    return {"format": ENTRY_FORMAT, "family": {"variant": key.variant, "execution": key.execution, "mode": key.mode,
                                               "tiles_wide": key.tiles_wide, "tiles_high": key.tiles_high,
                                               "single_item": key.single_item},
            "model": {"model_id": spec.model_id, "transformers_model": spec.transformers_model,
                      "checkpoint_parameters": spec.checkpoint_parameters, "config": spec.config},
            **environment()}


def _canonical(data) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_path(key: FamilyKey) -> pathlib.Path:
    digest = hashlib.sha256(_canonical(entry_key(key))).hexdigest()[:32]
    return cache_dir() / f"{key.variant}-{key.execution}-{key.mode}-{digest}{ENTRY_SUFFIX}"


# -- frame <-> payload -------------------------------------------------------------------------------------------

def _trace_out(trace: TraceResult) -> dict:
    return {"counts": [[path, category.value, [getattr(vec, f) for f in COUNT_FIELDS]] for (path, category), vec in trace.counts.items()],
            "module_calls": trace.module_calls, "peak": trace.activation_peak_bytes}


def _trace_in(data: dict) -> TraceResult:
    return TraceResult(counts={(path, CategoryId(category)): CountVector(*values)
                               for path, category, values in data["counts"]},
                       module_calls=dict(data["module_calls"]), activation_peak_bytes=data["peak"])


def _poly_out(poly: Polynomial) -> list:
    return [list(poly.numerators), poly.denominator]


def _poly_in(data: list) -> Polynomial:
    return Polynomial(tuple(data[0]), data[1])


def _traces_out(traces: dict) -> list:
    return [[a, b, _trace_out(trace)] for (a, b), trace in traces.items()]


def _traces_in(data: list) -> dict:
    return {(a, b): _trace_in(trace) for a, b, trace in data}


def frame_payload(frame: FamilyFrame) -> dict:
    from analyzer.report import CONVERTER, ModuleNode

    model = frame.model
    fit = frame.prefill_fit
    return {
        "model": {"parameters": model.parameters, "matmul_weight_bytes": model.matmul_weight_bytes,
                  "transformers_version": model.transformers_version, "torch_version": model.torch_version,
                  "modules": CONVERTER.unstructure(list(model.modules), list[ModuleNode])},
        "image_tokens": frame.image_tokens,
        "traced_items": frame.traced_items,
        "prefill_traces": [[tokens, _trace_out(trace)] for tokens, trace in sorted(frame.prefill_traces.items())],
        "fit_tried": frame.fit_tried,
        "vision": _traces_out(frame.vision_traces),
        "projector": _traces_out(frame.projector_traces),
        "decode": _traces_out(frame.decode_traces),
        "prefill_fit": None if fit is None else {
            "image_tokens": fit.image_tokens, "traced_items": fit.traced_items,
            "counts": [[path, category.value, [_poly_out(p) for p in polys]]
                       for (path, category), polys in fit.counts.items()],
            "module_calls": [[path, _poly_out(p)] for path, p in fit.module_calls.items()],
            "peak": _poly_out(fit.activation_peak_bytes)},
    }


@functools.lru_cache(maxsize=8)
def _model_facts(text: str) -> ModelFacts:
    """ModelFacts from their JSON (one per variant and versions: the module tree is structured once)."""
    from analyzer.report import CONVERTER, ModuleNode

    data = json.loads(text)
    return ModelFacts(parameters=data["parameters"], matmul_weight_bytes=data["matmul_weight_bytes"],
                      transformers_version=data["transformers_version"], torch_version=data["torch_version"],
                      modules=tuple(CONVERTER.structure(data["modules"], list[ModuleNode])))


def frame_from_payload(key: FamilyKey, data: dict) -> FamilyFrame:
    fit = data["prefill_fit"]
    return FamilyFrame(
        key=key, model=_model_facts(json.dumps(data["model"], sort_keys=True)),
        image_tokens=data["image_tokens"], traced_items=data["traced_items"],
        prefill_traces={tokens: _trace_in(trace) for tokens, trace in data["prefill_traces"]},
        fit_tried=data["fit_tried"],
        vision_traces=_traces_in(data["vision"]), projector_traces=_traces_in(data["projector"]),
        decode_traces=_traces_in(data["decode"]),
        prefill_fit=None if fit is None else PrefillFit(
            image_tokens=fit["image_tokens"], traced_items=fit["traced_items"],
            counts={(path, CategoryId(category)): tuple(_poly_in(p) for p in polys)
                    for path, category, polys in fit["counts"]},
            module_calls={path: _poly_in(p) for path, p in fit["module_calls"]},
            activation_peak_bytes=_poly_in(fit["peak"])))


# -- reading and writing entries ---------------------------------------------------------------------------------

def load_frame(key: FamilyKey) -> FamilyFrame | None:
    """The stored frame of `key`'s family, or None when there is none or it cannot be trusted (a bad checksum, a
    key that is not this one, a file that does not parse)."""
    path = entry_path(key)
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        header_line, _, payload = raw.partition(b"\n")
        header = json.loads(header_line)
        if (header.get("key") != json.loads(_canonical(entry_key(key))) or header.get("bytes") != len(payload)
                or header.get("sha256") != hashlib.sha256(payload).hexdigest()):
            return None
        return frame_from_payload(key, json.loads(payload))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def store_frame(frame: FamilyFrame) -> pathlib.Path | None:
    """Write `frame` atomically; None when the cache directory cannot be written (the cache is then skipped)."""
    key = frame.key
    payload = _canonical(frame_payload(frame))
    header = {"key": json.loads(_canonical(entry_key(key))), "bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    path = entry_path(key)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(_canonical(header) + b"\n" + payload)
    except OSError:
        return None
    return path


def entries() -> list[pathlib.Path]:
    directory = cache_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == ENTRY_SUFFIX and p.is_file())


def clear() -> tuple[int, int]:
    """Remove every entry (and leftover temporary files of interrupted writes); (files, bytes) removed."""
    removed = removed_bytes = 0
    directory = cache_dir()
    if not directory.is_dir():
        return 0, 0
    for path in directory.iterdir():
        if path.is_file() and (path.suffix == ENTRY_SUFFIX or path.name.startswith(".")
                               and ENTRY_SUFFIX in path.name):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed += 1
            removed_bytes += size
    return removed, removed_bytes
