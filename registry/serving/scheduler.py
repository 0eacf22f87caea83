"""The scheduler of a serving engine: a KV block pool, the engine's request state, and one scheduler per policy that
returns the plan of the next step (which pages compute how many tokens, which are admitted, which were preempted).

Two policies, as the engines really schedule (docs/engines in the README; sources in registry/data/engines.yaml):

- `chunked-prefill` (vLLM V1, SGLang): one token budget per step. Running pages first, in admission order: a
  decoding page takes 1 token, a page part-way through its prefill the rest of it, chunked to the budget left; then
  waiting pages FCFS while running < max_num_seqs and budget is left, their prefill chunked into it. A step may mix
  prefill and decode.
- `prefill-first` (vLLM V0 for multimodal models: chunked prefill off): when a waiting page can be admitted, the
  step prefills the admitted pages only (each whole prompt within the token budget, FCFS while running <
  max_num_seqs and its KV blocks are free) and every running page waits; otherwise the step decodes every running
  page by one token.

Both: KV in block_size-token blocks; when a step's blocks cannot be allocated the most recently admitted running
page is preempted (its blocks freed, back at the head of the queue, recomputed from zero with the tokens it already
generated), and no page is admitted in that step. No torch: plain Python and numpy over the engine's arrays.
"""

from __future__ import annotations

import collections

import attrs
import numpy as np

POLICIES = ("chunked-prefill", "prefill-first")


