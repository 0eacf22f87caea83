"""Resolution modes, token counts and the Gundam tile-grid rule."""

import pytest

from analyzer.errors import AnalyzerInputError
from analyzer.workload import Workload, choose_tile_grid, load_profile, parse_page, profile_names


def _w(**kw):
    base = dict(variant="v1", mode="base", page_width_px=1654, page_height_px=2339, prompt_text_tokens=9,
                new_tokens=512, batch=1)
    base.update(kw)
    return Workload(**base)


@pytest.mark.parametrize("mode,placeholders,features", [("tiny", 73, 64), ("small", 111, 100), ("base", 273, 256),
                                                        ("large", 421, 400)])
def test_v1_single_view_token_counts(mode, placeholders, features):
    layout = _w(mode=mode).layout
    assert layout.image_placeholder_tokens == placeholders
    assert layout.global_feature_tokens == features
    assert layout.tiles == 0


@pytest.mark.parametrize("grid,placeholders", [((2, 2), 693), ((3, 2), 893), ((2, 3), 903), ((3, 3), 1203)])
def test_v1_gundam_token_counts(grid, placeholders):
    assert _w(mode="gundam", tile_grid=grid).layout.image_placeholder_tokens == placeholders


def test_v1_gundam_m_uses_1280_global_and_1024_tiles():
    layout = _w(mode="gundam-m", tile_grid=(2, 2)).layout
    assert (layout.global_view_px, layout.tile_px) == (1280, 1024)
    assert layout.image_placeholder_tokens == 421 + 32 * 33


@pytest.mark.parametrize("tiles,placeholders", [(0, 257), (2, 545), (3, 689), (4, 833), (5, 977), (6, 1121)])
def test_ocr2_token_counts(tiles, placeholders):
    grid = {0: (0, 0), 2: (1, 2), 3: (1, 3), 4: (2, 2), 5: (1, 5), 6: (2, 3)}[tiles]
    w = _w(variant="ocr2", mode="gundam", tile_grid=grid)
    assert w.layout.image_placeholder_tokens == placeholders
    assert _w(variant="ocr2", mode="base").layout.image_placeholder_tokens == 257


def test_tile_grid_rule():
    # A4 portrait at 200 dpi: aspect 0.707 is closest to 2 columns x 3 rows
    assert choose_tile_grid(1654, 2339, 640, 2, 9) == (2, 3)
    assert choose_tile_grid(2339, 1654, 640, 2, 9) == (3, 2)
    # both sides within one tile: no tiles
    assert choose_tile_grid(600, 640, 640, 2, 9) == (0, 0)
    # a square page: 1x1 is excluded by min 2; (2, 2) and (3, 3) tie on aspect, the page is large: 3x3
    assert choose_tile_grid(2000, 2000, 640, 2, 9) == (3, 3)
    assert choose_tile_grid(1000, 1000, 640, 2, 9) == (2, 2)
    # a tall strip, limited to 6 tiles (vLLM) vs 9 (paper)
    assert choose_tile_grid(700, 6000, 640, 2, 6) == (1, 6)
    assert choose_tile_grid(700, 6000, 640, 2, 9) == (1, 9)
    # the tie rule: 1x2 and 2x4 have the same aspect; the larger grid wins only for a large page
    assert choose_tile_grid(700, 1400, 640, 2, 9) == (1, 2)
    assert choose_tile_grid(1000, 2000, 640, 2, 9) == (2, 4)


def test_standard_profile():
    w = load_profile("dsocr-standard-v1")
    assert (w.variant, w.mode, w.page_width_px, w.page_height_px) == ("v1", "gundam", 1654, 2339)
    assert (w.new_tokens, w.batch, w.decoding, w.min_tiles, w.max_tiles) == (512, 1, "greedy", 2, 9)
    assert (w.layout.tiles_wide, w.layout.tiles_high) == (2, 3)
    assert w.layout.image_placeholder_tokens == 903
    assert w.prefill_tokens == 903 + 9
    assert w.decode_steps == 511
    assert {"dsocr-standard-v1", "dsocr-standard-ocr2", "dsocr-base-v1"} <= set(profile_names())


def test_profile_overrides():
    w = load_profile("dsocr-standard-v1", batch=8, new_tokens=1024, max_tiles=6)
    assert (w.batch, w.new_tokens, w.max_tiles) == (8, 1024, 6)


@pytest.mark.parametrize("kw,message", [
    (dict(mode="huge"), "unknown mode"),
    (dict(variant="ocr2", mode="tiny"), "unknown mode"),
    (dict(new_tokens=0), "new tokens must be >= 1"),
    (dict(new_tokens=-5), "new tokens must be >= 1"),
    (dict(batch=0), "batch must be >= 1"),
    (dict(page_width_px=0), "page width"),
    (dict(page_height_px=1_000_000), "page height"),
    (dict(prompt_text_tokens=-1), "prompt text tokens"),
    (dict(new_tokens=8000), "exceeds the model's 8192 positions"),
    (dict(mode="gundam", min_tiles=5, max_tiles=2), "min tiles"),
    (dict(mode="base", tile_grid=(2, 2)), "has no tiles"),
    (dict(batch=2.5), "must be an integer"),
])
def test_bad_workloads(kw, message):
    with pytest.raises(AnalyzerInputError, match=message):
        _w(**kw)


def test_bad_pages_and_profiles(tmp_path):
    with pytest.raises(AnalyzerInputError, match="WIDTHxHEIGHT"):
        parse_page("A4")
    with pytest.raises(AnalyzerInputError, match="unknown workload profile"):
        load_profile("no-such-profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant: v1\nmode: [unclosed\n")
    with pytest.raises(AnalyzerInputError, match="malformed YAML"):
        load_profile(str(bad))
    colon = tmp_path / "colon.yaml"
    colon.write_text("variant: v1\nmode: base: large\nnew_tokens: 8\n")
    with pytest.raises(AnalyzerInputError, match=r"colon\.yaml:2: malformed YAML \(mapping values are not allowed"):
        load_profile(str(colon))  # the line of the problem, and what it is
    typo = tmp_path / "typo.yaml"
    typo.write_text("variant: v1\nmode: base\nnew_tokns: 5\n")
    with pytest.raises(AnalyzerInputError, match="unknown key"):
        load_profile(str(typo))
    missing = tmp_path / "missing.yaml"
    missing.write_text("variant: v1\n")
    with pytest.raises(AnalyzerInputError, match="missing key"):
        load_profile(str(missing))
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("variant: v1\nmode: base\n")  # every other field from Workload's defaults
    workload = load_profile(str(defaults))
    assert (workload.prompt_text_tokens, workload.new_tokens, workload.batch) == (9, 512, 1)
    assert workload.prefill_tokens == 282 == Workload(variant="v1", mode="base").prefill_tokens
