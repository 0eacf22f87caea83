"""What a trace counts, as plain numbers: the costs of one (module, category) per call, and a stage's trace result.

Kept apart from the counter (analyzer/counting.py, which needs torch) so that reports assembled from stored traces
(analyzer/frame.py, analyzer/trace_cache.py) import no torch.
"""

from __future__ import annotations

import attrs

from analyzer.categories import CategoryId


@attrs.define(slots=True)
class CountVector:
    """Costs of one (module, category) within one traced call of a stage."""

    op_calls: int = 0
    kernel_launches: int = 0
    fixed_flops: int = 0
    scaled_flops: int = 0
    fixed_bytes_read: int = 0
    scaled_bytes_read: int = 0
    fixed_bytes_written: int = 0
    scaled_bytes_written: int = 0
    weight_bytes_read: int = 0  # part of fixed_bytes_read read from parameters
    kv_bytes_read: int = 0  # part of scaled_bytes_read read from the KV cache
    kv_bytes_written: int = 0  # part of scaled_bytes_written written into the KV cache
    expert_weight_bytes_per_expert: int = 0  # charged x distinct experts touched

    def add(self, other: "CountVector") -> None:
        for field in attrs.fields(CountVector):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def affine(self, other: "CountVector", other_weight: int) -> "CountVector":
        """self + other_weight * other, field by field (integers stay exact)."""
        return CountVector(**{f.name: getattr(self, f.name) + other_weight * getattr(other, f.name)
                              for f in attrs.fields(CountVector)})

    def minus(self, other: "CountVector") -> "CountVector":
        return self.affine(other, -1)


@attrs.define
class TraceResult:
    """Per (module path, category) costs of one call, plus module call counts and the activation peak."""

    counts: dict[tuple[str, CategoryId], CountVector]
    module_calls: dict[str, int]
    activation_peak_bytes: int  # scales with batch items


def attention_pairs(query_len: int, key_len: int, is_causal: bool) -> int:
    """(query, key) pairs an attention kernel computes; causal skips keys after each query."""
    if not is_causal:
        return query_len * key_len
    offset = key_len - query_len  # cached keys every query sees
    return query_len * offset + query_len * (query_len + 1) // 2