class BlockPool:
    """The KV cache's blocks: `total` blocks of `block_size` tokens, and the blocks each page holds."""

    def __init__(self, total: int, block_size: int, pages: int):
        self.total = int(total)
        self.block_size = int(block_size)
        self.free = int(total)
        self.held = np.zeros(pages, dtype=np.int64)

    @property
    def used(self) -> int:
        return self.total - self.free

    def blocks_for(self, tokens):
        """Blocks that hold `tokens` tokens (ceil)."""
        return (tokens + self.block_size - 1) // self.block_size

    def extra(self, pages: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Blocks each page needs beyond those it holds to hold `tokens` tokens."""
        return np.maximum(self.blocks_for(tokens) - self.held[pages], 0)

    def grow(self, pages: np.ndarray, new_blocks: np.ndarray) -> None:
        self.held[pages] += new_blocks
        self.free -= int(new_blocks.sum())

    def release(self, pages) -> None:
        self.free += int(self.held[pages].sum())
        self.held[pages] = 0


class EngineState:
    """Per page: tokens in the KV (`computed`), tokens to compute before its next token (`target`: the prompt, plus
    the tokens generated before a preemption), tokens generated; the running pages in admission order and the
    waiting pages (ready for the engine) in FCFS order."""

    def __init__(self, prompt: np.ndarray, new_tokens: np.ndarray, family: np.ndarray, pool: BlockPool):
        n = len(prompt)
        self.prompt = prompt
        self.new_tokens = new_tokens
        self.family = family
        self.pool = pool
        self.computed = np.zeros(n, dtype=np.int64)
        self.target = prompt.copy()
        self.generated = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.running: list[int] = []
        self.waiting: collections.deque[int] = collections.deque()

    def preempt_last(self) -> int:
        """Preempt the most recently admitted running page: blocks freed, recomputed from zero later, first in the
        queue."""
        victim = self.running.pop()
        self.pool.release(victim)
        self.computed[victim] = 0
        self.target[victim] = self.prompt[victim] + self.generated[victim]
        self.preemptions[victim] += 1
        self.waiting.appendleft(victim)
        return victim


@attrs.define
class StepPlan:
    """One step: the pages it computes, in running order (those admitted in it last), the tokens each had in the
    KV before it (`comp`), computes in it (`alloc`) and must reach to emit a token (`target`), the KV blocks each
    gains; the pages admitted (their image is encoded in this step) and whether the step preempted."""

    run: np.ndarray
    comp: np.ndarray
    alloc: np.ndarray
    target: np.ndarray
    new_blocks: np.ndarray
    admitted: list[int]
    preempted: bool

    @property
    def prefilling(self) -> np.ndarray:
        return self.comp < self.target

    @property
    def emits(self) -> np.ndarray:
        """Pages whose computed tokens reach their target in this step: each samples one token."""
        return (self.alloc > 0) & (self.comp + self.alloc >= self.target)


def _admitted_plan(state: EngineState, run, comp, alloc, new_blocks, admitted, admitted_alloc, preempted):
    tgt = state.target[run]
    if admitted:
        adm = np.array(admitted, dtype=np.int64)
        chunks = np.array(admitted_alloc, dtype=np.int64)
        run = np.concatenate([run, adm])
        comp = np.concatenate([comp, np.zeros(len(adm), dtype=np.int64)])
        tgt = np.concatenate([tgt, state.target[adm]])
        alloc = np.concatenate([alloc, chunks])
        new_blocks = np.concatenate([new_blocks, state.pool.blocks_for(chunks)])
        state.running.extend(admitted)
    return StepPlan(run=run, comp=comp, alloc=alloc, target=tgt, new_blocks=new_blocks, admitted=admitted,
                    preempted=preempted)


def _admit(state: EngineState, max_num_seqs: int, tokens_left: int, blocks_free: int,
           chunked: bool) -> tuple[list[int], list[int]]:
    """Waiting pages admitted FCFS while running < max_num_seqs, each with the tokens it computes in this step: its
    prefill chunked into the tokens left (`chunked`), or its whole prefill when that fits them; the head of the queue
    stops admission when its blocks (or, unchunked, its tokens) do not fit."""
    admitted: list[int] = []
    tokens: list[int] = []
    waiting = state.waiting
    while waiting and len(state.running) + len(admitted) < max_num_seqs and tokens_left > 0:
        page = waiting[0]
        prefill = int(state.target[page])
        take = min(prefill, tokens_left) if chunked else prefill
        blocks = state.pool.blocks_for(take)
        if take > tokens_left or blocks > blocks_free:
            break
        waiting.popleft()
        admitted.append(page)
        tokens.append(take)
        blocks_free -= blocks
        tokens_left -= take
    return admitted, tokens


def _preempt_until_blocks_fit(state: EngineState, run, comp, alloc, new_blocks):
    """Preempt the most recently admitted running pages until the step's new blocks fit the pool; the step's arrays
    without them, and whether any was preempted."""
    preempted = False
    while int(new_blocks.sum()) > state.pool.free:
        state.preempt_last()
        preempted = True
        k = len(state.running)
        run, comp, alloc, new_blocks = run[:k], comp[:k], alloc[:k], new_blocks[:k]
    return run, comp, alloc, new_blocks, preempted


@attrs.frozen
class ChunkedPrefillScheduler:
    """vLLM V1's and SGLang's step: one token budget, running pages first, mixed prefill and decode."""

    max_num_seqs: int
    max_num_batched_tokens: int

    def schedule(self, state: EngineState) -> StepPlan:
        pool = state.pool
        run = np.fromiter(state.running, dtype=np.int64, count=len(state.running))
        comp = state.computed[run]
        tgt = state.target[run]
        prefilling = comp < tgt
        demand = np.where(prefilling, tgt - comp, 1)
        cum = np.cumsum(demand)
        budget = self.max_num_batched_tokens
        alloc = np.minimum(np.maximum(budget - (cum - demand), 0), demand)
        new_blocks = pool.blocks_for(comp + alloc) - pool.held[run]
        run, comp, alloc, new_blocks, preempted = _preempt_until_blocks_fit(state, run, comp, alloc, new_blocks)
        need = int(new_blocks.sum())
        admitted, chunks = [], []
        if not preempted:
            admitted, chunks = _admit(state, self.max_num_seqs, budget - int(alloc.sum()), pool.free - need, True)
        return _admitted_plan(state, run, comp, alloc, new_blocks, admitted, chunks, preempted)


@attrs.frozen
class PrefillFirstScheduler:
    """vLLM V0's step for multimodal models: a prefill-only step whenever a waiting page can be admitted (whole
    prompts within the token budget, FCFS), else a decode-only step of every running page."""

    max_num_seqs: int
    max_num_batched_tokens: int

    def schedule(self, state: EngineState) -> StepPlan:
        pool = state.pool
        empty = np.zeros(0, dtype=np.int64)
        admitted, prompts = _admit(state, self.max_num_seqs, self.max_num_batched_tokens, pool.free, False)
        if admitted:  # the running pages wait for this step
            return _admitted_plan(state, empty, empty, empty, empty, admitted, prompts, False)
        run = np.fromiter(state.running, dtype=np.int64, count=len(state.running))
        comp = state.computed[run]
        alloc = np.ones(len(run), dtype=np.int64)
        new_blocks = pool.blocks_for(comp + 1) - pool.held[run]
        run, comp, alloc, new_blocks, preempted = _preempt_until_blocks_fit(state, run, comp, alloc, new_blocks)
        need = int(new_blocks.sum())
        return _admitted_plan(state, run, comp, alloc, new_blocks, [], [], preempted)


def make_scheduler(policy: str, max_num_seqs: int, max_num_batched_tokens: int):
    if policy == "chunked-prefill":
        return ChunkedPrefillScheduler(max_num_seqs, max_num_batched_tokens)
    if policy == "prefill-first":
        return PrefillFirstScheduler(max_num_seqs, max_num_batched_tokens)
    raise ValueError(f"unknown scheduling policy {policy!r}; known: {', '.join(POLICIES)}")
