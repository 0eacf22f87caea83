"""The pictures under docs/images/, drawn by dsocr-registry itself from the example scenarios.

    python docs/render_images.py            # write docs/images/*.png
    python docs/render_images.py --check    # render into a temporary folder and compare with docs/images/

Each picture is one `dsocr-registry ... --plot` command on a temporary registry (created, then removed). The
commands run in this process through the command line's own entry point, so the pictures are what a user's
command draws. --check exits 1 with one line naming the first picture that differs from the committed one beyond
the tolerance (an RMS difference of pixel values, 0 to 255), 0 when all match. A render depends on nothing but the
scenarios, the catalog and the model: the simulations are seeded and the PNGs carry no date or writer version; text
drawn by another FreeType than the committed pictures' may still differ by a few pixels, which the tolerance
absorbs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
IMAGES_DIR = REPOSITORY / "docs" / "images"
EXAMPLES_DIR = REPOSITORY / "queries" / "examples"
# RMS over pixel values (0 to 255) that still counts as the same picture: anti-aliasing of another FreeType build
TOLERANCE_RMS = 2.0


@dataclass(frozen=True)
class Picture:
    file_name: str
    command: tuple[str, ...]   # dsocr-registry's arguments before --scenario
    scenario_file: str         # under queries/examples/
    caption: str


PICTURES = (
    Picture("serving-latency.png", ("whatif",), "serving.yaml",
            "Page latency and time to first token against throughput, vLLM on H100, H200 and A100-40G"),
    Picture("roofline-gpu-seconds.png", ("whatif",), "capacity.yaml",
            "Roofline of the cheapest point with vLLM's achieved roof, and GPU-seconds per page by stage"),
    Picture("gpu-cost.png", ("whatif",), "gpu-cost.yaml",
            "Dollars per 1,000 pages and pages/s per GPU, weights and KV cache in bf16 or fp8"),
    Picture("plan-1m-pages.png", ("plan",), "plan-1m-pages.yaml",
            "Monthly cost against page latency p99 of the configurations that carry a million pages a day"),
)


# seconds each picture's command took in the last render, by file name (printed with the pictures)
RENDER_SECONDS: dict[str, float] = {}


class RenderError(RuntimeError):
    pass


def render(out_dir: pathlib.Path, pictures=PICTURES) -> list[pathlib.Path]:
    """Draw `pictures` into out_dir with dsocr-registry's own commands on a temporary registry."""
    from registry.interfaces.cli import cli
    from registry.interfaces.entry import run_cli

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="dsocr-images-") as scratch:
        registry_path = pathlib.Path(scratch) / "registry.duckdb"
        for picture in pictures:
            path = out_dir / picture.file_name
            args = [*picture.command, "--scenario", str(EXAMPLES_DIR / picture.scenario_file),
                    "--db", str(registry_path), "--no-progress", "--plot", str(path)]
            printed = io.StringIO()
            started = time.perf_counter()
            # the commands' tables are not wanted here; their error line is
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                try:
                    run_cli(cli, args)
                    status = 0
                except SystemExit as done:
                    status = done.code or 0
            if status != 0 or not path.exists():
                last = printed.getvalue().strip().splitlines()[-1:] or ["no output"]
                raise RenderError(f"dsocr-registry {' '.join(args)} failed (exit {status}): {last[0]}")
            written.append(path)
            RENDER_SECONDS[picture.file_name] = time.perf_counter() - started
    return written


def first_difference(rendered_dir: pathlib.Path, committed_dir: pathlib.Path, pictures=PICTURES,
                     tolerance_rms: float = TOLERANCE_RMS) -> str | None:
    """One line naming the first committed picture that is missing or differs from its render, else None."""
    from matplotlib.testing.compare import compare_images
    from matplotlib.testing.exceptions import ImageComparisonFailure

    for picture in pictures:
        committed, rendered = committed_dir / picture.file_name, rendered_dir / picture.file_name
        if not committed.exists():
            return f"{committed}: missing (render it with python docs/render_images.py)"
        try:
            result = compare_images(str(committed), str(rendered), tol=tolerance_rms, in_decorator=True)
        except ImageComparisonFailure as failure:  # sizes differ
            return f"{committed}: differs from a fresh render ({str(failure).splitlines()[0]})"
        if result is not None:
            return (f"{committed}: differs from a fresh render (RMS {result['rms']:.2f} > {tolerance_rms:g}); "
                    f"regenerate with python docs/render_images.py")
    return None


def check(committed_dir: pathlib.Path, rendered_dir: pathlib.Path | None = None) -> int:
    """0 when every committed picture matches a render (made now unless rendered_dir has one), else 1 and a line
    on stderr naming the picture."""
    with tempfile.TemporaryDirectory(prefix="dsocr-images-check-") as scratch:
        if rendered_dir is None:
            rendered_dir = pathlib.Path(scratch)
            render(rendered_dir)
        difference = first_difference(rendered_dir, committed_dir)
    if difference is not None:
        print(f"render_images: {difference}", file=sys.stderr)
        return 1
    print(f"render_images: {len(PICTURES)} pictures in {committed_dir} match a fresh render")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="render into a temporary folder and compare with the committed pictures")
    parser.add_argument("--images-dir", type=pathlib.Path, default=IMAGES_DIR,
                        help="where the pictures are written, or compared with (default: docs/images)")
    options = parser.parse_args(argv)
    try:
        if options.check:
            return check(options.images_dir)
        with tempfile.TemporaryDirectory(prefix="dsocr-images-") as scratch:
            # written beside, then moved: a failed render leaves the committed pictures as they were
            for path in render(pathlib.Path(scratch)):
                shutil.move(str(path), options.images_dir / path.name)
                print(f"{options.images_dir / path.name} ({RENDER_SECONDS[path.name]:.1f} s)")
    except RenderError as error:
        print(f"render_images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
