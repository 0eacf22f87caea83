"""The physical range of every numeric input, in one place: workloads (pages, tokens, tiles, batch), what-if
overrides and targets, the hardware catalog, and the serving block of a scenario (engine settings, arrival rates,
page counts, the page mix).

Every reader checks its numbers against these ranges before it uses them, so that a value no GPU, model or
engine could have is refused in one line naming its key, instead of overflowing a 64-bit array, allocating
gigabytes or running for hours. The ranges are generous: each is far beyond any real setting (the comment says
why), and tight enough that no product of them overflows what the simulation and the registry's columns hold.
A range that follows from a model fact (its context length) is read from the model's config (`context_tokens`).
The README's table "Input limits" lists them; keep the two in step.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from analyzer.fileio import quote


def _shown(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


@attrs.frozen
class Range:
    """Numbers from `low` to `high` (inclusive; `low` excluded when `low_open`), integers only when `integer`,
    counted in `unit` (what the message names)."""

    low: float
    high: float
    unit: str = ""
    integer: bool = True
    low_open: bool = False

    def phrase(self) -> str:
        """'a positive integer up to 1,024 tokens', 'a number in (0, 1]', 'a positive number from 0.001 to ...'."""
        unit = f" {self.unit}" if self.unit else ""
        if self.integer:
            if self.low == 1:
                return f"a positive integer up to {_shown(self.high)}{unit}"
            return f"an integer from {_shown(self.low)} to {_shown(self.high)}{unit}"
        if self.low == 0 and self.low_open:
            if self.high == 1 and not unit:
                return "a number in (0, 1]"
            return f"a positive number up to {_shown(self.high)}{unit}"
        kind = "a positive number" if self.low > 0 else "a number"
        return f"{kind} from {_shown(self.low)} to {_shown(self.high)}{unit}"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def problem(self, value: Any) -> str | None:
        """None for a value in the range, else 'must be PHRASE, got VALUE'."""
        return None if self.contains(value) else f"must be {self.phrase()}, got {quote(value)}"


# -- workloads --------------------------------------------------------------------------------------------------
# A page side past 16,384 px is an 8-foot poster at 200 dpi; the vision encoder resizes every page to 1,024 or
# 1,280 px anyway.
PAGE_SIDE_PX = Range(1, 16_384, "px")
# Pages analyzed in one batch: 4,096 pages of the largest mode hold ~20 million prefill tokens, far past any GPU.
BATCH_PAGES = Range(1, 4_096, "pages")
# Local tiles of a Gundam page (the grid and its min/max): the reference code allows 2..9; 64 is 7x that.
TILES = Range(1, 64, "tiles")
# Text tokens of a prompt and tokens generated: each at most the model's context (`context_tokens`), checked
# again with the image's tokens by Workload.
PROMPT_TEXT_TOKENS_LOW = 0
NEW_TOKENS_LOW = 1


def context_tokens(variant: str) -> int:
    """The decoder's positions (max_position_embeddings of the model's config): 8,192 for both variants."""
    from analyzer.architecture import canonical_variant, load_spec

    return int(load_spec(canonical_variant(variant)).text["max_position_embeddings"])


def new_tokens_range(variant: str, integer: bool = True) -> Range:
    return Range(NEW_TOKENS_LOW, context_tokens(variant), "tokens", integer=integer)


# -- hardware (the catalog's figures and a what-if's overrides) -------------------------------------------------
# Upper bounds far beyond any one accelerator (an H200 has 989 dense bf16 TFLOP/s, 4.8 TB/s and 141 GB), so that a
# unit slip (bytes for GB) is caught; 1,000,000 GB is 1e15 bytes, well within the 64-bit memory_bytes columns.
PEAK_TFLOPS = Range(1e-3, 1e6, "TFLOP/s", integer=False)
MEMORY_TB_PER_S = Range(1e-3, 1e3, "TB/s", integer=False)
MEMORY_GB = Range(1e-3, 1e6, "GB", integer=False)
# GPU-to-GPU links: NVLink 5 is 1,800 GB/s; 100,000 GB/s is 55x that.
INTERCONNECT_GB_PER_S = Range(1e-3, 1e5, "GB/s", integer=False)
# A price for one GPU-hour: clouds rent from cents to tens of dollars; 10,000 USD/h is past any single GPU, so a price
# given per month or per 8-GPU node by slip is caught. Zero is refused: a free GPU makes every cost zero.
USD_PER_HOUR = Range(0, 1e4, "USD/h", integer=False, low_open=True)
# Multiplies every category's efficiency, each in (0.05, 1]: past 20 even the least efficient one exceeds 100%;
# below 0.001 the best is under 0.1% and the times it divides overflow a double.
EFFICIENCY_SCALE = Range(1e-3, 20, integer=False)

# -- what-if targets --------------------------------------------------------------------------------------------
# 1e12 pages a day is 11.6 million pages a second, beyond any fleet; latencies up to 1,000,000 s (11.6 days).
PAGES_PER_DAY = Range(0, 1e12, "pages", integer=False, low_open=True)
TARGET_LATENCY_S = Range(0, 1e6, "s", integer=False, low_open=True)

# -- serving (a scenario's serving block, simulated by registry.serving.engine) -----------------------------------------
# Concurrent sequences: vLLM's default is 256 (1,024 on large GPUs); 65,536 is 64x that.
MAX_NUM_SEQS = Range(1, 65_536, "sequences")
# Tokens per engine step: vLLM's default is 8,192 (2,048 with chunked prefill); the runtime catalog's bound too.
MAX_NUM_BATCHED_TOKENS = Range(1, 1_048_576, "tokens")
# Tokens per KV block: vLLM uses 16 (8..256 on CUDA); 1,024 is 4x the largest.
BLOCK_SIZE = Range(1, 1_024, "tokens")
GPU_MEMORY_UTILIZATION = Range(0, 1, integer=False, low_open=True)
# Poisson arrival rates: one GPU serves a few pages a second; 100,000 pages/s is a datacenter's worth, one page in
# 11.6 days (1e-6 pages/s) is no serving at all (and arrival times stay finite).
ARRIVAL_RATE_PER_S = Range(1e-6, 1e5, "pages/s", integer=False)
# Pages simulated per point (pages.count, arrival.offline_pages): the simulation keeps a few arrays of this length
# per point; 100,000 pages take a few MB and, at the default page mix, about a minute.
SIMULATED_PAGES = Range(1, 100_000, "pages")
SEED = Range(0, 2**63 - 1)  # numpy's generator takes any; the serving_points.seed column holds 64 bits
# Page preprocessing workers: DeepSeek's PDF pipeline runs a pool of 64 threads; 4,096 is a large host's worth.
CPU_WORKERS = Range(1, 4_096, "workers")
# Closed-loop clients (arrival.concurrency): benchmark clients keep 1 to a few hundred requests in flight; more than
# max_num_seqs' own limit cannot be in the engine at once.
CONCURRENCY = Range(1, 65_536, "pages in flight")
# Pages rendered from a PDF at this resolution (serving.render_dpi): 72 is a screen, 600 a fine scan; 2,400 is 4x.
RENDER_DPI = Range(1, 2_400, "dpi")
# The no-repeat n-gram logits processor: n-grams of 1 to 1,024 tokens within a window of up to the context.
NGRAM_SIZE = Range(1, 1_024, "tokens")
NGRAM_WINDOW = Range(1, 1_048_576, "tokens")
# The page mix's new tokens (median, p90, max): at most the model's context, as for a workload (`new_tokens_range`).
# Simulated work, refused up front past this many generated tokens over all points (GPUs x runtimes x rates x
# pages x mean new tokens): the simulation runs at 0.3 to 5 million tokens a second (measured on one core over
# engine settings from 1 to 1,024 sequences), so this is at most a few minutes.
MAX_SIMULATED_TOKENS = 100_000_000
