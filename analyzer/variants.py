"""The model variants, one entry each: everything that differs between DeepSeek-OCR and DeepSeek-OCR-2.

A variant is one `ModelVariant` in `VARIANTS`: its names (the command line's `ocr2`, the measurement files' `v2`,
the aliases a user may type), the Hugging Face model id, the config file shipped in `analyzer/configs/` and the
transformers classes that build it, its resolution modes with their tile limits, and the image-token formula.
The architecture, the workload's token formula, `measure`, the CLI's help and the schema enums all read it here;
adding a variant is one entry below plus its config file. Nothing here loads torch.
"""

from __future__ import annotations

import attrs

from analyzer.errors import AnalyzerInputError
from analyzer.fileio import one_of

VISION_DOWNSAMPLE = 64  # 16 px patches, then two stride-2 convs: one feature token per 64 x 64 px


@attrs.frozen
class ModeSpec:
    global_px: int
    tile_px: int | None  # None: a single view
    default_min_tiles: int = 2
    default_max_tiles: int = 9


@attrs.frozen(kw_only=True)
class ModelVariant:
    """One model variant, as every part of the package needs it."""

    name: str  # the canonical name: reports, the command line and workload profiles say it
    title: str  # the model's own name, for help texts
    measurement_name: str  # how measurement files (docs/formats.md) spell it: the CLI's name
    aliases: tuple[str, ...] = ()  # other spellings a user may type
    model_id: str  # the Hugging Face model id
    config_file: str  # in analyzer/configs/
    transformers_config: str  # the transformers config class
    transformers_model: str  # the transformers ForConditionalGeneration class
    modes: dict[str, ModeSpec] = attrs.field(eq=False)  # resolution modes (README, Workload profiles), in help order
    # The image-token formula: each row of the global grid and of the stitched tile grid ends with one
    # image_newline (v1), or not (OCR-2); then `separator_tokens` view separators.
    newline_per_row: bool
    separator_tokens: int = 1

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, self.measurement_name, *self.aliases)

    @staticmethod
    def feature_tokens(view_px: int) -> int:
        """Vision feature tokens of one square view (v1: SAM + CLIP; OCR-2: the learnable queries, 256 for a
        1024 px global view and 144 for a 768 px tile)."""
        side = view_px // VISION_DOWNSAMPLE
        return side * side

    def image_placeholder_tokens(self, global_px: int, tile_px: int, columns: int, rows: int) -> int:
        """Decoder positions one image takes: the tiles (a columns x rows grid of tile_px views; 0 x 0 for none),
        the global view and the separator."""
        global_side = global_px // VISION_DOWNSAMPLE
        tile_side = tile_px // VISION_DOWNSAMPLE
        newline = 1 if self.newline_per_row else 0
        placeholders = global_side * (global_side + newline)
        if columns:
            placeholders += (tile_side * rows) * (tile_side * columns + newline)
        return placeholders + self.separator_tokens

    @property
    def default_max_tiles(self) -> tuple[int, ...]:
        """The default largest tile counts of the variant's tiled modes."""
        return tuple(sorted({m.default_max_tiles for m in self.modes.values() if m.tile_px is not None}))


# Gundam limits are 2..9 (paper, HF code) for v1, 2..6 for OCR-2 (README, Workload profiles; analyzer/variants.py).
VARIANTS: dict[str, ModelVariant] = {v.name: v for v in (
    ModelVariant(
        name="v1", title="DeepSeek-OCR", measurement_name="v1", aliases=("deepseek-ocr", "ocr1"),
        model_id="deepseek-ai/DeepSeek-OCR", config_file="deepseek-ocr-v1.json",
        transformers_config="UnlimitedOcrConfig", transformers_model="UnlimitedOcrForConditionalGeneration",
        modes={
            "tiny": ModeSpec(512, None),
            "small": ModeSpec(640, None),
            "base": ModeSpec(1024, None),
            "large": ModeSpec(1280, None),
            "gundam": ModeSpec(1024, 640, 2, 9),
            "gundam-m": ModeSpec(1280, 1024, 2, 9),
        },
        newline_per_row=True),
    ModelVariant(
        name="ocr2", title="DeepSeek-OCR-2", measurement_name="ocr2",
        aliases=("deepseek-ocr-2", "deepseek-ocr2", "v2"),  # v2: what measurement files written before said
        model_id="deepseek-ai/DeepSeek-OCR-2", config_file="deepseek-ocr-2.json",
        transformers_config="DeepseekOcr2Config", transformers_model="DeepseekOcr2ForConditionalGeneration",
        modes={
            "base": ModeSpec(1024, None),
            "gundam": ModeSpec(1024, 768, 2, 6),
        },
        newline_per_row=False),
)}

VARIANT_NAMES = tuple(VARIANTS)
# What a measurement row's `variant` may say: the measurement files' names first, then the canonical ones.
MEASUREMENT_VARIANT_NAMES = tuple(dict.fromkeys([*(v.measurement_name for v in VARIANTS.values()), *VARIANT_NAMES]))
_BY_SPELLING = {spelling: v for v in VARIANTS.values() for spelling in v.spellings}


def model_variant(name: str) -> ModelVariant:
    """The variant a name (any of its spellings, any case) means; an unknown name is refused in one line."""
    key = str(name).strip().lower()
    if key not in _BY_SPELLING:
        raise AnalyzerInputError(f"unknown variant {name!r}; expected one of: {', '.join(VARIANT_NAMES)}")
    return _BY_SPELLING[key]


def variant_help() -> str:
    return "Model variant: " + one_of(f"{v.name} ({v.title})" for v in VARIANTS.values()) + "."


def mode_help() -> str:
    return "Resolution mode. " + " ".join(f"{v.name}: {', '.join(v.modes)}." for v in VARIANTS.values())


def max_tiles_help() -> str:
    defaults = ", ".join(f"{'/'.join(map(str, v.default_max_tiles))} for {v.name}"
                         for v in VARIANTS.values() if v.default_max_tiles)
    return f"Largest tile count (default {defaults})."
