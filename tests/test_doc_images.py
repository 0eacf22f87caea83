"""The pictures under docs/images/ are what the tool draws today (docs/render_images.py --check), and the check
names a picture that differs from its render."""

import importlib.util
import pathlib
import shutil
import sys

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def render_images():
    spec = importlib.util.spec_from_file_location("render_images", REPOSITORY / "docs" / "render_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def rendered(render_images, tmp_path_factory):
    """One render of every picture, shared by the tests (the example scenarios take most of this file's time)."""
    folder = tmp_path_factory.mktemp("rendered")
    render_images.render(folder)
    return folder


def test_the_committed_pictures_match_a_fresh_render(render_images, rendered, capsys):
    assert sorted(p.name for p in rendered.iterdir()) == sorted(p.file_name for p in render_images.PICTURES)
    status = render_images.check(render_images.IMAGES_DIR, rendered)
    assert status == 0, capsys.readouterr().err


def test_the_check_fails_with_one_line_naming_the_picture_that_differs(render_images, rendered, tmp_path, capsys):
    import matplotlib.image

    committed = tmp_path / "images"
    shutil.copytree(render_images.IMAGES_DIR, committed)
    changed = committed / "gpu-cost.png"
    pixels = matplotlib.image.imread(changed)
    pixels[: pixels.shape[0] // 3, :, :3] = 0  # a black band across the top third
    matplotlib.image.imsave(changed, pixels)
    assert render_images.check(committed, rendered) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"render_images: {changed}: differs from a fresh render (RMS ")
    assert "python docs/render_images.py" in line

    # another picture in its place (another size), then none at all: each named the same way
    shutil.copy(committed / "serving-latency.png", changed)
    assert render_images.check(committed, rendered) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"render_images: {changed}: differs from a fresh render")
    changed.unlink()
    assert render_images.check(committed, rendered) == 1
    assert capsys.readouterr().err.strip() == f"render_images: {changed}: missing (render it with python " \
                                              f"docs/render_images.py)"
