"""A discrete-event simulation of a serving engine serving OCR pages, composed of parts as a real engine is:

- the page feeder: pages are sent (Poisson arrivals, all at t=0, or a closed loop of N clients that send the next
  page when one finishes), then preprocessed by a pool of CPU workers (FCFS); a page reaches the engine's queue only
  when its preprocessing is done;
- the scheduler of the engine's policy (registry.serving.scheduler): a KV block pool and a step plan;
- the GPU step cost from the registry (registry.serving.step_cost.StepCost: the priced operator rows); a
  pure-decode batch is padded to the next CUDA-graph capture size;
- the host model (registry.serving.host): serial host work adds to the step, overlapped host work takes the max
  with the GPU: step = serial + max(GPU, overlapped).

A page's vision encoder runs in the step its prefill starts (again after a preemption); its first token comes from
the step that completes its prefill; it finishes at its new_tokens-th token. Pure-decode stretches with no event (a
page finishing, a page that could be admitted, a missing block) are evaluated in one vectorized leap, equal to
stepping them one by one.

Pure Python + numpy, deterministic: the same inputs and seed give the same results byte for byte.
"""

from __future__ import annotations

import heapq
import math

import attrs
import numpy as np

from analyzer import ranges
from registry.serving.host import NO_HOST, HostModel
from registry.serving.scheduler import POLICIES, BlockPool, EngineState, make_scheduler

Z90 = 1.2815515655446004  # standard normal quantile at 0.9
CPU_PIPELINES = ("streamed", "all-first")


