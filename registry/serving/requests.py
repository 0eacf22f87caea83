"""Request traces: the requests a serving simulation replays one for one, instead of a drawn page mix.

A trace is a table (CSV with a header, JSON Lines, or Parquet) with a row per request:

    arrival_s       seconds since the first request (optional; empty or absent: none, the scenario's arrival
                    block sends them: a rate, or a closed loop of N clients)
    prompt_tokens   the prompt's text tokens (the image's tokens are added from its page size)
    output_tokens   tokens the request generates (>= 1)
    images          images in the request (optional, default 0: a text-only request)
    page_size       WIDTHxHEIGHT of its images in pixels (optional; default: the scenario's page)

The same trace comes from an ingested serving benchmark (registry.store.serving_results): its requests' own input
and output lengths, and its load (request rate, burstiness, max concurrency).
"""

from __future__ import annotations

import io
import math
import pathlib
import re

import attrs
import numpy as np

from analyzer import ranges
from analyzer.fileio import MAX_MEASUREMENT_BYTES, InputLimitError, quote, read_input, source_name, unreadable

TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "images", "page_size")
REQUIRED_COLUMNS = ("prompt_tokens", "output_tokens")
MAX_TRACE_REQUESTS = int(ranges.SIMULATED_PAGES.high)
MAX_PROMPT_TOKENS = 1_048_576
_PAGE = re.compile(r"^[0-9]{1,9}x[0-9]{1,9}$")


class TraceError(ValueError):
    """A request trace that cannot be replayed; the message is one line naming the file and the row."""


@attrs.frozen(eq=False)
class RequestTrace:
    """Requests to replay: per request its arrival (NaN: none), prompt text tokens, output tokens, images and the
    page size of its images (None: the scenario's page)."""

    source: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    images: np.ndarray
    page_size: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.prompt_tokens)

    @property
    def has_arrivals(self) -> bool:
        return bool(len(self)) and not np.isnan(self.arrival_s).any()

    @property
    def page_sizes(self) -> list[str | None]:
        """The page sizes of the requests with images, in order of first use (None: the scenario's page)."""
        return list(dict.fromkeys(size for size, n in zip(self.page_size, self.images.tolist()) if n > 0))

    def digest(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for array in (self.arrival_s, self.prompt_tokens, self.output_tokens, self.images):
            h.update(np.ascontiguousarray(array).tobytes())
        h.update("\0".join(str(s) for s in self.page_size).encode())
        return h.hexdigest()


def make_trace(source: str, prompt_tokens, output_tokens, arrival_s=None, images=None,
               page_size=None) -> RequestTrace:
    """A checked trace from columns (lists or arrays); a bad value is a TraceError naming its row (1-based)."""
    n = len(prompt_tokens)
    if n == 0:
        raise TraceError(f"{source}: no requests")
    if n > MAX_TRACE_REQUESTS:
        raise TraceError(f"{source}: {n:,} requests exceed the limit of {MAX_TRACE_REQUESTS:,}")
    columns = {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
               "images": [0] * n if images is None else images,
               "arrival_s": [None] * n if arrival_s is None else arrival_s}
    for name, values in columns.items():
        if len(values) != n:
            raise TraceError(f"{source}: column {name} has {len(values):,} values for {n:,} requests")
    low = {"prompt_tokens": 0, "output_tokens": 1, "images": 0}
    high = {"prompt_tokens": MAX_PROMPT_TOKENS, "output_tokens": MAX_PROMPT_TOKENS, "images": 64}
    ints = {}
    for name in ("prompt_tokens", "output_tokens", "images"):
        out = np.empty(n, dtype=np.int64)
        for row, value in enumerate(columns[name]):
            if value is None and name == "images":
                value = 0
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
                    or not math.isfinite(value) or value != int(value)
                    or not low[name] <= value <= high[name]):
                raise TraceError(f"{source}: request {row + 1}: {name} must be an integer from {low[name]} to "
                                 f"{high[name]:,}, got {quote(value)}")
            out[row] = int(value)
        ints[name] = out
    arrival = np.full(n, np.nan)
    given = [v is not None and not (isinstance(v, float) and math.isnan(v)) for v in columns["arrival_s"]]
    if any(given) and not all(given):
        row = given.index(False) + 1
        raise TraceError(f"{source}: request {row}: arrival_s is missing while other requests have one (give every "
                         "request an arrival, or none)")
    if all(given):
        for row, value in enumerate(columns["arrival_s"]):
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
                    or not math.isfinite(value) or not 0 <= value <= 1e9):
                raise TraceError(f"{source}: request {row + 1}: arrival_s must be seconds from 0 to 1e9, got "
                                 f"{quote(value)}")
            arrival[row] = float(value)
    sizes: list[str | None] = []
    for row, value in enumerate([None] * n if page_size is None else page_size):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            sizes.append(None)
            continue
        if not isinstance(value, str) or not _PAGE.match(value) or not all(
                ranges.PAGE_SIDE_PX.contains(int(side)) for side in value.split("x")):
            raise TraceError(f"{source}: request {row + 1}: page_size must be WIDTHxHEIGHT in pixels, each side "
                             f"{ranges.PAGE_SIDE_PX.phrase()}, got {quote(value)}")
        sizes.append(value)
    return RequestTrace(source=source, arrival_s=arrival, prompt_tokens=ints["prompt_tokens"],
                        output_tokens=ints["output_tokens"], images=ints["images"], page_size=tuple(sizes))


