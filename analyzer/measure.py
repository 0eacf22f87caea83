"""`dsocr-registry measure`: time the real transformers model (random bf16 weights, no download) on a CUDA GPU
and write a measurement file in the documented format, timing with CUDA events after warm-up, median of
repetitions.

Sections (`--kinds`, all by default):
- `ceiling`: the card's bf16 matmul rate, device copy bandwidth and the cost of a tiny eager kernel.
- `vision`: the vision tower and the projector per view size and batch.
- `prefill`: the language model over a fresh cache, logits for the last position.
- `end_to_end`: vision + projector + prefill + greedy decode in eager mode (transformers' DynamicCache).
- `profile`: torch.profiler over one call of a stage: kernels launched, aten calls, kernel time, host syncs.
- `graph_decode`: one decode step with a static KV cache (written in place, read once by attention), replayed
  from a CUDA graph, and the same step run eagerly, at several batch x context points.

The file is rewritten (atomically) after each section, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import pathlib
import platform
import statistics
import sys

from analyzer.errors import AnalyzerInputError
from analyzer.fileio import write_text_atomic

KINDS = ("ceiling", "vision", "prefill", "end_to_end", "profile", "graph_decode")

KIND_LEGEND = {
    "ceiling": "card ceilings: 8192^3 bf16 matmul rate; 2 GiB device-to-device copy (bytes read + written per "
               "second); 1000 tiny eager kernels (per-kernel launch cost)",
    "vision_tower": "model.vision_tower(pixel_values) for `batch` views of `image` x `image` pixels",
    "projector": "model.multi_modal_projector on those features",
    "prefill": "language model only: inputs_embeds of `batch` x `tokens`, fresh DynamicCache, then lm_head on the "
               "last position and argmax",
    "end_to_end_views": "vision tower + projector on `batch` global views of `global_image` px and `batch` x "
                        "`tiles` tile views of `tile_image` px, concat with `prompt_tokens` text embeddings, "
                        "prefill, then greedy decode (argmax) until `new_tokens` tokens with transformers' "
                        "DynamicCache, one call of the whole loop",
    "profile_decode": "torch.profiler over one eager decode step (input_ids, DynamicCache holding `context` "
                      "tokens): kernels launched, aten calls (all, and outermost), summed kernel time "
                      "(device_busy_us), host synchronisations; by_aten_op: per aten op its calls and the kernels "
                      "and copies it launched itself",
    "profile_vision": "as profile_decode, over one vision_tower call on `batch` views of `image` px",
    "profile_prefill": "as profile_decode, over one prefill of `tokens` tokens",
    "graph_decode": "one decode step (embed, decoder over a StaticCache of `context` tokens written in place, "
                    "lm_head, argmax) at `batch`, replayed from a CUDA graph",
    "eager_static_decode": "the graph_decode step run eagerly (no graph), same cache and shapes",
}


def _timed(torch, fn, reps: int, warmup: int = 2, before=None) -> dict:
    """CUDA-event time of `fn`; `before` runs untimed ahead of each call (e.g. resetting a cache position)."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if before:
            before()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": reps}


