"""A discrete-event simulation of a vLLM V1 engine serving OCR pages (../shared/DESIGN.md section 9).

Each step: pass 1 walks the running pages in admission order, each taking min(its remaining tokens, the budget
left) of `max_num_batched_tokens` (1 for a decoding page, the rest of its prefill, chunked, for one that is
prefilling); pass 2 admits waiting pages FCFS while running < `max_num_seqs` and budget is left, chunking their
prefill into it. A page's vision encoder runs in the step its prefill starts (again after a preemption). KV lives
in `block_size`-token blocks of a pool of kv_pool_bytes / (block_size x KV bytes per token); when a step's blocks
cannot be allocated the most recently admitted running page is preempted (its blocks freed, back at the head of
the queue, recomputed from zero with the tokens it already generated), and no page is admitted in that step.
A page's first token comes from the step that completes its prefill; it finishes at its new_tokens-th token.
The time of every step comes from registry.serving.step_cost.StepCost (the registry's priced operator rows).

Pure Python + numpy, deterministic: the same inputs and seed give the same results byte for byte.
"""

from __future__ import annotations

import collections
import math

import attrs
import numpy as np

from analyzer import ranges

Z90 = 1.2815515655446004  # standard normal quantile at 0.9


@attrs.frozen
class EngineConfig:
    """The engine's settings. Its defaults are defined here only: a serving scenario that names none gets them."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    kv_pool_blocks: int | None = None  # default: the step cost's kv_pool_bytes / block bytes


@attrs.frozen
class PageMix:
    median: float = 700.0
    p90: float = 1600.0
    max_tokens: int = 8000
    shares: tuple[float, ...] = (1.0,)  # per family of the StepCost, in order


@attrs.define
class Pages:
    arrival: np.ndarray
    family: np.ndarray
    new_tokens: np.ndarray


def make_pages(count: int, seed: int, mix: PageMix, rate_per_s: float | None) -> Pages:
    """`count` pages: new tokens lognormal (median, p90, clipped to [1, max]), families by share, Poisson arrivals
    at `rate_per_s` (None: all at t=0). The mix does not depend on the rate (same seed, same pages)."""
    rng = np.random.default_rng(seed)
    mu = math.log(mix.median)
    sigma = max((math.log(mix.p90) - mu) / Z90, 0.0)
    tokens = np.clip(np.rint(rng.lognormal(mu, sigma, count)), 1, mix.max_tokens).astype(np.int64)
    shares = np.asarray(mix.shares, dtype=float)
    family = rng.choice(len(shares), size=count, p=shares / shares.sum()).astype(np.int64)
    gaps = rng.standard_exponential(count)
    arrival = np.zeros(count) if rate_per_s is None else np.cumsum(gaps) / rate_per_s
    return Pages(arrival=arrival, family=family, new_tokens=tokens)


@attrs.define
class SimResult:
    arrival: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    prompt_tokens: np.ndarray
    new_tokens: np.ndarray
    family: np.ndarray
    preemptions: np.ndarray
    emitted: np.ndarray  # tokens each page emitted (its new_tokens once finished)
    steps: int
    busy_s: float
    running_time_integral: float  # sum over steps of running pages x step seconds
    kv_blocks_integral: float  # sum over steps of used blocks x step seconds
    kv_blocks_peak: int
    kv_pool_blocks: int
    scheduled_tokens: int

    def summary(self) -> dict:
        n = len(self.arrival)
        start, end = float(self.arrival.min()), float(self.finish.max())
        span = end - start
        latency = self.finish - self.arrival
        ttft = self.first_token - self.arrival
        multi = self.new_tokens > 1
        tpot = (self.finish[multi] - self.first_token[multi]) / (self.new_tokens[multi] - 1)
        out = {"pages": n, "duration_s": span, "pages_per_s": n / span if span > 0 else None,
               "output_tokens_per_s": float(self.new_tokens.sum()) / span if span > 0 else None}
        for name, values in (("ttft", ttft), ("tpot", tpot), ("page_latency", latency)):
            for q in (50, 90, 99):
                out[f"{name}_p{q}_s"] = float(np.percentile(values, q)) if len(values) else None
        out["mean_page_latency_s"] = float(latency.mean())
        out["mean_running_pages"] = float(self.running_time_integral) / self.busy_s if self.busy_s > 0 else 0.0
        out["kv_pool_use_mean"] = float(self.kv_blocks_integral / self.busy_s / self.kv_pool_blocks
                                   if self.busy_s > 0 else 0.0)
        out["kv_pool_use_peak"] = self.kv_blocks_peak / self.kv_pool_blocks
        out["preemptions"] = int(self.preemptions.sum())
        out["steps"] = self.steps
        return out

    def pages_in_system_mean(self) -> float:
        """Time-average of pages arrived and not finished over [first arrival, last finish], from the events."""
        times = np.concatenate([self.arrival, self.finish])
        delta = np.concatenate([np.ones(len(self.arrival)), -np.ones(len(self.finish))])
        order = np.lexsort((delta, times))
        times, delta = times[order], delta[order]
        counts = np.cumsum(delta)
        span = times[-1] - times[0]
        return float((counts[:-1] * np.diff(times)).sum() / span)


def simulate(cost, config: EngineConfig, pages: Pages, progress=None) -> SimResult:
    """Run the engine over `pages` until every page finished. `progress(done)` is called now and then."""
    for name, bounds in (("max_num_seqs", ranges.MAX_NUM_SEQS), ("max_num_batched_tokens",
                                                                ranges.MAX_NUM_BATCHED_TOKENS),
                         ("block_size", ranges.BLOCK_SIZE)):
        problem = bounds.problem(getattr(config, name))
        if problem:  # past these the int64 block arithmetic below could overflow (and never end)
            raise ValueError(f"{name} {problem}")
    n = len(pages.arrival)
    bs = config.block_size
    pool = config.kv_pool_blocks
    if pool is None:
        pool = int(cost.kv_pool_bytes // (bs * cost.kv_bytes_per_token))
    prompt = np.array([f.prefill_tokens for f in cost.families], dtype=np.int64)[pages.family]
    largest = int(((prompt + pages.new_tokens + bs - 1) // bs).max()) if n else 0
    if largest > pool:
        raise ValueError(f"the KV pool ({pool} blocks of {bs} tokens) cannot hold the longest page "
                         f"({largest} blocks)")
    budget = config.max_num_batched_tokens
    if n and budget < 1:
        raise ValueError("max_num_batched_tokens must be >= 1")
    vision_s = np.array([f.vision_s for f in cost.families])
    new_tokens = pages.new_tokens.astype(np.int64)
    family = pages.family
    arrival = pages.arrival
    computed = np.zeros(n, dtype=np.int64)  # tokens whose KV is in the pool
    target = prompt.copy()  # tokens to prefill before the next token: prompt + tokens generated before a preemption
    generated = np.zeros(n, dtype=np.int64)
    blocks = np.zeros(n, dtype=np.int64)
    first_token = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    preemptions = np.zeros(n, dtype=np.int64)
    waiting = collections.deque(int(i) for i in np.argsort(arrival, kind="stable"))
    running: list[int] = []
    free = pool
    now = 0.0
    steps = 0
    busy = run_int = kv_int = 0.0
    kv_peak = 0
    scheduled = 0
    done = 0
    next_report = 0

    def retire(ended) -> int:
        """Pages that emitted their last token leave at `now`; returns the KV blocks they free."""
        nonlocal running, done, next_report
        if not len(ended):
            return 0
        finish[ended] = now
        freed = int(blocks[ended].sum())
        blocks[ended] = 0
        ended_set = set(ended.tolist())
        running = [i for i in running if i not in ended_set]
        done += len(ended)
        if progress is not None and done >= next_report:
            progress(done)
            next_report = done + max(n // 20, 1)
        return freed

    while done < n:
        if not running and waiting and arrival[waiting[0]] > now:
            now = float(arrival[waiting[0]])
        run = np.fromiter(running, dtype=np.int64, count=len(running))
        comp = computed[run]
        tgt = target[run]
        prefilling = comp < tgt
        if len(run) and not prefilling.any() and len(run) <= budget:
            k, times, need = _decode_run_length(cost, run, comp, blocks, generated, new_tokens, free, bs, now,
                                                arrival, waiting, len(running) < config.max_num_seqs)
            if k:  # k pure-decode steps with no event before the last: one vectorized leap
                b = len(run)
                used = pool - free + need
                kv_peak = max(kv_peak, int(used[-1]))
                run_int += b * float(times.sum())
                kv_int += float((used * times).sum())
                busy += float(times.sum())
                now += float(times.sum())
                steps += k
                scheduled += b * k
                computed[run] = comp + k
                blocks[run] = np.maximum(blocks[run], (comp + k + bs - 1) // bs)
                free = pool - int(used[-1])
                generated[run] += k
                free += retire(run[generated[run] >= new_tokens[run]])
                continue
        demand = np.where(prefilling, tgt - comp, 1)
        cum = np.cumsum(demand)
        alloc = np.minimum(np.maximum(budget - (cum - demand), 0), demand)
        new_blocks = (comp + alloc + bs - 1) // bs - blocks[run]
        need = int(new_blocks.sum())
        preempted = False
        while need > free:  # preempt the most recently admitted running page
            victim = running.pop()
            preempted = True
            free += int(blocks[victim])
            blocks[victim] = 0
            computed[victim] = 0
            target[victim] = prompt[victim] + generated[victim]
            preemptions[victim] += 1
            waiting.appendleft(victim)
            k = len(running)
            run, comp, tgt, prefilling, alloc, new_blocks = (run[:k], comp[:k], tgt[:k], prefilling[:k],
                                                             alloc[:k], new_blocks[:k])
            need = int(new_blocks.sum())
        left = budget - int(alloc.sum())
        admitted: list[int] = []
        admitted_alloc: list[int] = []
        vision = np.zeros(len(vision_s))
        if not preempted:
            free_after = free - need
            while waiting and len(running) + len(admitted) < config.max_num_seqs and left > 0:
                i = waiting[0]
                if arrival[i] > now:
                    break
                chunk = min(int(target[i]), left)
                nb = (chunk + bs - 1) // bs
                if nb > free_after:
                    break
                waiting.popleft()
                admitted.append(i)
                admitted_alloc.append(chunk)
                free_after -= nb
                left -= chunk
                vision[family[i]] += 1
        if admitted:
            adm = np.array(admitted, dtype=np.int64)
            run = np.concatenate([run, adm])
            comp = np.concatenate([comp, np.zeros(len(adm), dtype=np.int64)])
            tgt = np.concatenate([tgt, target[adm]])
            prefilling = np.concatenate([prefilling, np.ones(len(adm), dtype=bool)])
            alloc = np.concatenate([alloc, np.array(admitted_alloc, dtype=np.int64)])
            new_blocks = np.concatenate([new_blocks, (alloc[-len(adm):] + bs - 1) // bs])
            running.extend(admitted)
        decoding = ~prefilling & (alloc > 0)
        b = int(decoding.sum())
        context = float(comp[decoding].sum())
        pre_alloc = np.where(prefilling, alloc, 0)
        p = float(pre_alloc.sum())
        q = float((pre_alloc * (pre_alloc + 2 * comp)).sum())
        dt = cost.step_time(b, context, p, q, vision if vision.any() else None)
        # account the step
        used = pool - free + int(new_blocks.sum())
        kv_peak = max(kv_peak, used)
        run_int += len(running) * dt
        kv_int += used * dt
        busy += dt
        now += dt
        steps += 1
        scheduled += int(alloc.sum())
        computed[run] = comp + alloc
        blocks[run] += new_blocks
        free = pool - used
        emits = (alloc > 0) & (comp + alloc >= tgt)
        emitted = run[emits]
        generated[emitted] += 1
        fresh = emitted[np.isnan(first_token[emitted])]
        first_token[fresh] = now
        free += retire(emitted[generated[emitted] >= new_tokens[emitted]])
    return SimResult(arrival=arrival.copy(), first_token=first_token, finish=finish, prompt_tokens=prompt,
                     new_tokens=new_tokens, family=family, preemptions=preemptions, emitted=generated, steps=steps, busy_s=busy,
                     running_time_integral=run_int, kv_blocks_integral=kv_int, kv_blocks_peak=kv_peak,
                     kv_pool_blocks=pool, scheduled_tokens=scheduled)


MAX_LEAP = 256


def _decode_run_length(cost, run, comp, blocks, generated, new_tokens, free, bs, now, arrival, waiting,
                       can_admit) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """How many pure-decode steps run before anything else can happen (a page finishes, a waiting page could be
    admitted, a block is missing), and their times; 0 when the next step must take the general path."""
    k = int(min((new_tokens[run] - generated[run]).min(), MAX_LEAP))
    if can_admit and waiting and arrival[waiting[0]] <= now:
        return 0, None, None  # pass 2 may admit it this step
    b = len(run)
    c0 = float(comp.sum())
    if can_admit and waiting:  # steps only get longer with context: no more than gap / first step + 1 of them
        first = float(cost.decode_series(b, c0, 1)[0])
        k = max(min(k, int((arrival[waiting[0]] - now) / first) + 1), 1)
    times = cost.decode_series(b, c0, k)
    if can_admit and waiting:
        starts = np.cumsum(times) - times
        k = int(np.searchsorted(starts, arrival[waiting[0]] - now, side="left"))
    if k <= 0:
        return 0, None, None
    after = comp[:, None] + np.arange(1, k + 1)[None, :]
    need = np.maximum((after + bs - 1) // bs - blocks[run][:, None], 0).sum(axis=0)
    fits = need <= free
    if not fits.all():
        k = int(np.argmin(fits))  # steps before the first that lacks a block
    return k, times[:k], need[:k]


def saturated_bound_pages_per_s(cost, config: EngineConfig, mean_new_tokens: float) -> float:
    """An upper bound on pages/s: no step emits more tokens per second than a pure-decode step of b pages at no
    context, b up to max_num_seqs (b tokens in decode_time(b, 0)); a page emits new_tokens tokens."""
    b = np.arange(1, config.max_num_seqs + 1, dtype=float)
    tokens_per_s = float((b / cost.decode_time(b, np.zeros_like(b))).max())
    return tokens_per_s / mean_new_tokens
