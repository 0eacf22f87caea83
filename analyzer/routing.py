"""The routing assumption of the MoE counts: tokens routed uniformly, each to top_k of `experts` experts.

A step's expert weight bytes are those of the distinct experts its tokens touch. Used by the analyzer's counts and
by the serving step costs (a feature of their decode fit), so it lives here, with no torch import.
"""

from __future__ import annotations

import numpy as np


def expected_distinct_experts(tokens, experts: int, top_k: int):
    """Expected number of distinct experts touched when `tokens` tokens each pick `top_k` of `experts` uniformly:
    experts x (1 - (1 - top_k / experts) ^ tokens); 0 for no tokens or no experts. `tokens`: a Python number (a
    float comes back, computed in Python's float arithmetic, as the analyzer's counts are) or a numpy array
    (numpy's arithmetic, elementwise)."""
    if experts <= 0:
        return 0.0 * tokens
    distinct = experts * (1.0 - (1.0 - top_k / experts) ** tokens)
    if isinstance(tokens, np.ndarray):
        return np.where(tokens > 0, distinct, 0.0)
    return distinct if tokens > 0 else 0.0