@attrs.frozen
class EngineConfig:
    """The engine's settings. Its defaults are defined here only: a serving scenario that names none gets them (or
    its engine profile's)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    kv_pool_blocks: int | None = None  # default: the step cost's kv_pool_bytes / block bytes
    policy: str = "chunked-prefill"
    capture_sizes: tuple[int, ...] = ()  # CUDA-graph batch sizes a pure-decode batch is padded to; (): none
    cpu_workers: int | None = None  # page preprocessing workers; None: preprocessing takes no time
    cpu_pipeline: str = "streamed"  # all-first: every page is preprocessed before the engine starts
    concurrency: int | None = None  # closed loop: this many pages in flight; None: the pages' own arrivals
    waves: bool = False  # a closed loop that sends `concurrency` pages at once, the next ones when all finished
    render_workers: int = 1  # renderers of pages that are rendered first (Pages.render_s)


@attrs.frozen
class PageMix:
    median: float = 700.0
    p90: float = 1600.0
    max_tokens: int = 8000
    shares: tuple[float, ...] = (1.0,)  # per family of the StepCost, in order


@attrs.define
class Pages:
    arrival: np.ndarray  # seconds; NaN for a closed loop (a page is sent when a client is free)
    family: np.ndarray
    new_tokens: np.ndarray
    preprocess_s: np.ndarray | None = None  # CPU seconds of one worker per page (None: none)
    render_s: np.ndarray | None = None  # CPU seconds of one renderer per page, before preprocessing (None: none)
    # a replayed request trace: each request's own prompt (text + its images' tokens) and image count (0: text only);
    # None: every page is one image of its family, with the family's prompt
    prompt_tokens: np.ndarray | None = None
    images: np.ndarray | None = None


def make_pages(count: int, seed: int, mix: PageMix, rate_per_s: float | None, closed_loop: bool = False,
               preprocess_s_per_family=None, render_s_per_family=None) -> Pages:
    """`count` pages: new tokens lognormal (median, p90, clipped to [1, max]), families by share, Poisson arrivals
    at `rate_per_s` (None: all at t=0; closed_loop: sent by the simulation). The mix does not depend on the rate or
    the arrival pattern (same seed, same pages)."""
    rng = np.random.default_rng(seed)
    mu = math.log(mix.median)
    sigma = max((math.log(mix.p90) - mu) / Z90, 0.0)
    tokens = np.clip(np.rint(rng.lognormal(mu, sigma, count)), 1, mix.max_tokens).astype(np.int64)
    shares = np.asarray(mix.shares, dtype=float)
    family = rng.choice(len(shares), size=count, p=shares / shares.sum()).astype(np.int64)
    gaps = rng.standard_exponential(count)
    if closed_loop:
        arrival = np.full(count, np.nan)
    else:
        arrival = np.zeros(count) if rate_per_s is None else np.cumsum(gaps) / rate_per_s
    preprocess = render = None
    if preprocess_s_per_family is not None:
        preprocess = np.asarray(preprocess_s_per_family, dtype=float)[family]
    if render_s_per_family is not None:
        render = np.asarray(render_s_per_family, dtype=float)[family]
    return Pages(arrival=arrival, family=family, new_tokens=tokens, preprocess_s=preprocess, render_s=render)


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
    busy_s: float  # seconds the engine ran steps
    running_time_integral: float  # sum over steps of running pages x step seconds
    kv_blocks_integral: float  # sum over steps of used blocks x step seconds
    kv_blocks_peak: int
    kv_pool_blocks: int
    scheduled_tokens: int
    gpu_s: float = 0.0  # seconds of GPU work in the steps
    host_wait_s: float = 0.0  # seconds of the steps the GPU waited for the host (serial + overlapped beyond GPU)
    cpu_busy_s: float = 0.0  # CPU-worker seconds of page preprocessing
    cpu_workers: int | None = None
    render_busy_s: float = 0.0  # renderer seconds of page rendering
    render_workers: int = 1
    max_num_seqs: int = 0
    cpu_wait_s: np.ndarray | None = None  # per page: waiting for a CPU worker after it was sent
    engine_wait_s: np.ndarray | None = None  # per page: ready, waiting to be admitted the first time

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
        out.update(self.utilization(span))
        return out

    def utilization(self, span: float) -> dict:
        """Shares of the run's span: GPU busy, GPU waiting for the host, engine idle (no page ready), CPU pool busy;
        and the resource that bounds throughput."""
        span = span if span > 0 else 1.0
        gpu_share = self.gpu_s / span
        host_share = self.host_wait_s / span
        idle_share = max(1.0 - self.busy_s / span, 0.0)
        # the page pipeline's busier stage: rendering (render_workers) or preprocessing (cpu_workers)
        cpu_util = max(self.cpu_busy_s / (self.cpu_workers * span) if self.cpu_workers else 0.0,
                       self.render_busy_s / (self.render_workers * span))
        out = {"gpu_busy_share": gpu_share, "host_wait_share": host_share, "engine_idle_share": idle_share,
               "cpu_utilization": cpu_util}
        out["bound_by"] = self.bound_by(gpu_share, host_share)
        return out

    def bound_by(self, gpu_share: float, host_share: float) -> str:
        """The resource that bounds throughput, from where pages queue: `load` when they hardly wait anywhere (mean
        waits under a tenth of the mean latency: the arrivals, not a resource, set the throughput); `cpu-pool` when
        they wait longer for a preprocessing worker than for admission; otherwise the engine: `kv` when the KV pool
        caps it (it preempted, or ran nearly full with fewer pages than max_num_seqs), else the larger of the GPU's
        and the host's share of the steps (`gpu` or `host`)."""
        cpu_wait = float(np.mean(self.cpu_wait_s)) if self.cpu_wait_s is not None else 0.0
        engine_wait = float(np.mean(self.engine_wait_s)) if self.engine_wait_s is not None else 0.0
        latency = float(np.mean(self.finish - self.arrival))
        if cpu_wait + engine_wait < 0.1 * latency:
            return "load"
        if cpu_wait > engine_wait:
            return "cpu-pool"
        kv_full = self.kv_blocks_peak >= 0.95 * self.kv_pool_blocks
        running = self.running_time_integral / self.busy_s if self.busy_s > 0 else 0.0
        if int(self.preemptions.sum()) > 0 or (kv_full and running < 0.9 * self.max_num_seqs):
            return "kv"
        return "host" if host_share > gpu_share else "gpu"

    def _in_system(self) -> tuple[np.ndarray, np.ndarray]:
        """Event times and the pages sent and not finished after each (a finish before a send at the same time)."""
        times = np.concatenate([self.arrival, self.finish])
        delta = np.concatenate([np.ones(len(self.arrival)), -np.ones(len(self.finish))])
        order = np.lexsort((delta, times))
        return times[order], np.cumsum(delta[order])

    def pages_in_system_mean(self) -> float:
        """Time-average of pages sent and not finished over [first arrival, last finish], from the events."""
        times, counts = self._in_system()
        span = times[-1] - times[0]
        return float((counts[:-1] * np.diff(times)).sum() / span)

    def pages_in_system_max(self) -> int:
        return int(self._in_system()[1].max())