def read_trace(path: str | pathlib.Path) -> RequestTrace:
    """A request trace from a CSV, JSON Lines (.jsonl) or Parquet file, by its extension."""
    source = source_name(path)
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".parquet"):
        raise TraceError(f"{source}: a request trace is a .csv, .jsonl or .parquet file, got {quote(suffix or path)}")
    try:
        raw = read_input(path, MAX_MEASUREMENT_BYTES, "request trace")
    except InputLimitError as exc:
        raise TraceError(f"{source}: {exc}") from None
    except OSError as exc:
        raise TraceError(unreadable(source, exc)) from None
    import pyarrow as pa

    try:
        if suffix == ".csv":
            import pyarrow.csv as pv

            table = pv.read_csv(io.BytesIO(raw), convert_options=pv.ConvertOptions(
                column_types={"page_size": pa.string()}, strings_can_be_null=True))
        elif suffix == ".jsonl":
            import pyarrow.json as pj

            table = pj.read_json(io.BytesIO(raw))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{source}: not a readable {suffix[1:]} request trace: {first}") from None
    names = table.column_names
    unknown = [name for name in names if name not in TRACE_COLUMNS]
    if unknown:
        raise TraceError(f"{source}: unknown column {quote(unknown[0])}; known: {', '.join(TRACE_COLUMNS)}")
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise TraceError(f"{source}: missing column {name!r} (columns: {', '.join(TRACE_COLUMNS)}; "
                             f"required: {', '.join(REQUIRED_COLUMNS)})")

    def column(name):
        return table.column(name).to_pylist() if name in names else None

    page_size = column("page_size")
    if page_size is not None:
        page_size = [v if v is None or isinstance(v, str) else quote(v) for v in page_size]
    return make_trace(source, column("prompt_tokens"), column("output_tokens"), column("arrival_s"),
                      column("images"), page_size)


def gamma_arrivals(count: int, rate_per_s: float, burstiness: float, seed: int) -> np.ndarray:
    """Send times of `count` requests at `rate_per_s` with gaps drawn from a gamma distribution of shape
    `burstiness` (1: Poisson), as `vllm bench serve` and SGLang's bench_serving draw them; the first at t=0."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(burstiness, 1.0 / (rate_per_s * burstiness), count)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])
