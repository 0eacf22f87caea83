"""`dsocr-registry measure`: time the real transformers model (random bf16 weights, no download) on a CUDA GPU
and write a measurement file in the documented format (vision tower per view size and batch, projector,
prefill, end-to-end greedy runs), timing with CUDA events after warm-up, median of repetitions."""

from __future__ import annotations

import json
import pathlib
import platform
import statistics

from analyzer.errors import AnalyzerInputError
from analyzer.fileio import write_text_atomic


def _timed(torch, fn, reps: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": reps}


def measure(variant: str, device: str, out: pathlib.Path, reps: int = 5, quick: bool = False) -> int:
    import torch
    import transformers

    from analyzer.architecture import canonical_variant, instantiate
    from analyzer.workload import MODES

    if not device.startswith("cuda"):
        raise AnalyzerInputError(f"--device {device}: measure times CUDA kernels; give a CUDA device such as cuda:0")
    if not torch.cuda.is_available():
        raise AnalyzerInputError("no CUDA device is available here (torch.cuda.is_available() is False); "
                                 "run measure on a machine with an NVIDIA GPU")
    variant = canonical_variant(variant)
    torch.manual_seed(0)
    model = instantiate(variant, device)  # random weights; transformers' default experts path (grouped_mm)
    name = "v1" if variant == "v1" else "v2"
    rows = []
    views = sorted({m.global_px for m in MODES[variant].values()} | {m.tile_px for m in MODES[variant].values()
                                                                    if m.tile_px})
    batches = [1, 8] if quick else [1, 2, 8, 32]
    text = model.config.text_config
    with torch.no_grad():
        for px in views:
            for batch in batches:
                pixels = torch.randn(batch, 3, px, px, device=device, dtype=torch.bfloat16)
                features = model.model.vision_tower(pixels).last_hidden_state
                rows.append({"kind": "vision_tower", "variant": name, "image": px, "batch": batch,
                             "tokens_per_view": features.shape[1],
                             **_timed(torch, lambda: model.model.vision_tower(pixels), reps)})
                rows.append({"kind": "projector", "variant": name, "image": px, "batch": batch,
                             "tokens_per_view": features.shape[1],
                             **_timed(torch, lambda: model.model.multi_modal_projector(features), reps)})
        for tokens, batch in ([(300, 1), (1024, 1)] if quick else [(300, 1), (1024, 1), (4096, 1), (1024, 4)]):
            embeds = torch.randn(batch, tokens, text.hidden_size, device=device, dtype=torch.bfloat16)
            rows.append({"kind": "prefill", "variant": name, "experts": "grouped_mm", "tokens": tokens,
                         "batch": batch, **_timed(torch, lambda: model.model.language_model(
                             inputs_embeds=embeds, use_cache=True), reps)})
        global_px = 1024
        for batch, new_tokens in ([(1, 32)] if quick else [(1, 256), (8, 256)]):
            pixels = torch.randn(batch, 3, global_px, global_px, device=device, dtype=torch.bfloat16)
            prompt = torch.randint(0, text.vocab_size, (batch, 20), device=device)

            def generate():
                feats = model.model.multi_modal_projector(model.model.vision_tower(pixels).last_hidden_state)
                embeds = torch.cat([feats, model.model.language_model.embed_tokens(prompt)], dim=1)
                out = model.model.language_model(inputs_embeds=embeds, use_cache=True)
                cache, hidden = out.past_key_values, out.last_hidden_state
                token = model.lm_head(hidden[:, -1:]).argmax(-1)
                for _ in range(new_tokens - 1):
                    out = model.model.language_model(input_ids=token, past_key_values=cache, use_cache=True)
                    cache = out.past_key_values
                    token = model.lm_head(out.last_hidden_state).argmax(-1)

            context = (global_px // 64) ** 2 + 20
            rows.append({"kind": "end_to_end_views", "variant": name, "global_image": global_px, "tile_image": 0,
                         "tiles": 0, "batch": batch, "prompt_tokens": 20, "new_tokens": new_tokens,
                         "prefill_context": context, "experts": "grouped_mm",
                         **_timed(torch, generate, max(1, reps // 2), warmup=1)})
    env = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(), "runtime": "hf-eager",
           "dtype": "bfloat16", "weights": "random (seed 0), same shapes as the released checkpoints",
           "attention": "sdpa", "timing": "CUDA events around each call, median of reps after warm-up",
           "kinds": {"vision_tower": "model.vision_tower(pixel_values)", "projector": "multi_modal_projector",
                     "prefill": "language model on inputs_embeds, fresh KV cache",
                     "end_to_end_views": "vision + projector + prefill + greedy decode of new_tokens"}}
    write_text_atomic(out, json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    return len(rows)
