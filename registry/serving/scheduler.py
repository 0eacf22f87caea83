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
        need = int(new_blocks.sum())
        preempted = False
        while need > pool.free:
            state.preempt_last()
            preempted = True
            k = len(state.running)
            run, comp, alloc, new_blocks = run[:k], comp[:k], alloc[:k], new_blocks[:k]
            need = int(new_blocks.sum())
        left = budget - int(alloc.sum())
        admitted: list[int] = []
        chunks: list[int] = []
        if not preempted:
            free_after = pool.free - need
            waiting = state.waiting
            while waiting and len(state.running) + len(admitted) < self.max_num_seqs and left > 0:
                i = waiting[0]
                chunk = min(int(state.target[i]), left)
                blocks = pool.blocks_for(chunk)
                if blocks > free_after:
                    break
                waiting.popleft()
                admitted.append(i)
                chunks.append(chunk)
                free_after -= blocks
                left -= chunk
        return _admitted_plan(state, run, comp, alloc, new_blocks, admitted, chunks, preempted)

    def can_admit(self, state: EngineState) -> bool:
        """Whether the next step could admit a waiting page (a pure-decode stretch ends there)."""
        return bool(state.waiting) and len(state.running) < self.max_num_seqs


@attrs.frozen
class PrefillFirstScheduler:
    """vLLM V0's step for multimodal models: a prefill-only step whenever a waiting page can be admitted (whole
    prompts within the token budget, FCFS), else a decode-only step of every running page."""

    max_num_seqs: int
    max_num_batched_tokens: int

    def schedule(self, state: EngineState) -> StepPlan:
        pool = state.pool
        empty = np.zeros(0, dtype=np.int64)
        admitted: list[int] = []
        prompts: list[int] = []
        left = self.max_num_batched_tokens
        free_after = pool.free
        waiting = state.waiting
        while waiting and len(state.running) + len(admitted) < self.max_num_seqs:
            i = waiting[0]
            tokens = int(state.target[i])
            blocks = pool.blocks_for(tokens)
            if tokens > left or blocks > free_after:
                break
            waiting.popleft()
            admitted.append(i)
            prompts.append(tokens)
            free_after -= blocks
            left -= tokens
        if admitted:  # the running pages wait for this step
            return _admitted_plan(state, empty, empty, empty, empty, admitted, prompts, False)
        run = np.fromiter(state.running, dtype=np.int64, count=len(state.running))
        comp = state.computed[run]
        alloc = np.ones(len(run), dtype=np.int64)
        new_blocks = pool.blocks_for(comp + 1) - pool.held[run]
        need = int(new_blocks.sum())
        preempted = False
        while need > pool.free:
            state.preempt_last()
            preempted = True
            k = len(state.running)
            run, comp, alloc, new_blocks = run[:k], comp[:k], alloc[:k], new_blocks[:k]
            need = int(new_blocks.sum())
        return _admitted_plan(state, run, comp, alloc, new_blocks, [], [], preempted)

    def can_admit(self, state: EngineState) -> bool:
        return bool(state.waiting) and len(state.running) < self.max_num_seqs


def make_scheduler(policy: str, max_num_seqs: int, max_num_batched_tokens: int):
    if policy == "chunked-prefill":
        return ChunkedPrefillScheduler(max_num_seqs, max_num_batched_tokens)
    if policy == "prefill-first":
        return PrefillFirstScheduler(max_num_seqs, max_num_batched_tokens)
    raise ValueError(f"unknown scheduling policy {policy!r}; known: {', '.join(POLICIES)}")