class PageFeeder:
    """Sends pages (their arrivals, or a closed loop of `concurrency` clients, or waves of `concurrency` pages)
    through the page pipeline: a page that is rendered first waits for one of `render_workers` renderers, then for
    one of `workers` preprocessing workers, FCFS in send order; it is ready for the engine when its preprocessing is
    done (all-first: when every page's is). In a closed loop a page that has its own send time (a replayed
    benchmark's rate under a max concurrency) is sent when a client is free and that time has come."""

    def __init__(self, pages: Pages, config: EngineConfig):
        n = len(pages.arrival)
        self.arrival = pages.arrival.copy()
        self.preprocess_s = pages.preprocess_s
        self.render_s = pages.render_s
        self.workers = [0.0] * config.cpu_workers if config.cpu_workers else None
        self.renderers = [0.0] * config.render_workers
        self.cpu_busy_s = 0.0
        self.render_busy_s = 0.0
        self.cpu_wait_s = np.zeros(n)
        self.ready = np.zeros(n)
        self.pending: list[tuple[float, int]] = []  # (ready time, page): a heap
        self.waves = config.waves
        self.wave_left = 0
        self.concurrency = config.concurrency
        if config.concurrency is not None:
            self.planned = pages.arrival  # NaN: sent as soon as a client is free
            self.next_page = 0
            self._send_next(min(config.concurrency, n), 0.0)
        else:
            self.next_page = n
            ready = [(self._preprocessed(int(i), float(self.arrival[i])), int(i))
                     for i in np.argsort(self.arrival, kind="stable")]
            if config.cpu_pipeline == "all-first" and ready:
                last = max(t for t, _ in ready)
                ready = [(last, i) for _, i in ready]
            for t, i in ready:
                self.ready[i] = t
            self.pending = ready
            heapq.heapify(self.pending)

    @staticmethod
    def _stage(pool: list[float], start: float, cost: float) -> float:
        """When a job arriving at `start` and taking `cost` seconds leaves the FCFS pool of workers `pool`."""
        begin = max(start, heapq.heappop(pool))
        heapq.heappush(pool, begin + cost)
        return begin + cost

    def _preprocessed(self, page: int, sent: float) -> float:
        rendered = sent
        if self.render_s is not None:
            cost = float(self.render_s[page])
            rendered = self._stage(self.renderers, sent, cost)
            self.render_busy_s += cost
            self.cpu_wait_s[page] = rendered - cost - sent
        if self.workers is None:
            return rendered
        cost = 0.0 if self.preprocess_s is None else float(self.preprocess_s[page])
        done = self._stage(self.workers, rendered, cost)
        self.cpu_busy_s += cost
        self.cpu_wait_s[page] += done - cost - rendered
        return done

    def send(self, page: int, now: float) -> None:
        self.arrival[page] = now
        ready = self._preprocessed(page, now)
        self.ready[page] = ready
        heapq.heappush(self.pending, (ready, page))

    def _send_next(self, count: int, now: float) -> None:
        for _ in range(count):
            if self.next_page < len(self.arrival):
                planned = self.planned[self.next_page]
                # a client sends the next page when it is free and the page's own send time (if any) has come
                self.send(self.next_page, now if math.isnan(planned) else max(now, float(planned)))
                self.next_page += 1
                self.wave_left += 1

    def finished(self, count: int, now: float) -> None:
        """`count` pages finished at `now`: in a closed loop each frees a client, which sends the next page; in waves
        the next wave is sent when the whole wave finished."""
        if self.concurrency is None:
            return
        self.wave_left -= count
        if not self.waves:
            self._send_next(count, now)
        elif self.wave_left == 0:
            self._send_next(self.concurrency, now)

    def release(self, now: float, waiting) -> None:
        """Pages ready by `now` join the engine's queue."""
        pending = self.pending
        while pending and pending[0][0] <= now:
            waiting.append(heapq.heappop(pending)[1])

    def next_ready(self) -> float | None:
        return self.pending[0][0] if self.pending else None


