"""Workloads: resolution modes, the Gundam tile-grid rule, prompt and output lengths, batch, named profiles."""

from __future__ import annotations

import importlib.resources
import re
from typing import Any

import attrs

from analyzer import ranges
from analyzer.architecture import canonical_variant, load_spec
from analyzer.defaults import (DEFAULT_BATCH, DEFAULT_NEW_TOKENS, DEFAULT_PAGE_HEIGHT_PX, DEFAULT_PAGE_WIDTH_PX,
                               DEFAULT_PROMPT_TEXT_TOKENS)
from analyzer.errors import AnalyzerInputError
from analyzer.fileio import MAX_SMALL_FILE_BYTES, load_document, parse_yaml, quote, quote_names
from analyzer.report import WorkloadRecord
from analyzer.variants import VARIANTS, VISION_DOWNSAMPLE, ModeSpec

MAX_PAGE_SIDE_PX = int(ranges.PAGE_SIDE_PX.high)
MAX_BATCH = int(ranges.BATCH_PAGES.high)
MAX_TILES = int(ranges.TILES.high)


# Resolution modes per variant (README, Workload profiles), from each variant's entry in analyzer/variants.py.
MODES: dict[str, dict[str, ModeSpec]] = {name: variant.modes for name, variant in VARIANTS.items()}


def canonical_mode(variant: str, mode: str) -> str:
    key = str(mode).strip().lower().replace("_", "-")
    if key not in MODES[variant]:
        raise AnalyzerInputError(
            f"unknown mode {quote(mode)} for variant {variant}; expected one of: {', '.join(MODES[variant])}")
    return key