def _short(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def _progress(message: str) -> None:
    print(f"measure: {message}", file=sys.stderr, flush=True)


def _profiled(torch, fn, before=None) -> dict:
    """Kernels, aten calls and kernel time of one call of `fn` (after one warm-up call); `before` runs unprofiled
    ahead of each call."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if before:
        before()
    fn()
    torch.cuda.synchronize()
    if before:
        before()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))]
    copies = [e for e in events if e.device_type == DeviceType.CUDA and e.name.startswith(("Memcpy", "Memset"))]
    aten = [e for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")]

    def outermost(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    syncs = [e for e in events if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                             "cudaEventSynchronize", "cudaMemcpy")]
    # Per aten op: calls, and the kernels and copies launched directly by it (not by the ops it calls).
    by_op: dict[str, list[int]] = {}
    for e in aten:
        entry = by_op.setdefault(e.name[len("aten::"):], [0, 0, 0, 0.0])
        entry[0] += 1
        for k in e.kernels:
            if k.name.startswith(("Memcpy", "Memset")):
                entry[2] += 1
            else:
                entry[1] += 1
            entry[3] += k.duration
    return {"kernels": len(kernels), "copies": len(copies), "aten_calls": len(aten),
            "aten_calls_outermost": sum(1 for e in aten if outermost(e)),
            "device_busy_us": sum(e.time_range.elapsed_us() for e in kernels),
            "host_syncs": len(syncs) - 1,  # less the synchronize that ends the profiled call
            "by_aten_op": {name: {"calls": c, "kernels": k, "copies": m, "kernel_us": round(us, 3)}
                           for name, (c, k, m, us) in sorted(by_op.items())}}


def _ceilings(torch, device: str) -> list[dict]:
    rows = []
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    t = _timed(torch, lambda: a @ b, 10, warmup=3)
    rows.append({"kind": "ceiling", "what": "bf16_matmul_8192", "tflops": 2 * 8192 ** 3 / t["median_ms"] / 1e9, **t})
    src = torch.empty(2 ** 30, device=device, dtype=torch.int16)
    dst = torch.empty_like(src)
    t = _timed(torch, lambda: dst.copy_(src), 10, warmup=3)
    rows.append({"kind": "ceiling", "what": "d2d_copy_2GiB",
                 "tbps_read_plus_write": 2 * 2 ** 31 / t["median_ms"] / 1e9, **t})
    tiny = torch.zeros(1, device=device)

    def thousand():
        for _ in range(1000):
            tiny.add_(1)

    t = _timed(torch, thousand, 5)
    rows.append({"kind": "ceiling", "what": "1000_tiny_kernels_eager", "per_kernel_us": t["median_ms"], **t})
    del a, b, src, dst
    torch.cuda.empty_cache()
    return rows


def measure(variant: str, device: str, out: pathlib.Path, reps: int = 5, quick: bool = False,
            kinds: tuple[str, ...] = KINDS) -> int:
    import torch
    import transformers

    from analyzer.architecture import instantiate
    from analyzer.variants import model_variant

    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise AnalyzerInputError(f"--kinds: unknown kind {unknown[0]!r}; expected some of: {', '.join(KINDS)}")
    if not device.startswith("cuda"):
        raise AnalyzerInputError(f"--device {device}: measure times CUDA kernels; give a CUDA device such as cuda:0")
    if not torch.cuda.is_available():
        raise AnalyzerInputError("no CUDA device is available here (torch.cuda.is_available() is False); "
                                 "run measure on a machine with an NVIDIA GPU")
    described = model_variant(variant)
    variant, name = described.name, described.measurement_name  # the name measurement rows give it
    rows: list[dict] = []
    props = torch.cuda.get_device_properties(device)
    env = {"gpu": torch.cuda.get_device_name(device), "sm_count": props.multi_processor_count,
           "memory_bytes": props.total_memory, "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(), "runtime": "hf-eager",
           "dtype": "bfloat16", "weights": "random (seed 0), same shapes as the released checkpoints",
           "attention": "sdpa", "experts_implementation": "grouped_mm unless a row says otherwise",
           "timing": "CUDA events around each call, median of reps after warm-up",
           "kinds": {k: v for k, v in KIND_LEGEND.items() if k != "ceiling" or "ceiling" in kinds}}

    def save(section: str) -> None:
        write_text_atomic(out, json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
        _progress(f"{name} {section}: {len(rows)} rows so far -> {out}")

    if "ceiling" in kinds:
        rows.extend(_ceilings(torch, device))
        save("ceiling")

    torch.manual_seed(0)
    model = instantiate(variant, device)  # random weights; transformers' default experts path on CUDA
    text = model.config.text_config
    modes = described.modes.values()
    global_px = max(m.global_px for m in modes)
    tile_px = max((m.tile_px for m in modes if m.tile_px), default=0)
    views = sorted({m.global_px for m in modes} | {m.tile_px for m in modes if m.tile_px})

    def vision_features(pixels):
        return model.model.vision_tower(pixels).last_hidden_state

    with torch.no_grad():
        if "vision" in kinds:
            for px in views:
                for batch in ([1, 8] if quick else [1, 2, 8, 32]):
                    point = {"variant": name, "image": px, "batch": batch}
                    try:
                        pixels = torch.randn(batch, 3, px, px, device=device, dtype=torch.bfloat16)
                        features = vision_features(pixels)
                        rows.append({"kind": "vision_tower", **point, "tokens_per_view": features.shape[1],
                                     **_timed(torch, lambda: model.model.vision_tower(pixels), reps)})
                        rows.append({"kind": "projector", **point, "tokens_per_view": features.shape[1],
                                     **_timed(torch, lambda: model.model.multi_modal_projector(features), reps)})
                    except torch.cuda.OutOfMemoryError as error:
                        rows.append({"kind": "vision_tower", **point, "error": _short(error)})
                    pixels = features = None
                    torch.cuda.empty_cache()
            torch.cuda.empty_cache()
            save("vision")

        def prefill_fn(embeds):
            def run():
                hidden = model.model.language_model(inputs_embeds=embeds, use_cache=True).last_hidden_state
                return model.lm_head(hidden[:, -1:]).argmax(-1)
            return run

        if "prefill" in kinds:
            for tokens, batch in ([(300, 1), (1024, 1)] if quick else [(300, 1), (1024, 1), (4096, 1), (1024, 4)]):
                embeds = torch.randn(batch, tokens, text.hidden_size, device=device, dtype=torch.bfloat16)
                rows.append({"kind": "prefill", "variant": name, "experts": "grouped_mm", "tokens": tokens,
                             "batch": batch, **_timed(torch, prefill_fn(embeds), reps)})
            save("prefill")

        def generate_fn(batch, tiles, new_tokens, prompt_tokens=20):
            pixels = torch.randn(batch, 3, global_px, global_px, device=device, dtype=torch.bfloat16)
            tile_pixels = (torch.randn(batch * tiles, 3, tile_px, tile_px, device=device, dtype=torch.bfloat16)
                           if tiles else None)
            prompt = torch.randint(0, text.vocab_size, (batch, prompt_tokens), device=device)

            def generate():
                parts = [model.model.multi_modal_projector(vision_features(pixels))]
                if tile_pixels is not None:
                    tile_feats = model.model.multi_modal_projector(vision_features(tile_pixels))
                    parts.insert(0, tile_feats.reshape(batch, -1, tile_feats.shape[-1]))
                embeds = torch.cat([*parts, model.model.language_model.embed_tokens(prompt)], dim=1)
                out = model.model.language_model(inputs_embeds=embeds, use_cache=True)
                cache, hidden = out.past_key_values, out.last_hidden_state
                token = model.lm_head(hidden[:, -1:]).argmax(-1)
                for _ in range(new_tokens - 1):
                    out = model.model.language_model(input_ids=token, past_key_values=cache, use_cache=True)
                    cache = out.past_key_values
                    token = model.lm_head(out.last_hidden_state).argmax(-1)
            return generate

        global_tokens = described.feature_tokens(global_px)
        tile_tokens = described.feature_tokens(tile_px)
        if "end_to_end" in kinds:
            points = [(1, 0, 32)] if quick else [(1, 0, 256), (8, 0, 256), (1, 6, 256), (32, 0, 64)]
            for batch, tiles, new_tokens in points:
                context = global_tokens + tiles * tile_tokens + 20
                point = {"kind": "end_to_end_views", "variant": name, "global_image": global_px,
                         "tile_image": tile_px if tiles else 0, "tiles": tiles, "batch": batch,
                         "prompt_tokens": 20, "new_tokens": new_tokens, "prefill_context": context,
                         "experts": "grouped_mm"}
                try:
                    rows.append({**point, **_timed(torch, generate_fn(batch, tiles, new_tokens), max(1, reps // 2),
                                                   warmup=1)})
                except torch.cuda.OutOfMemoryError as error:
                    rows.append({**point, "error": _short(error)})
                torch.cuda.empty_cache()
            save("end_to_end")

        if "profile" in kinds:
            for context in (512,) if quick else (512, 2048):
                cache = _dynamic_cache(torch, model, context, 1, device)
                token = torch.zeros(1, 1, dtype=torch.long, device=device)

                def decode_step():
                    out = model.model.language_model(input_ids=token, past_key_values=cache, use_cache=True)
                    return model.lm_head(out.last_hidden_state).argmax(-1)

                def drop_new_token():  # the same context every call
                    for layer in cache.layers:
                        if layer.keys.shape[-2] > context:
                            layer.crop(context - layer.keys.shape[-2])

                rows.append({"kind": "profile_decode", "variant": name, "context": context, "batch": 1,
                             "experts": "grouped_mm", **_profiled(torch, decode_step, drop_new_token)})
            for px, batch in [(global_px, 1)] + ([(tile_px, 6)] if tile_px else []):
                pixels = torch.randn(batch, 3, px, px, device=device, dtype=torch.bfloat16)
                rows.append({"kind": "profile_vision", "variant": name, "image": px, "batch": batch,
                             **_profiled(torch, lambda: model.model.vision_tower(pixels))})
            embeds = torch.randn(1, 300, text.hidden_size, device=device, dtype=torch.bfloat16)
            rows.append({"kind": "profile_prefill", "variant": name, "tokens": 300, "batch": 1,
                         "experts": "grouped_mm", **_profiled(torch, prefill_fn(embeds))})
            torch.cuda.empty_cache()
            save("profile")

        if "graph_decode" in kinds:
            points = ([(1, 512), (32, 512)] if quick else
                      [(1, 512), (8, 512), (32, 512), (64, 512), (128, 512), (1, 2048), (32, 2048), (64, 2048)])
            for batch, context in points:
                rows.extend(_graph_decode_rows(torch, model, name, batch, context, reps=max(reps, 10)))
                torch.cuda.empty_cache()
                _progress(f"{name} graph_decode batch {batch} context {context}: {rows[-1]}")
            save("graph_decode")
    return len(rows)


def _dynamic_cache(torch, model, context: int, batch: int, device: str):
    """transformers' DynamicCache holding `context` tokens per layer, as eager generation grows it."""
    from transformers import DynamicCache

    text = model.config.text_config
    cache = DynamicCache(config=text)
    head_dim = text.hidden_size // text.num_attention_heads
    for layer in range(text.num_hidden_layers):
        keys = torch.zeros(batch, text.num_key_value_heads, context, head_dim, device=device, dtype=torch.bfloat16)
        cache.update(keys, keys.clone(), layer)
    return cache


def _graph_decode_rows(torch, model, name: str, batch: int, context: int, reps: int) -> list[dict]:
    """A decode step over a static cache of `context` tokens: replayed from a CUDA graph, and run eagerly."""
    from transformers import StaticCache

    device = next(model.parameters()).device
    text = model.config.text_config
    base = {"variant": name, "batch": batch, "context": context, "experts": "grouped_mm"}
    cache = StaticCache(config=text, max_cache_len=context)
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)
    position = torch.full((batch, 1), context - 1, dtype=torch.long, device=device)

    def step():
        out = model.model.language_model(input_ids=token, position_ids=position, past_key_values=cache,
                                         use_cache=True)
        return model.lm_head(out.last_hidden_state).argmax(-1)

    step()  # allocates the cache's tensors

    def rewind():  # the step writes the token at context - 1 and reads `context` cached tokens, every call
        for layer in cache.layers:
            layer.cumulative_length.fill_(context - 1)

    rows = []
    try:
        rows.append({"kind": "eager_static_decode", **base, **_timed(torch, step, reps, warmup=3, before=rewind)})
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                rewind()
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        rewind()
        with torch.cuda.graph(graph):
            step()
        rows.append({"kind": "graph_decode", **base, **_timed(torch, graph.replay, reps, warmup=3, before=rewind)})
        del graph
    except Exception as error:  # a point that cannot run is recorded, not fatal to the whole file
        rows.append({"kind": "graph_decode", **base, "error": _short(error)})
    del cache
    return rows
