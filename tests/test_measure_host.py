"""The host-profile measurement kit: page preprocessing vs the analyzer, the n-gram processor, measure_host's
document, its repeatability, and the measure-host command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from analyzer.variants import VARIANTS
from analyzer.workload import Workload
from registry.serving import measure_host as mh
from registry.serving import page_pipeline
from registry.serving.host_timing import fit_linear, spread_of
from registry.serving.ngram import NoRepeatNGram

# A4 at 144 dpi (DeepSeek's rendering), 200 and 300 dpi, landscape, a wide strip, a square, a page within a tile
PAGES = ((1191, 1684), (1654, 2339), (2480, 3508), (2339, 1654), (1920, 640), (2000, 2000), (600, 500), (700, 700))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_preprocessing_makes_the_analyzers_tiles_for_every_mode_and_page(variant):
    seen = set()
    for width, height in PAGES:
        page = page_pipeline.synthetic_page(width, height)
        for mode, spec in VARIANTS[variant].modes.items():
            prepared = page_pipeline.preprocess_page(page, variant, mode)
            layout = Workload(variant=variant, mode=mode, page_width_px=width, page_height_px=height).layout
            assert prepared.crop_count == layout.tiles
            assert prepared.tile_grid == (layout.tiles_wide, layout.tiles_high)
            assert prepared.global_view.shape == (3, spec.global_px, spec.global_px)
            if layout.tiles:
                assert prepared.crops.shape == (layout.tiles, 3, spec.tile_px, spec.tile_px)
            assert prepared.token_ids.size == layout.image_placeholder_tokens + page_pipeline.PROMPT_TEXT_TOKENS
            seen.add((mode, layout.tiles))
    # the pages exercise several grids: none, 3 (wide strip), 4 or 9 (square), 6 (A4)
    tiled = {tiles for mode, tiles in seen if VARIANTS[variant].modes[mode].tile_px}
    assert {0, 3, 6} <= tiled and tiled & {4, 9}


def test_preprocessing_numbers_on_an_a4_page():
    page = page_pipeline.synthetic_page(1654, 2339)
    gundam = page_pipeline.preprocess_page(page, "v1", "gundam")
    assert gundam.tile_grid == (2, 3) and gundam.crops.shape == (6, 3, 640, 640)
    assert gundam.token_ids.size == 912  # 903 image positions + 9 prompt tokens (README's A4 example)
    # normalized to (x / 255 - 0.5) / 0.5: white paper is 1.0, the padding (mean colour 127) just below 0
    assert gundam.crops.max() == pytest.approx(1.0)
    assert gundam.global_view[:, 0, 0] == pytest.approx([127 / 127.5 - 1] * 3, abs=1e-6)
    tiny = page_pipeline.preprocess_page(page, "v1", "tiny")  # resized to a square: no padding at the corner
    assert tiny.global_view[:, 0, 0] == pytest.approx([1.0] * 3)
    assert page_pipeline.preprocess_page(page_pipeline.synthetic_page(600, 500), "ocr2", "gundam").crop_count == 0


def test_render_round_trip_keeps_the_page():
    page = page_pipeline.synthetic_page(300, 400)
    decoded = page_pipeline.render_round_trip(page)
    assert decoded.size == (300, 400) and np.array_equal(np.asarray(decoded), np.asarray(page))


def test_ngram_bans_the_token_that_would_repeat_an_ngram():
    trigram = NoRepeatNGram(3, window_size=100)
    assert trigram.banned_tokens([1, 2, 3, 1, 2]) == {3}  # 1 2 3 seen: after 1 2, 3 is banned
    assert trigram.banned_tokens([1, 2, 3, 1, 2, 4, 1, 2]) == {3, 4}
    assert trigram.banned_tokens([1, 2, 3, 4, 5]) == set()  # no prefix repeats
    assert trigram.banned_tokens([1, 2]) == set()  # shorter than the n-gram
    assert trigram.banned_tokens((1, 2, 3, 1, 2)) == {3}  # the engine passes a tuple


def test_ngram_window_and_whitelist():
    history = [1, 2, 3, 1, 2, 4, 1, 2]
    # window 6 holds 3 1 2 4 1 2: the n-grams starting there are (3,1,2) (1,2,4) (2,4,1) (4,1,2) -> 4 banned
    assert NoRepeatNGram(3, window_size=6).banned_tokens(history) == {4}
    assert NoRepeatNGram(3, window_size=4).banned_tokens(history) == set()
    assert NoRepeatNGram(3, window_size=100, whitelist_token_ids={3}).banned_tokens(history) == {4}
    assert NoRepeatNGram(2, window_size=100).banned_tokens([5, 7, 5, 9, 5]) == {7, 9}
    scores = [0.0] * 10
    NoRepeatNGram(3)(history, scores)
    assert scores[3] == scores[4] == -math.inf and scores[5] == 0.0
    with pytest.raises(ValueError):
        NoRepeatNGram(0)


def test_spread_is_half_the_iqr_or_a_tenth_of_the_value():
    assert spread_of([10, 10, 10, 10]) == pytest.approx(1.0)  # no scatter: 10% of 10
    assert spread_of([10, 12, 14, 16, 18]) == pytest.approx(2.0)  # IQR 12..16 -> 2 > 1.4
    # an intercept's floor is 10% of the smallest measured total
    assert spread_of([0.1, 0.1], value=0.1, floor_of=50.0) == pytest.approx(5.0)
    rounds = np.array([[12.0, 30.0, 102.0], [11.0, 31.0, 101.0], [13.0, 29.0, 103.0]])
    values, spreads = fit_linear(np.column_stack([np.ones(3), [1, 10, 50]]), rounds)
    # least squares of the per-point medians (12, 30, 102) on (1, x)
    assert values == pytest.approx([10.880, 1.8256], abs=1e-3)
    # the intercept's spread: 10% of the smallest total (12), above its own 10% and its rounds' IQR / 2
    assert spreads == pytest.approx([1.2, 0.18256], abs=1e-4)


@pytest.fixture(scope="module")
def quick_profile():
    """One `measure-host --quick` profile of this machine and the progress lines it printed."""
    progress: list[str] = []
    return mh.measure_host(quick=True, progress=progress.append, with_vllm=False), progress


def _figures(document):
    yield "python_speed_kernel_us", document["python_speed_kernel_us"]
    yield "render_per_megapixel_ms", document["render_per_megapixel_ms"]
    for key, value in document["costs"].items():
        yield key, value
    for variant, modes in document["preprocess"].items():
        for mode, terms in modes.items():
            for term, value in terms.items():
                yield f"{variant} {mode} {term}", value


def test_quick_profile_round_trips_through_yaml_with_every_key(quick_profile, tmp_path):
    document, progress = quick_profile
    assert progress and any("preprocessing" in line for line in progress)
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump([document], sort_keys=False))
    (loaded,) = yaml.safe_load(path.read_text())
    assert loaded == document
    mh.check_profile(loaded)
    assert list(loaded) == list(mh.DOCUMENT_KEYS)
    assert list(loaded["costs"]) == list(mh.COST_KEYS)
    assert set(loaded["measured_on"]) == {"cpu", "cores", "python", "date", "libraries"}
    assert set(loaded["measured_on"]["libraries"]) == {"numpy", "pillow", "vllm"}
    assert loaded["version"] == 1 and mh.NAME_PATTERN.fullmatch(loaded["name"])
    for variant, spec in VARIANTS.items():
        assert set(loaded["preprocess"][variant]) == set(spec.modes)
    for where, value in _figures(loaded):
        assert value["value"] >= 0 and value["spread"] >= 0, where
    # real figures: a page costs milliseconds, a tiled page more than its global view alone
    kernel = loaded["python_speed_kernel_us"]["value"]
    assert 0.5 < kernel < 500
    a4 = {mode: sum(terms[t]["value"] * x for t, x in zip(mh.PREPROCESS_TERMS, (1, 1191 * 1684 / 1e6, 6)))
          for mode, terms in loaded["preprocess"]["v1"].items()}
    assert 5 < a4["base"] < a4["gundam"] < 5000
    assert loaded["render_per_megapixel_ms"]["value"] > 0.5


def test_vllm_pieces_are_scaled_from_the_shipped_profile_without_vllm(quick_profile):
    document, _ = quick_profile
    assert document["measured_on"]["libraries"]["vllm"] is None
    reference = mh.shipped_profile()
    ratio = document["python_speed_kernel_us"]["value"] / reference["python_speed_kernel_us"]["value"]
    for key in mh.VLLM_COST_KEYS:
        assert document["costs"][key]["how"] == "scaled", key
        assert document["costs"][key]["value"] == pytest.approx(reference["costs"][key]["value"] * ratio,
                                                                rel=1e-3, abs=1e-9)
    for key in mh.NGRAM_COST_KEYS:
        assert document["costs"][key]["how"] == "measured"
    assert "scaled from the shipped profile" in document["source"]


def test_shipped_profiles():
    profiles = {p["name"]: p for p in mh.shipped_profiles()}
    assert list(profiles)[0] == "none" and mh.DEFAULT_PROFILE in profiles
    for profile in profiles.values():
        mh.check_profile(profile)
    assert all(v["value"] == 0 for _, v in _figures(profiles["none"]))
    default = profiles[mh.DEFAULT_PROFILE]
    assert default["measured_on"]["libraries"]["vllm"] == "0.8.5"
    assert all(v["how"] == "measured" for _, v in _figures(default))
    costs = default["costs"]
    # vLLM V0 at 100 running requests: scheduling and input preparation are milliseconds of Python
    schedule_100 = costs["schedule_step_us"]["value"] + 100 * costs["schedule_per_request_us"]["value"]
    assert 300 < schedule_100 < 10_000


def test_check_profile_refuses_a_bad_document(quick_profile):
    document = yaml.safe_load(yaml.safe_dump(quick_profile[0]))
    document["costs"]["schedule_step_us"]["value"] = -1
    with pytest.raises(ValueError, match="schedule_step_us"):
        mh.check_profile(document)
    document = yaml.safe_load(yaml.safe_dump(quick_profile[0]))
    del document["preprocess"]["ocr2"]["gundam"]
    with pytest.raises(ValueError, match="ocr2 gundam"):
        mh.check_profile(document)


def test_measure_host_command_refuses_an_unwritable_path_in_one_line(tmp_path):
    from registry.interfaces.cli import cli
    from registry.interfaces.entry import run_cli

    runner = CliRunner()
    target = tmp_path / "missing-folder" / "host.yaml"
    result = runner.invoke(cli, ["measure-host", "--quick", "--out", str(target)], standalone_mode=False)
    assert result.exception is not None and "cannot write there" in str(result.exception)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(cli, ["measure-host", "--out", str(tmp_path / "host.json")])
    assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())


def test_measure_host_command_writes_the_profile_and_a_table(tmp_path, monkeypatch, quick_profile):
    from registry.interfaces.cli import cli

    monkeypatch.setattr(mh, "measure_host", lambda quick, name, progress: dict(quick_profile[0], name=name))
    out = tmp_path / "host.yaml"
    result = CliRunner().invoke(cli, ["measure-host", "--quick", "--name", "my-host", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (written,) = yaml.safe_load(out.read_text())
    assert written["name"] == "my-host"
    assert "schedule_per_request_us" in result.output and "scaled" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["host.yaml"]  # no temporary file left


def test_a_measured_profile_is_stored_and_prices_a_scenario(quick_profile, tmp_path):
    """What measure-host writes on this machine is a host profile the registry takes and a scenario is priced
    with: its preprocessing figure reaches the page pipeline (one worker: pages/s at most 1 / its seconds)."""
    from registry.serving.profiles import Located, parse_host_profiles
    from tests.helpers import run_command

    document = dict(quick_profile[0], name="this-machine")
    (tmp_path / "host.yaml").write_text(yaml.safe_dump([document], sort_keys=False))
    db = str(tmp_path / "r.duckdb")
    added = run_command(["host", "add", str(tmp_path / "host.yaml"), "--db", db])
    assert added.exit_code == 0 and "this-machine@1 added" in added.output, added.output
    scenario = ("base: {profile: dsocr-standard-v1}\nsweep: {hardware: [h100-sxm], runtime: [vllm]}\nserving:\n"
                "  host: this-machine\n  cpu_workers: 1\n  arrival: {offline_pages: 200}\n"
                "  page_mix:\n    new_tokens: {median: 64, p90: 64, max: 64}\n")
    (tmp_path / "s.yaml").write_text(scenario)
    result = run_command(["whatif", "--scenario", str(tmp_path / "s.yaml"), "--db", db, "--format", "json"])
    assert result.exit_code == 0, result.output
    point = json.loads(result.output)["serving"][0]
    profile = parse_host_profiles([document], Located("test", {}))[0]
    per_page_s = profile.preprocess_s("v1", "gundam", 1654 * 2339 / 1e6, 6)
    assert point["host"] == "this-machine@1" and 0.05 < per_page_s < 2.0
    assert point["pages_per_s"] <= 1 / per_page_s * 1.001 and point["bound_by"] == "cpu-pool"