def choose_tile_grid(width_px: int, height_px: int, tile_px: int, min_tiles: int, max_tiles: int
                     ) -> tuple[int, int]:
    """(columns, rows) of local tiles for a page, InternVL-style as DeepSeek-OCR crops it; (0, 0) = no tiles.

    Candidates are all grids with min <= columns x rows <= max; the grid whose aspect ratio is closest to the
    page's wins; on a tie the later (larger) grid wins when the page area exceeds half the grid's area.
    """
    if width_px <= tile_px and height_px <= tile_px:
        return (0, 0)
    # Same candidate order as the reference code (a set sorted by tile count).
    target_ratios = sorted(
        {(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if min_tiles <= i * j <= max_tiles},
        key=lambda ratio: ratio[0] * ratio[1])
    aspect_ratio = width_px / height_px
    area = width_px * height_px
    best_diff = float("inf")
    best = (1, 1)
    for columns, rows in target_ratios:
        diff = abs(aspect_ratio - columns / rows)
        if diff < best_diff:
            best_diff = diff
            best = (columns, rows)
        elif diff == best_diff and area > 0.5 * tile_px * tile_px * columns * rows:
            best = (columns, rows)
    if best == (1, 1):
        return (0, 0)
    return best


def parse_page(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(-?\d{1,12})\s*[xX×]\s*(-?\d{1,12})\s*", str(text))
    if not match:
        raise AnalyzerInputError(f"page size {quote(text)} is not WIDTHxHEIGHT in pixels, e.g. 1654x2339")
    return int(match.group(1)), int(match.group(2))


def parse_tiles(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d{1,12})\s*[xX×]\s*(\d{1,12})\s*", str(text))
    if not match:
        raise AnalyzerInputError(f"tile grid {quote(text)} is not COLUMNSxROWS, e.g. 3x2")
    return int(match.group(1)), int(match.group(2))


def _positive(name: str, minimum: int = 1, maximum: int | None = None):
    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnalyzerInputError(f"{name} must be an integer, got {quote(value)}")
        if value < minimum:
            raise AnalyzerInputError(f"{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise AnalyzerInputError(f"{name} must be <= {maximum}, got {value}")
    return check


def _tokens(name: str, minimum: int):
    """An integer from `minimum` to the model's context (analyzer.ranges.context_tokens of the variant)."""
    def check(instance, attribute, value):
        _positive(name, minimum)(instance, attribute, value)
        context = ranges.context_tokens(instance.variant)
        if value > context:
            raise AnalyzerInputError(f"{name} must be <= {context} (the model's context), got {quote(value)}")
    return check


@attrs.frozen(kw_only=True)
class ViewLayout:
    """How one page becomes vision views and decoder tokens."""

    global_view_px: int
    tile_px: int  # 0 when the mode has no tiles
    tiles_wide: int
    tiles_high: int
    global_feature_tokens: int
    tile_feature_tokens: int  # per tile
    image_placeholder_tokens: int  # decoder positions taken by one image (incl. newlines and separator)

    @property
    def tiles(self) -> int:
        return self.tiles_wide * self.tiles_high


def _optional_text(name: str):
    def check(instance, attribute, value):
        if value is not None and not isinstance(value, str):
            raise AnalyzerInputError(f"{name} must be a string, got {quote(value)}")
    return check


@attrs.frozen(kw_only=True)
class Workload:
    """One analyzable workload: which model, which page, how many tokens, which batch."""

    variant: str = attrs.field(converter=canonical_variant)
    mode: str
    page_width_px: int = attrs.field(default=DEFAULT_PAGE_WIDTH_PX,
                                     validator=_positive("page width (px)", 1, MAX_PAGE_SIDE_PX))
    page_height_px: int = attrs.field(default=DEFAULT_PAGE_HEIGHT_PX,
                                      validator=_positive("page height (px)", 1, MAX_PAGE_SIDE_PX))
    min_tiles: int | None = None
    max_tiles: int | None = None
    tile_grid: tuple[int, int] | None = None  # forced (columns, rows); None: chosen from the page
    prompt_text_tokens: int = attrs.field(default=DEFAULT_PROMPT_TEXT_TOKENS,
                                          validator=_tokens("prompt text tokens", ranges.PROMPT_TEXT_TOKENS_LOW))
    new_tokens: int = attrs.field(default=DEFAULT_NEW_TOKENS, validator=_tokens("new tokens", ranges.NEW_TOKENS_LOW))
    batch: int = attrs.field(default=DEFAULT_BATCH, validator=_positive("batch", 1, MAX_BATCH))
    decoding: str = "greedy"
    profile_id: str | None = attrs.field(default=None, validator=_optional_text("profile id"))

    def __attrs_post_init__(self) -> None:
        mode = canonical_mode(self.variant, self.mode)
        object.__setattr__(self, "mode", mode)
        spec = MODES[self.variant][mode]
        if spec.tile_px is None:
            if self.tile_grid not in (None, (0, 0)):
                raise AnalyzerInputError(f"mode {mode} has no tiles; a tile grid needs gundam")
            object.__setattr__(self, "min_tiles", None)
            object.__setattr__(self, "max_tiles", None)
        else:
            min_tiles = spec.default_min_tiles if self.min_tiles is None else self.min_tiles
            max_tiles = spec.default_max_tiles if self.max_tiles is None else self.max_tiles
            _positive("min tiles", 1, MAX_TILES)(None, None, min_tiles)
            _positive("max tiles", 1, MAX_TILES)(None, None, max_tiles)
            if min_tiles > max_tiles:
                raise AnalyzerInputError(f"min tiles ({min_tiles}) exceeds max tiles ({max_tiles})")
            object.__setattr__(self, "min_tiles", min_tiles)
            object.__setattr__(self, "max_tiles", max_tiles)
            if self.tile_grid is not None:
                grid = tuple(int(v) for v in self.tile_grid)
                if grid != (0, 0) and (grid[0] < 1 or grid[1] < 1 or grid[0] * grid[1] > MAX_TILES):
                    raise AnalyzerInputError(f"tile grid {grid[0]}x{grid[1]} is out of range (1..{MAX_TILES} tiles)")
                object.__setattr__(self, "tile_grid", grid)
        if self.decoding != "greedy":
            raise AnalyzerInputError(f"decoding {quote(self.decoding)} is not supported; only greedy")
        max_positions = load_spec(self.variant).text["max_position_embeddings"]
        total = self.prefill_tokens + self.new_tokens
        if total > max_positions:
            raise AnalyzerInputError(
                f"prompt ({self.prefill_tokens} tokens) + new tokens ({self.new_tokens}) = {total} exceeds the "
                f"model's {max_positions} positions")

    @property
    def layout(self) -> ViewLayout:
        spec = MODES[self.variant][self.mode]
        global_side = spec.global_px // VISION_DOWNSAMPLE
        if spec.tile_px is None:
            columns, rows, tile_side = 0, 0, 0
        else:
            tile_side = spec.tile_px // VISION_DOWNSAMPLE
            if self.tile_grid is not None:
                columns, rows = self.tile_grid
            else:
                columns, rows = choose_tile_grid(self.page_width_px, self.page_height_px, spec.tile_px,
                                                 self.min_tiles, self.max_tiles)
        placeholders = VARIANTS[self.variant].image_placeholder_tokens(spec.global_px, spec.tile_px or 0, columns,
                                                                       rows)
        return ViewLayout(global_view_px=spec.global_px, tile_px=spec.tile_px or 0, tiles_wide=columns,
                          tiles_high=rows, global_feature_tokens=global_side * global_side,
                          tile_feature_tokens=tile_side * tile_side if columns else 0,
                          image_placeholder_tokens=placeholders)

    @property
    def prefill_tokens(self) -> int:
        return self.layout.image_placeholder_tokens + self.prompt_text_tokens

    @property
    def decode_steps(self) -> int:
        """The first new token comes from the prefill's logits; each further one is a decode step."""
        return self.new_tokens - 1


PROFILE_KEYS = {"id", "description", "variant", "mode", "page", "min_tiles", "max_tiles", "tiles", "prompt",
                "prompt_text_tokens", "new_tokens", "batch", "decoding"}


def workload_from_mapping(data: dict[str, Any], source: str, **overrides: Any) -> Workload:
    if not isinstance(data, dict):
        raise AnalyzerInputError(f"{source}: a workload profile must be a mapping")
    unknown = set(data) - PROFILE_KEYS
    if unknown:
        raise AnalyzerInputError(f"{source}: unknown key(s) {quote_names(unknown)}")
    missing = {key for key in ("variant", "mode") if data.get(key) is None}
    if missing:
        raise AnalyzerInputError(f"{source}: missing key(s) {', '.join(sorted(missing))}")
    fields: dict[str, Any] = dict(
        variant=data["variant"], mode=data["mode"], min_tiles=data.get("min_tiles"), max_tiles=data.get("max_tiles"),
        tile_grid=parse_tiles(data["tiles"]) if data.get("tiles") is not None else None,
        prompt_text_tokens=data.get("prompt_text_tokens"), new_tokens=data.get("new_tokens"),
        batch=data.get("batch"), decoding=data.get("decoding"), profile_id=data.get("id"))
    if data.get("page") is not None:
        fields["page_width_px"], fields["page_height_px"] = parse_page(data["page"])
    # A field left out (None) takes the Workload's default, defined there once; an override left out (None)
    # keeps the profile's value.
    workload = Workload(**{k: v for k, v in dict(fields, **{k: v for k, v in overrides.items() if v is not None})
                           .items() if v is not None})
    if workload.profile_id is not None and any(v is not None for v in overrides.values()):
        # The id names the profile's workload: a report of another workload (an option changed the variant, mode,
        # page, tokens or batch) must not claim it. Its fields say what it is; an override that repeats the
        # profile's own value keeps the id.
        try:
            as_profiled = Workload(**{k: v for k, v in fields.items() if v is not None})
        except AnalyzerInputError:
            as_profiled = None
        if as_profiled != workload:
            workload = attrs.evolve(workload, profile_id=None)
    return workload


def profile_names() -> list[str]:
    folder = importlib.resources.files("analyzer.profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


@attrs.frozen
class ProfileSource:
    """A workload profile as a scenario gives it, with where it may come from: a shipped profile name, an inline
    mapping of a profile's fields (checked as a profile file's contents), or, only when `allow_paths` (the command
    line, a scenario file), a profile file. Over HTTP `allow_paths` is False: the service opens no file a client
    names, and its answer to a path says nothing of that file."""

    value: Any
    allow_paths: bool = True

    def load(self, **overrides: Any) -> Workload:
        if isinstance(self.value, dict):
            return workload_from_mapping(self.value, "inline profile", **overrides)
        if self.allow_paths:
            return load_profile(self.value, **overrides)
        if not isinstance(self.value, str) or self.value not in profile_names():
            raise AnalyzerInputError(
                "profile must be a shipped workload profile name or an inline mapping of a profile's fields "
                f"(no file paths); shipped: {', '.join(profile_names())}")
        return shipped_profile(self.value, **overrides)  # never a file of the working folder of that name


def load_profile(name_or_path: str | ProfileSource, **overrides: Any) -> Workload:
    """A named profile shipped with the package, or a YAML/JSON profile file (or what a ProfileSource allows)."""
    import pathlib

    if isinstance(name_or_path, ProfileSource):
        return name_or_path.load(**overrides)
    if not isinstance(name_or_path, str):
        raise AnalyzerInputError(f"a workload profile is a name or a file path, got {quote(name_or_path)}")
    path = pathlib.Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or _exists(path):
        # JSON is YAML; a profile has no use for aliases
        data = load_document(path, "yaml", MAX_SMALL_FILE_BYTES, AnalyzerInputError)
        source = str(path)
        try:
            return workload_from_mapping(data, source, **overrides)
        except AnalyzerInputError as exc:  # a value of the file: name the file
            message = str(exc)
            raise AnalyzerInputError(message if message.startswith(source) else f"{source}: {message}") from None
    return shipped_profile(name_or_path, **overrides)


def _exists(path) -> bool:
    """Whether a file or folder is at `path`; False for text no file system takes as a path (a name longer than
    a file name may be, a NUL), which is then looked up as a profile name."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def shipped_profile(name: str, **overrides: Any) -> Workload:
    """A profile shipped with the package, by name."""
    if name not in profile_names():
        raise AnalyzerInputError(f"unknown workload profile {quote(name)}; known: {', '.join(profile_names())}")
    source = f"profile {name}"
    text = importlib.resources.files("analyzer.profiles").joinpath(f"{name}.yaml").read_text("utf-8")
    return workload_from_mapping(parse_yaml(text, source, AnalyzerInputError), source, **overrides)


def workload_record(workload: Workload) -> WorkloadRecord:
    """The workload as a report records it, with its resolved layout (no tracing needed)."""
    layout = workload.layout
    return WorkloadRecord(
        profile_id=workload.profile_id, variant=workload.variant, mode=workload.mode,
        page_width_px=workload.page_width_px, page_height_px=workload.page_height_px,
        min_tiles=workload.min_tiles, max_tiles=workload.max_tiles, global_view_px=layout.global_view_px,
        tile_px=layout.tile_px, tiles_wide=layout.tiles_wide, tiles_high=layout.tiles_high,
        global_feature_tokens=layout.global_feature_tokens, tile_feature_tokens=layout.tile_feature_tokens,
        image_placeholder_tokens=layout.image_placeholder_tokens, prompt_text_tokens=workload.prompt_text_tokens,
        prefill_tokens=workload.prefill_tokens, new_tokens=workload.new_tokens, decode_steps=workload.decode_steps,
        batch=workload.batch, decoding=workload.decoding)
