"""The n-gram no-repeat logits processor DeepSeek-OCR is served with, in pure Python.

The published algorithm (deepseek-ai/DeepSeek-OCR, `DeepSeek-OCR-master/DeepSeek-OCR-vllm/process/
ngram_norepeat.py`, `NoRepeatNGramLogitsProcessor(ngram_size, window_size, whitelist_token_ids)`): once a request
has at least `ngram_size` tokens, the last `ngram_size - 1` tokens are the prefix; every n-gram that starts within
the last `window_size` positions and begins with that prefix bans its last token (its score set to -inf), unless
the token is whitelisted. DeepSeek's PDF script uses n-gram 20, window 50, whitelist {128821, 128822} (`<td>`,
`</td>`); its image script and vLLM's recipe 30 / 90. The processor runs once per request per decode step, in the
engine's Python loop over requests, so its cost is a host cost per request: a call plus a loop over
min(window, generated) - ngram_size + 1 positions.

For ngram_size 1 the prefix is empty and every token of the window is banned (the rule as stated; the published
code's `input_ids[-(ngram_size - 1):]` takes the whole history then, a quirk not reproduced here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableSequence, Sequence

# DeepSeek's PDF pipeline (run_dpsk_ocr_pdf.py) and vLLM's DeepSeek-OCR recipe
PDF_NGRAM_SIZE, PDF_WINDOW_SIZE, PDF_WHITELIST = 20, 50, frozenset({128821, 128822})
RECIPE_NGRAM_SIZE, RECIPE_WINDOW_SIZE = 30, 90


class NoRepeatNGram:
    """Bans the tokens that would repeat an n-gram seen within the last `window_size` tokens."""

    def __init__(self, ngram_size: int, window_size: int = 100, whitelist_token_ids: Iterable[int] = ()):
        for name, value in (("ngram_size", ngram_size), ("window_size", window_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.ngram_size = ngram_size
        self.window_size = window_size
        self.whitelist_token_ids = frozenset(whitelist_token_ids)

    def banned_tokens(self, token_ids: Sequence[int]) -> set[int]:
        """The tokens that must not come next after `token_ids` (the request's tokens so far)."""
        length = len(token_ids)
        n = self.ngram_size
        if length < n:
            return set()
        prefix_length = n - 1
        prefix = list(token_ids[length - prefix_length:])
        # the window as one list (a tuple history compares equal slice by slice only as a list)
        window = list(token_ids[max(0, length - self.window_size):])
        banned = set()
        # the n-grams window[start : start + n]; the last one ends at the final token
        for start in range(len(window) - n + 1):
            if window[start:start + prefix_length] == prefix:
                banned.add(window[start + prefix_length])
        return banned - self.whitelist_token_ids

    def __call__(self, token_ids: Sequence[int], scores: MutableSequence[float]) -> MutableSequence[float]:
        """Sets the banned tokens' scores to -inf, in place (a list or a numpy row), and returns the scores."""
        for token in self.banned_tokens(token_ids):
            scores[token] = -math.inf
        return scores
