"""Measurement ingest speed: rows/s of `ingest --measurements` for files of N rows, on DuckDB and PostgreSQL.

Run: python benchmarks/bench_measurements.py [--rows 5000,40000,80000] [--shape shipped|compact]
     [--postgres postgresql://127.0.0.1/test]
A file of N rows repeats the rows of tests/data/h200-hf-eager-ocr2.json (shape `shipped`, about 200 bytes a row:
the real file's 33 rows, 28 of them timed) or minimal timed rows (shape `compact`, about 75 bytes a row), each row
made distinct by its `reps`, so the file maps to the same few workloads whatever N. A size over the input limit
(16 MiB) is refused before anything runs, naming the most rows that fit. The workloads' reports are analyzed and
stored once, before the timed ingests (an ingest of the shipped file), so each figure is the ingest itself:
reading and matching the rows ("parse"), and storing the set and its rows ("total" includes parse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_registry import drop_registry, fresh_registry  # noqa: E402

SHIPPED = REPO / "tests" / "data" / "h200-hf-eager-ocr2.json"
COMPACT_ROWS = [{"kind": "prefill", "variant": "v2", "tokens": 1024, "batch": 1, "median_ms": 17.3},
                {"kind": "vision_tower", "variant": "v2", "image": 1024, "batch": 1, "median_ms": 35.2},
                {"kind": "projector", "variant": "v2", "image": 768, "batch": 6, "median_ms": 0.06},
                {"kind": "ceiling", "median_ms": 1.4}]


def measurement_file(rows: int, shape: str) -> tuple[bytes, float]:
    """The JSON of a file of `rows` rows, and its mean bytes per row."""
    source = json.loads(SHIPPED.read_text())
    pattern = source["rows"] if shape == "shipped" else COMPACT_ROWS
    body = []
    for i in range(rows):
        row = dict(pattern[i % len(pattern)])
        row["reps"] = i // len(pattern) + 1  # every row distinct, the workloads the same
        body.append(row)
    text = json.dumps({"env": source["env"], "rows": body}, separators=(",", ":")).encode()
    return text, len(text) / rows


def bench(label: str, url: str | None, tmp: Path, counts: list[int], shape: str) -> None:
    from registry.store.measurements import ingest_measurements, parse

    registry = fresh_registry(url, tmp, label)
    try:
        started = time.perf_counter()
        ingest_measurements(registry, SHIPPED, "h200", "hf-eager")
        if shape == "compact":
            compact = tmp / "compact-warm.json"
            compact.write_bytes(measurement_file(len(COMPACT_ROWS), shape)[0])
            ingest_measurements(registry, compact, "h200", "hf-eager")
        print(f"{label}: workloads analyzed and stored once: {time.perf_counter() - started:.1f} s", flush=True)
        for count in counts:
            path = tmp / f"m{count}.json"
            text, _ = measurement_file(count, shape)
            path.write_bytes(text)
            started = time.perf_counter()
            parse(path)
            parse_s = time.perf_counter() - started
            started = time.perf_counter()
            set_id, new, rows = ingest_measurements(registry, path, "h200", "hf-eager")
            total_s = time.perf_counter() - started
            assert new and len(rows) == count, (set_id, new, len(rows))
            print(f"{label:<10} {count:>8,} rows {len(text) / 2**20:6.2f} MiB  parse {parse_s:6.2f} s "
                  f"({count / parse_s:>9,.0f} rows/s)  total {total_s:6.2f} s ({count / total_s:>9,.0f} rows/s)",
                  flush=True)
    finally:
        drop_registry(registry)


def main() -> None:
    from analyzer.fileio import MAX_MEASUREMENT_BYTES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="5000,40000,80000", help="row counts, comma-separated")
    parser.add_argument("--shape", choices=["shipped", "compact"], default="shipped")
    parser.add_argument("--postgres", help="PostgreSQL URL to benchmark too (a scratch schema is used)")
    args = parser.parse_args()
    counts = [int(n) for n in args.rows.split(",") if n.strip()]
    for count in counts:
        text, per_row = measurement_file(count, args.shape)
        if len(text) > MAX_MEASUREMENT_BYTES:
            fitting = int((MAX_MEASUREMENT_BYTES - 1000) / per_row)
            parser.error(f"{count:,} {args.shape} rows are {len(text) / 2**20:.1f} MiB ({per_row:.0f} bytes a row), "
                         f"over the {MAX_MEASUREMENT_BYTES / 2**20:.0f} MiB input limit: at most about {fitting:,} "
                         "fit")
    print(f"shape {args.shape}: {measurement_file(1000, args.shape)[1]:.0f} bytes a row; {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory() as folder:
        bench("duckdb", None, Path(folder), counts, args.shape)
        if args.postgres:
            bench("postgresql", args.postgres, Path(folder), counts, args.shape)


if __name__ == "__main__":
    main()
    from registry.interfaces.entry import exit_without_teardown  # no spurious DuckDB binding reports at exit

    exit_without_teardown(0)
