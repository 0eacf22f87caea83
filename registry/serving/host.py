"""Host (CPU) work of a serving engine, priced per step from a host profile (measured by `measure-host`).

A step's host work is the sum of its pieces, each an affine function of what the step does:

    schedule, prepare_inputs, sampling_metadata   per step + per scheduled page
    sampler                                       per step + per page that samples a token
    bookkeeping                                   per page that samples a token
    logits (with a logits processor)              per sampling page: the engine's per-request call
                                                  + its history rebuild per generated token (engines that rebuild it)
                                                  + the n-gram processor's call + its scan of the window
    detokenize                                    per sampled token

The engine profile says which pieces run while the GPU computes the step (`host_overlapped`) and which leave it idle
(`host_serial`): a step takes serial + max(GPU, overlapped).
"""

from __future__ import annotations

import attrs
import numpy as np

PIECES = ("schedule", "prepare_inputs", "sampling_metadata", "sampler", "bookkeeping", "logits", "detokenize")


@attrs.frozen
class NGramProcessor:
    """A no-repeat n-gram logits processor: bans a token that would repeat an n-gram of the last `window_size`
    output tokens; it scans min(window, generated) - ngram_size + 1 positions once a page has ngram_size tokens."""

    ngram_size: int
    window_size: int

    def scanned(self, generated):
        """Window positions the processor scans for pages with `generated` output tokens (arrays broadcast)."""
        return np.maximum(np.minimum(self.window_size, generated) - self.ngram_size + 1, 0)

    def scanned_series(self, generated: np.ndarray, steps: int) -> np.ndarray:
        """scanned(generated + t).sum() for t = 0..steps-1, from the sorted lengths: a page scans nothing below
        ngram_size - 1 tokens, g - ngram_size + 1 positions up to the window, the window's beyond."""
        g = np.sort(np.asarray(generated, dtype=float))
        prefix = np.concatenate([[0.0], np.cumsum(g)])
        t = np.arange(steps, dtype=float)
        low = np.searchsorted(g, self.ngram_size - 1 - t, side="right")  # pages scanning nothing yet
        high = np.searchsorted(g, self.window_size - t, side="left")  # pages below a full window
        middle = high - low
        full = len(g) - high
        return (prefix[high] - prefix[low]) + middle * (t - self.ngram_size + 1) \
            + full * float(self.window_size - self.ngram_size + 1)


@attrs.frozen
class HostCoefficients:
    """Seconds of one group of pieces (serial or overlapped): per step, per scheduled page, per sampling page, per
    generated token of a sampling page's history, per n-gram window position scanned."""

    step_s: float = 0.0
    per_scheduled_s: float = 0.0
    per_sampling_s: float = 0.0
    per_history_token_s: float = 0.0
    per_window_token_s: float = 0.0

    def __add__(self, other: HostCoefficients) -> HostCoefficients:
        return HostCoefficients(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other))))

    def seconds(self, scheduled, sampling, history_tokens, window_tokens):
        return (self.step_s + self.per_scheduled_s * scheduled + self.per_sampling_s * sampling
                + self.per_history_token_s * history_tokens + self.per_window_token_s * window_tokens)

    @property
    def zero(self) -> bool:
        return not any(attrs.astuple(self))


def piece_coefficients(costs_us: dict[str, float], ngram: NGramProcessor | None,
                       rebuilds_history: bool) -> dict[str, HostCoefficients]:
    """Each piece's coefficients from a host profile's costs (microseconds, keys of registry/data/hosts.yaml)."""
    us = 1e-6
    c = {key: float(value) * us for key, value in costs_us.items()}
    logits = HostCoefficients()
    if ngram is not None:
        logits = HostCoefficients(
            per_sampling_s=c.get("logits_call_per_request_us", 0.0) + c.get("ngram_call_us", 0.0),
            per_history_token_s=c.get("logits_history_per_token_us", 0.0) if rebuilds_history else 0.0,
            per_window_token_s=c.get("ngram_per_window_token_us", 0.0))
    return {
        "schedule": HostCoefficients(c.get("schedule_step_us", 0.0), c.get("schedule_per_request_us", 0.0)),
        "prepare_inputs": HostCoefficients(c.get("prepare_inputs_step_us", 0.0),
                                           c.get("prepare_inputs_per_request_us", 0.0)),
        "sampling_metadata": HostCoefficients(c.get("sampling_metadata_step_us", 0.0),
                                              c.get("sampling_metadata_per_request_us", 0.0)),
        "sampler": HostCoefficients(c.get("sampler_step_us", 0.0),
                                    per_sampling_s=c.get("sampler_per_request_us", 0.0)),
        "bookkeeping": HostCoefficients(per_sampling_s=c.get("bookkeeping_per_request_us", 0.0)),
        "logits": logits,
        "detokenize": HostCoefficients(per_sampling_s=c.get("detokenize_per_token_us", 0.0)),
    }


@attrs.frozen
class HostModel:
    """The host work of one engine on one host: the serial and the overlapped pieces, summed per group."""

    serial: HostCoefficients = HostCoefficients()
    overlapped: HostCoefficients = HostCoefficients()
    ngram: NGramProcessor | None = None
    zero: bool = attrs.field(init=False)  # no host work at all: a step is its GPU time

    @zero.default
    def _no_host_work(self) -> bool:
        return self.serial.zero and self.overlapped.zero

    @classmethod
    def from_costs(cls, costs_us: dict[str, float], overlapped_pieces, ngram: NGramProcessor | None = None,
                   rebuilds_history: bool = False) -> HostModel:
        pieces = piece_coefficients(costs_us, ngram, rebuilds_history)
        serial, overlapped = HostCoefficients(), HostCoefficients()
        for name, coefficients in pieces.items():
            if name in overlapped_pieces:
                overlapped = overlapped + coefficients
            else:
                serial = serial + coefficients
        return cls(serial=serial, overlapped=overlapped, ngram=ngram)

    def window_tokens(self, generated) -> float:
        """N-gram window positions scanned this step by sampling pages with `generated` tokens before it."""
        if self.ngram is None:
            return 0.0
        return float(self.ngram.scanned(generated).sum())

    def step(self, scheduled: int, sampling: int, history_tokens: float, window_tokens: float) -> tuple[float, float]:
        """(serial seconds, overlapped seconds) of one step."""
        return (self.serial.seconds(scheduled, sampling, history_tokens, window_tokens),
                self.overlapped.seconds(scheduled, sampling, history_tokens, window_tokens))

    def decode_series(self, generated: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(serial, overlapped) seconds of `steps` successive pure-decode steps of the pages with `generated` tokens
        before the first: each step every page samples one token."""
        b = len(generated)
        t = np.arange(steps, dtype=float)
        history = float(generated.sum()) + b * t
        if self.ngram is not None and (self.serial.per_window_token_s or self.overlapped.per_window_token_s):
            window = self.ngram.scanned_series(generated, steps)
        else:
            window = np.zeros(steps)
        return (self.serial.seconds(b, b, history, window), self.overlapped.seconds(b, b, history, window))


NO_HOST = HostModel()
