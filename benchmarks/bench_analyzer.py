"""Analyzer speed: one full dsocr-standard-v1 report, and a 100-point sweep over modes x batch x new tokens.

Run: python benchmarks/bench_analyzer.py
"""

from __future__ import annotations

import itertools
import time


def main() -> None:
    started = time.perf_counter()
    import torch  # noqa: F401  (the analyzer loads them lazily: timed here as a new family's trace pays them)
    import transformers  # noqa: F401

    from analyzer import analysis
    from analyzer.architecture import build_model
    from analyzer.report import dumps_json
    from analyzer.workload import Workload, load_profile

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    build_model("v1")
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    report = analysis.analyze(load_profile("dsocr-standard-v1"))
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    analysis.analyze(load_profile("dsocr-standard-v1"))
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    text = dumps_json(report)
    dump_s = time.perf_counter() - started

    for fn in (analysis.trace_vision, analysis.trace_projector, analysis.trace_prefill, analysis.trace_decode_step):
        fn.cache_clear()
    modes = ["tiny", "small", "base", "large", "gundam"]
    batches = [1, 2, 4, 8]
    new_tokens = [128, 256, 512, 1024, 2048]
    points = list(itertools.product(modes, batches, new_tokens))
    started = time.perf_counter()
    for mode, batch, tokens in points:
        analysis.analyze(Workload(variant="v1", mode=mode, page_width_px=1654, page_height_px=2339,
                                  prompt_text_tokens=9, new_tokens=tokens, batch=batch))
    sweep_s = time.perf_counter() - started

    print(f"import (torch, transformers, analyzer)     {import_s:6.2f} s")
    print(f"build v1 on the meta device (once)         {build_s:6.2f} s")
    print(f"dsocr-standard-v1 report, cold traces      {cold_s:6.2f} s   (goal <= 1 s)")
    print(f"dsocr-standard-v1 report, warm traces      {warm_s:6.2f} s")
    print(f"report to JSON ({len(text) / 1e6:.2f} MB)                {dump_s:6.2f} s")
    print(f"sweep {len(points)} points (5 modes x 4 batches x 5 lengths) {sweep_s:6.2f} s   "
          f"({sweep_s / len(points) * 1000:.0f} ms/point; goal <= 10 s)")


if __name__ == "__main__":
    main()
    from registry.interfaces.entry import exit_without_teardown  # no spurious DuckDB binding reports at exit

    exit_without_teardown(0)