def check_config(config: EngineConfig) -> None:
    for name, bounds in (("max_num_seqs", ranges.MAX_NUM_SEQS), ("max_num_batched_tokens",
                                                                ranges.MAX_NUM_BATCHED_TOKENS),
                         ("block_size", ranges.BLOCK_SIZE)):
        problem = bounds.problem(getattr(config, name))
        if problem:  # past these the int64 block arithmetic below could overflow (and never end)
            raise ValueError(f"{name} {problem}")
    if config.policy not in POLICIES:
        raise ValueError(f"unknown scheduling policy {config.policy!r}; known: {', '.join(POLICIES)}")
    sizes = config.capture_sizes
    if any(b <= a for a, b in zip(sizes, sizes[1:])) or any(s < 1 for s in sizes):
        raise ValueError("cuda_graph_capture_sizes must be increasing positive integers")
    if config.cpu_workers is not None and config.cpu_workers < 1:
        raise ValueError("cpu_workers must be >= 1")
    if config.render_workers < 1:
        raise ValueError("render_workers must be >= 1")
    if config.waves and config.concurrency is None:
        raise ValueError("waves need a concurrency (the pages of a wave)")
    if config.concurrency is not None and config.concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if config.cpu_pipeline not in CPU_PIPELINES:
        raise ValueError(f"unknown cpu_pipeline {config.cpu_pipeline!r}; known: {', '.join(CPU_PIPELINES)}")
    if config.cpu_pipeline == "all-first" and config.concurrency is not None:
        raise ValueError("cpu_pipeline all-first preprocesses every page before the engine starts: not with a "
                         "closed loop")


@attrs.frozen
class StepRecord:
    """One step of a traced simulation: when it started, its seconds and GPU seconds, its decoding pages, prefill
    tokens and admitted pages."""

    start_s: float
    seconds: float
    gpu_s: float
    decoding: int
    prefill_tokens: int
    admitted: int


