"""What a runtime really executes: the execution a report is traced under.

- `hf-eager`: transformers' modules in eager PyTorch on CUDA, as `generate` runs them: a `DynamicCache` that
  concatenates the whole KV cache every decode step, the experts on transformers' CUDA path (`grouped_mm`: sort,
  histc, cumsum and index ops per layer), vision views batched together, every kernel dispatched by the host.
- `vllm`: vLLM-style serving: a paged KV cache (each step writes the new token's K/V; attention reads the
  context's K/V once), the vision tower run one image at a time (its global view, then its tiles as one batch) as
  DeepSeek's vLLM model runs it, logits for the last position only, fused kernels where vLLM fuses them (the
  rules below), and decode replayed from a CUDA graph (no per-kernel host dispatch).
"""

from __future__ import annotations

import enum

from analyzer.errors import AnalyzerInputError


class Execution(str, enum.Enum):
    HF_EAGER = "hf-eager"
    VLLM = "vllm"


DEFAULT_EXECUTION = Execution.HF_EAGER


def parse_execution(name: str) -> Execution:
    try:
        return Execution(str(name).strip().lower())
    except ValueError:
        raise AnalyzerInputError(f"unknown execution {name!r}; expected one of: "
                                 f"{', '.join(e.value for e in Execution)}") from None
