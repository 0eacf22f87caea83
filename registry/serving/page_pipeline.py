"""DeepSeek-OCR's page preprocessing, implemented here with numpy and PIL, so that its host cost can be timed.

What DeepSeek's own vLLM pipeline does per page (public code: deepseek-ai/DeepSeek-OCR,
`DeepSeek-OCR-master/DeepSeek-OCR-vllm/run_dpsk_ocr_pdf.py` and `process/image_process.py`):

- rendering: PyMuPDF rasterizes each PDF page at 144 dpi, encodes the pixmap as PNG and PIL opens that PNG
  (a PNG encode + decode round trip at the page's pixel size), see `render_round_trip`;
- a new processor per page (`DeepseekOCRProcessor()` inside the per-page function a ThreadPoolExecutor runs): its
  set-up builds the image transform (to-tensor + normalize with mean 0.5, std 0.5) and reads the tokenizer's
  vocabulary (`tokenizer.vocab`, which a fast tokenizer materializes as a new dict of every token on each read)
  to find the `<image>` token id, see `PageProcessor.__init__`;
- the image converted to RGB;
- tiled modes (Gundam): pages with both sides within the tile size get no tiles; otherwise the tile grid is chosen
  by the InternVL-style rule (analyzer.workload.choose_tile_grid, the one rule of this package), the page is
  resized to (columns x tile, rows x tile) and cut into columns x rows tiles;
- the global view: single-view modes of at most 640 px (Tiny, Small) resize the page to a square without keeping
  the aspect ratio; the others (Base, Large, Gundam's global view) pad it to the mode's global size, keeping the
  aspect ratio, with the mean colour (`ImageOps.pad`);
- each view to a float tensor in [0, 1], normalized to (x - 0.5) / 0.5, channels first; the views stacked;
- the prompt's token ids with the image placeholders (the count the analyzer's token formula gives).

The resolution modes, their view sizes and tile limits come from analyzer.variants (one table for the package).
"""

from __future__ import annotations

import io

import attrs
import numpy as np
from PIL import Image, ImageOps

from analyzer.architecture import canonical_variant, load_spec
from analyzer.variants import VARIANTS, ModeSpec
from analyzer.workload import MODES, canonical_mode, choose_tile_grid

# DeepSeek's processor resizes the page straight to the view (no padding) when the mode has no tiles and its
# view is at most 640 px (`if self.image_size <= 640 and not cropping`): Tiny and Small.
SQUARE_RESIZE_MAX_PX = 640
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
RENDER_DPI = 144  # run_dpsk_ocr_pdf.py: pdf_to_images_high_quality(dpi=144)
PROMPT_TEXT_TOKENS = 9  # `<image>\n<|grounding|>Convert the document to markdown.` as the analyzer counts it


@attrs.frozen
class PreparedPage:
    """What the preprocessing hands the engine for one page."""

    global_view: np.ndarray  # (3, global_px, global_px) float32, normalized
    crops: np.ndarray  # (tiles, 3, tile_px, tile_px) float32; (0, 3, 0, 0) for none
    tile_grid: tuple[int, int]  # (columns, rows); (0, 0) for none
    token_ids: np.ndarray  # the prompt with its image placeholders

    @property
    def crop_count(self) -> int:
        return int(self.crops.shape[0])


def _tile_limits(spec: ModeSpec, min_tiles: int | None, max_tiles: int | None) -> tuple[int, int]:
    return (spec.default_min_tiles if min_tiles is None else min_tiles,
            spec.default_max_tiles if max_tiles is None else max_tiles)