def simulate(cost, config: EngineConfig, pages: Pages, progress=None, host: HostModel = NO_HOST,
             leap: bool = True, trace: list | None = None) -> SimResult:
    """Run the engine over `pages` until every page finished. `progress(done)` is called now and then; `leap`
    False steps every pure-decode step one by one (the same results); `trace`, a list, receives a StepRecord per
    step."""
    check_config(config)
    n = len(pages.arrival)
    bs = config.block_size
    pool_blocks = config.kv_pool_blocks
    if pool_blocks is None:
        pool_blocks = int(cost.kv_pool_bytes // (bs * cost.kv_bytes_per_token))
    if pages.prompt_tokens is not None:
        prompt = np.asarray(pages.prompt_tokens, dtype=np.int64)
    else:
        prompt = np.array([f.prefill_tokens for f in cost.families], dtype=np.int64)[pages.family]
    images = None if pages.images is None else np.asarray(pages.images, dtype=float)
    largest = int(((prompt + pages.new_tokens + bs - 1) // bs).max()) if n else 0
    if largest > pool_blocks:
        raise ValueError(f"the KV pool ({pool_blocks} blocks of {bs} tokens) cannot hold the longest page "
                         f"({largest} blocks)")
    if n and config.max_num_batched_tokens < 1:
        raise ValueError("max_num_batched_tokens must be >= 1")
    pool = BlockPool(pool_blocks, bs, n)
    state = EngineState(prompt, pages.new_tokens.astype(np.int64), pages.family, pool)
    scheduler = make_scheduler(config.policy, config.max_num_seqs, config.max_num_batched_tokens)
    feeder = PageFeeder(pages, config)
    capture = np.asarray(config.capture_sizes, dtype=np.int64)
    vision_s = np.array([f.vision_s for f in cost.families])
    new_tokens = state.new_tokens
    generated = state.generated
    first_token = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    admitted_at = np.full(n, np.nan)
    now = 0.0
    steps = 0
    busy = run_int = kv_int = gpu_total = host_wait = 0.0
    kv_peak = 0
    scheduled = 0
    done = 0
    next_report = 0

    def padded(b: int) -> int:
        """The CUDA-graph batch a pure decode of b pages replays (b itself past the largest captured size)."""
        if not len(capture):
            return b
        index = int(np.searchsorted(capture, b))
        return int(capture[index]) if index < len(capture) else b

    def retire(ended) -> None:
        """Pages that emitted their last token leave at `now` (freeing their blocks and, in a closed loop, their
        client)."""
        nonlocal done, next_report
        if not len(ended):
            return
        finish[ended] = now
        pool.release(ended)
        ended_set = set(ended.tolist())
        state.running = [i for i in state.running if i not in ended_set]
        done += len(ended)
        feeder.finished(len(ended), now)
        if progress is not None and done >= next_report:
            progress(done)
            next_report = done + max(n // 20, 1)

    while done < n:
        feeder.release(now, state.waiting)
        if not state.running and not state.waiting:
            now = max(now, feeder.next_ready())
            continue
        run = np.fromiter(state.running, dtype=np.int64, count=len(state.running))
        comp = state.computed[run]
        if leap and len(run) and not (comp < state.target[run]).any() and len(run) <= config.max_num_batched_tokens:
            k, times, gpu, need = _decode_run_length(cost, host, scheduler, state, run, comp, feeder, now, padded)
            if k:  # k pure-decode steps with no event before the last: one vectorized leap
                b = len(run)
                if trace is not None:
                    starts = now + np.cumsum(times) - times
                    trace.extend(StepRecord(float(t0), float(dt), float(g), b, 0, 0)
                                 for t0, dt, g in zip(starts, times, gpu))
                used = pool.used + need
                kv_peak = max(kv_peak, int(used[-1]))
                span = float(times.sum())
                run_int += b * span
                kv_int += float((used * times).sum())
                busy += span
                gpu_total += float(gpu.sum())
                host_wait += span - float(gpu.sum())
                now += span
                steps += k
                scheduled += b * k
                state.computed[run] = comp + k
                pool.grow(run, pool.extra(run, comp + k))
                generated[run] += k
                retire(run[generated[run] >= new_tokens[run]])
                continue
        plan = scheduler.schedule(state)
        run, comp, alloc = plan.run, plan.comp, plan.alloc
        prefilling = plan.prefilling
        decoding = ~prefilling & (alloc > 0)
        b = int(decoding.sum())
        context = float(comp[decoding].sum())
        pre_alloc = np.where(prefilling, alloc, 0)
        p = float(pre_alloc.sum())
        q = float((pre_alloc * (pre_alloc + 2 * comp)).sum())
        vision = None
        if plan.admitted:
            fresh_admitted = np.array(plan.admitted)
            fresh_admitted = fresh_admitted[np.isnan(admitted_at[fresh_admitted])]
            admitted_at[fresh_admitted] = now
            vision = np.bincount(state.family[plan.admitted], minlength=len(vision_s),
                                 weights=None if images is None else images[plan.admitted]).astype(float)
        gpu_s = cost.step_time(b if p > 0 else padded(b), context, p, q, vision)
        emits = plan.emits
        emitted = run[emits]
        if host.zero:
            dt = gpu_s
        else:
            history = generated[emitted]
            serial_s, overlapped_s = host.step(int((alloc > 0).sum()), len(emitted), float(history.sum()),
                                               host.window_tokens(history))
            dt = serial_s + max(gpu_s, overlapped_s)
        if trace is not None:
            trace.append(StepRecord(now, dt, gpu_s, b, int(p), len(plan.admitted)))
        # account the step
        used = pool.used + int(plan.new_blocks.sum())
        kv_peak = max(kv_peak, used)
        run_int += len(state.running) * dt
        kv_int += used * dt
        busy += dt
        gpu_total += gpu_s
        host_wait += dt - gpu_s
        now += dt
        steps += 1
        scheduled += int(alloc.sum())
        state.computed[run] = comp + alloc
        pool.grow(run, plan.new_blocks)
        generated[emitted] += 1
        fresh = emitted[np.isnan(first_token[emitted])]
        first_token[fresh] = now
        retire(emitted[generated[emitted] >= new_tokens[emitted]])
    return SimResult(arrival=feeder.arrival, first_token=first_token, finish=finish, prompt_tokens=prompt,
                     new_tokens=new_tokens, family=pages.family, preemptions=state.preemptions, emitted=generated,
                     steps=steps, busy_s=busy, running_time_integral=run_int, kv_blocks_integral=kv_int,
                     kv_blocks_peak=kv_peak, kv_pool_blocks=pool_blocks, scheduled_tokens=scheduled, gpu_s=gpu_total,
                     host_wait_s=host_wait, cpu_busy_s=feeder.cpu_busy_s, cpu_workers=config.cpu_workers,
                     render_busy_s=feeder.render_busy_s, render_workers=config.render_workers,
                     max_num_seqs=config.max_num_seqs, cpu_wait_s=feeder.cpu_wait_s,
                     engine_wait_s=admitted_at - feeder.ready)


MAX_LEAP = 256


def _decode_run_length(cost, host: HostModel, scheduler, state: EngineState, run, comp, feeder: PageFeeder,
                       now: float, padded) -> tuple[int, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """How many pure-decode steps run before anything else can happen (a page finishes, a waiting page could be
    admitted, a block is missing), their times and GPU times, and the blocks they take; 0 when the next step must
    take the general path."""
    generated, new_tokens = state.generated, state.new_tokens
    k = int(min((new_tokens[run] - generated[run]).min(), MAX_LEAP))
    can_admit = len(state.running) < scheduler.max_num_seqs
    if can_admit and state.waiting:
        return 0, None, None, None  # the scheduler may admit it this step
    b = len(run)
    b_graph = padded(b)
    c0 = float(comp.sum())
    upcoming = feeder.next_ready() if can_admit else None

    def times_of(steps: int):
        gpu = cost.decode_series(b_graph, c0, steps, context_step=b)
        if host.zero:
            return gpu, gpu
        serial, overlapped = host.decode_series(generated[run], steps)
        return serial + np.maximum(gpu, overlapped), gpu

    if upcoming is not None:
        # a step takes at least its GPU time, and steps only get longer with context: no more than gap / the first
        # step's GPU time + 1 of them start before the next page is ready
        first_gpu = float(cost.decode_series(b_graph, c0, 1, context_step=b)[0])
        k = max(min(k, int((upcoming - now) / first_gpu) + 1), 1)
    times, gpu = times_of(k)
    if upcoming is not None:  # the steps that start before the next page is ready
        starts = np.cumsum(times) - times
        k = int(np.searchsorted(starts, upcoming - now, side="left"))
    if k <= 0:
        return 0, None, None, None
    need = _blocks_needed(state.pool, run, comp, k)
    fits = need <= state.pool.free
    if not fits.all():
        k = int(np.argmin(fits))  # steps before the first that lacks a block
    return k, times[:k], gpu[:k], need[:k]


def _blocks_needed(pool: BlockPool, run: np.ndarray, comp: np.ndarray, steps: int) -> np.ndarray:
    """New KV blocks the pages of `run` need in total after 1..steps more tokens each. A page with d free token
    slots in the blocks it holds needs ceil((j - d) / block_size) new blocks after j tokens (none while j <= d), so
    the total is the count over m >= 0 of pages with d < j - m x block_size: one sorted search of the free slots."""
    bs = pool.block_size
    free_slots = np.sort(pool.held[run] * bs - comp)
    j = np.arange(1, steps + 1)
    rounds = np.arange(0, (steps + bs - 1) // bs + 1) * bs
    queries = j[None, :] - rounds[:, None]
    return np.searchsorted(free_slots, queries, side="left").sum(axis=0)


def saturated_bound_pages_per_s(cost, config: EngineConfig, mean_new_tokens: float) -> float:
    """An upper bound on pages/s: no step emits more tokens per second than a pure-decode step of b pages at no
    context, b up to max_num_seqs (b tokens in decode_time(b, 0)); a page emits new_tokens tokens."""
    b = np.arange(1, config.max_num_seqs + 1, dtype=float)
    tokens_per_s = float((b / cost.decode_time(b, np.zeros_like(b))).max())
    return tokens_per_s / mean_new_tokens