class PageProcessor:
    """One page's processor, built anew per page as DeepSeek's pipeline does; its set-up is part of the page's
    cost."""

    def __init__(self, variant: str, mode: str, min_tiles: int | None = None, max_tiles: int | None = None):
        self.variant = canonical_variant(variant)
        self.mode = canonical_mode(self.variant, mode)
        self.spec = MODES[self.variant][self.mode]
        self.min_tiles, self.max_tiles = _tile_limits(self.spec, min_tiles, max_tiles)
        # the transform: per-channel scale and offset of to-tensor + normalize, x / 255 -> (x - mean) / std
        mean = np.asarray(IMAGE_MEAN, dtype=np.float32)
        std = np.asarray(IMAGE_STD, dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._offset = (-mean / std).reshape(3, 1, 1)
        self.pad_colour = tuple(int(m * 255) for m in IMAGE_MEAN)
        # the tokenizer's vocabulary read to find the image token: a new {token: id} dict of the whole vocabulary
        vocab_size = load_spec(self.variant).text["vocab_size"]
        vocabulary = {f"<tok_{i}>": i for i in range(vocab_size)}
        self.image_token_id = vocabulary.get(f"<tok_{vocab_size - 1}>")

    def tile_grid(self, width_px: int, height_px: int) -> tuple[int, int]:
        """(columns, rows) of the page's tiles; (0, 0) for none (single-view modes, or a page within one tile)."""
        if self.spec.tile_px is None:
            return (0, 0)
        return choose_tile_grid(width_px, height_px, self.spec.tile_px, self.min_tiles, self.max_tiles)

    def _to_tensor(self, view: Image.Image) -> np.ndarray:
        pixels = np.asarray(view, dtype=np.float32).transpose(2, 0, 1)  # HWC -> CHW
        return pixels * self._scale + self._offset

    def __call__(self, page: Image.Image) -> PreparedPage:
        page = page.convert("RGB")
        width, height = page.size
        columns, rows = self.tile_grid(width, height)
        crops = []
        if columns:
            tile = self.spec.tile_px
            resized = page.resize((columns * tile, rows * tile))
            for row in range(rows):
                for column in range(columns):
                    box = (column * tile, row * tile, (column + 1) * tile, (row + 1) * tile)
                    crops.append(self._to_tensor(resized.crop(box)))
        size = self.spec.global_px
        if self.spec.tile_px is None and size <= SQUARE_RESIZE_MAX_PX:
            global_view = page.resize((size, size))
        else:
            global_view = ImageOps.pad(page, (size, size), color=self.pad_colour)
        global_tensor = self._to_tensor(global_view)
        crop_tensor = (np.stack(crops) if crops else np.zeros((0, 3, 0, 0), dtype=np.float32))
        placeholders = VARIANTS[self.variant].image_placeholder_tokens(size, self.spec.tile_px or 0, columns, rows)
        token_ids = np.concatenate([np.full(placeholders, self.image_token_id, dtype=np.int64),
                                    np.arange(PROMPT_TEXT_TOKENS, dtype=np.int64)])
        return PreparedPage(global_view=global_tensor, crops=crop_tensor, tile_grid=(columns, rows),
                            token_ids=token_ids)


def preprocess_page(page: Image.Image, variant: str, mode: str, min_tiles: int | None = None,
                    max_tiles: int | None = None) -> PreparedPage:
    """One page through DeepSeek-OCR's preprocessing, its processor built for it (as DeepSeek's pipeline does)."""
    return PageProcessor(variant, mode, min_tiles, max_tiles)(page)


def synthetic_page(width_px: int, height_px: int, seed: int = 0) -> Image.Image:
    """A page-like RGB image: white paper with dark text-like strokes (so that PNG compresses it as it would a
    rendered document, not as flat colour or pure noise)."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
    line_px = 24
    for top in range(line_px * 2, height_px - line_px * 2, line_px * 2):
        ink = rng.random((line_px // 2, width_px)) < 0.35
        pixels[top:top + line_px // 2][ink] = 20
    return Image.fromarray(pixels, "RGB")


def render_round_trip(page: Image.Image) -> Image.Image:
    """The PNG encode + decode DeepSeek's pipeline does per rendered page (pixmap -> PNG bytes -> PIL), decoded
    fully (PIL opens lazily; the preprocessing's first read decodes)."""
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


def pymupdf_available() -> bool:
    try:
        import fitz  # noqa: F401  (PyMuPDF, optional)
    except ImportError:
        return False
    return True


def rasterize_pdf_page(pdf_bytes: bytes, dpi: int = RENDER_DPI) -> Image.Image:
    """Rasterize the first page of a PDF with PyMuPDF at `dpi`, then the PNG round trip, as DeepSeek's pipeline
    does. Needs PyMuPDF (`fitz`); callers check `pymupdf_available()`."""
    import fitz

    with fitz.open(stream=pdf_bytes, filetype="pdf") as document:
        zoom = dpi / 72.0
        pixmap = document[0].get_pixmap(matrix=fitz.Matrix(zoom, zoom), alpha=False)
        png = pixmap.tobytes("png")
    decoded = Image.open(io.BytesIO(png))
    decoded.load()
    return decoded


def synthetic_pdf(width_pt: float, height_pt: float, lines: int = 60) -> bytes:
    """A one-page PDF of text lines, made with PyMuPDF (callers check `pymupdf_available()`)."""
    import fitz

    document = fitz.open()
    page = document.new_page(width=width_pt, height=height_pt)
    for line in range(lines):
        y = 36 + line * (height_pt - 72) / lines
        page.insert_text((36, y), "The quick brown fox jumps over the lazy dog 0123456789 " * 2, fontsize=9)
    data = document.tobytes()
    document.close()
    return data
