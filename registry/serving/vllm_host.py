"""vLLM V0's own host code, timed on the CPU with synthetic requests (only where vLLM is installed).

vLLM is never a dependency of this package: `vllm_importable()` looks for it, and its modules are loaded without
running the package's `__init__` (which imports the whole engine, the OpenAI server and CUDA extensions); the
submodules below import and run on a CPU. Install it where you measure with `pip install --no-deps vllm==0.8.5`
(plus the small pure-Python packages its scheduler, sampler and detokenizer import, one by one with --no-deps).

What one V0 decode step does on the host, in the order of vLLM 0.8.5's `LLMEngine.step` and
`worker/model_runner.py`, and what is timed here (each piece is vLLM's own code, called as the engine calls it):

- `Scheduler.schedule()` (core/scheduler.py): the step's SequenceGroupMetadata, block slots appended;
- input preparation: `ModelInputForGPUBuilder` (prepare, add_seq_group per request, build) with the FlashAttention
  backend's metadata builder, the model runner's own input builder for DeepSeek-OCR's MHA decoder; the tensors are
  made on the CPU (`device=cpu`), so the host-to-device copies are not in the figure;
- `SamplingMetadata.prepare` (model_executor/sampling_metadata.py);
- the logits-processor loop `_apply_logits_processors` (layers/logits_processor.py) with one pass-through
  processor per request: its per-request wrapper (rebuilding the output-token tuple, `inspect.signature`, the row
  write; the row is 1,024 logits on the CPU, so the write is PyTorch's dispatch cost, not a CUDA launch);
- the sampler's Python work after its GPU sync (layers/sampler.py): `get_pythonized_sample_results` (the
  `.tolist()` and per-request results), `get_logprobs` and `_build_sampler_output`, for greedy requests;
- token bookkeeping: `LLMEngine._advance_to_next_step` (computed-token counts, `append_token_id`), what the async
  output processor leaves before the next `schedule()`;
- detokenization + stop checks: `SingleStepOutputProcessor.process_outputs` (the `Detokenizer`'s incremental
  detokenization, `StopChecker`) and `RequestOutputFactory.create`, per request per step, with a byte-level BPE
  tokenizer trained here on synthetic text (DeepSeek-OCR's own is a 129,280-token byte-level BPE; the
  incremental detokenizer's Python work per token does not depend on the vocabulary's size).

What does not run on a CPU, and is not timed: the model forward, CUDA-graph replay, the sampler's GPU kernels
(softmax, argmax) and the GPU-to-host sync itself, the host-to-device copies of the prepared inputs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable

import numpy as np

from registry.serving.host_timing import fit_linear, fitted, time_us

V0_PIECES = ("schedule", "prepare_inputs", "sampling_metadata", "logits", "sampler", "bookkeeping", "detokenize")
PROMPT_TOKENS = 912  # a Gundam page of DeepSeek-OCR v1 with a 2x3 tile grid and the document prompt
BLOCK_SIZE = 256  # DeepSeek's PDF script: LLM(block_size=256, max_model_len=8192, max_num_seqs=100)
MAX_MODEL_LEN = 8192
LOGITS_WIDTH = 1024
TOKENIZER_VOCAB = 4096


def vllm_version() -> str | None:
    """The installed vLLM's version, or None when it is not installed (without importing it)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("vllm")
    except PackageNotFoundError:
        return None


def _light_vllm_package():
    """Register `vllm` as a bare package (its submodules importable, its heavy `__init__` not run)."""
    module = sys.modules.get("vllm")
    if module is not None:
        return module
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("vllm is not installed")
    package = types.ModuleType("vllm")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__version__ = vllm_version()
    sys.modules["vllm"] = package
    return package


V0_MODULES = ("vllm.config", "vllm.core.scheduler", "vllm.sequence", "vllm.sampling_params", "vllm.inputs",
              "vllm.model_executor.sampling_metadata", "vllm.model_executor.layers.logits_processor",
              "vllm.model_executor.layers.sampler", "vllm.transformers_utils.detokenizer",
              "vllm.engine.output_processor.single_step", "vllm.engine.output_processor.stop_checker",
              "vllm.engine.llm_engine", "vllm.outputs", "vllm.worker.model_runner",
              "vllm.attention.backends.flash_attn", "vllm.utils")


def vllm_importable() -> tuple[bool, str]:
    """(True, version) when vLLM's V0 host modules import here; else (False, why not)."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed"
    try:
        _light_vllm_package()
        for name in V0_MODULES:
            importlib.import_module(name)
    except Exception as exc:  # any import failure means: not measurable here
        return False, f"vllm's V0 modules do not import here ({type(exc).__name__}: {exc})"
    return True, vllm_version() or "unknown"


def _modules() -> types.SimpleNamespace:
    _light_vllm_package()
    v = types.SimpleNamespace(**{name.rsplit(".", 1)[-1]: importlib.import_module(name) for name in V0_MODULES})
    # no pinned host memory without a GPU: the sampler's tensors are made in ordinary memory
    v.sampling_metadata.is_pin_memory_available = lambda: False
    return v


def _synthetic_tokenizer():
    """A byte-level BPE tokenizer (as DeepSeek-OCR's is) trained on synthetic markdown-like text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(0)
    words = ["table", "figure", "section", "the", "of", "and", "results", "model", "page", "document", "text",
             "<td>", "</td>", "<tr>", "|", "#", "**", "1.", "2.", "(", ")", "=", "x", "y", "value", "OCR"]
    syllables = ["ka", "re", "to", "mi", "sa", "lo", "ne", "ur", "is", "an", "ex", "qu", "pr", "st"]
    corpus = []
    for _ in range(4000):
        line = [str(rng.choice(words)) if rng.random() < 0.5 else
                "".join(rng.choice(syllables, size=int(rng.integers(1, 4)))) for _ in range(12)]
        corpus.append(" ".join(line))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")


def _pass_through(token_ids, logits_row):
    """A logits processor that changes nothing: what is timed is vLLM's wrapper around it."""
    return logits_row


class V0Engine:
    """A V0 engine's host side at `requests` running decode requests of `generated` tokens each."""

    def __init__(self, v: types.SimpleNamespace, tokenizer, requests: int, generated: int, seed: int = 0):
        import torch

        self.v = v
        rng = np.random.default_rng(seed)
        config = v.config
        self.scheduler_config = config.SchedulerConfig(
            runner_type="generate", max_num_batched_tokens=MAX_MODEL_LEN, max_num_seqs=max(requests, 1),
            max_model_len=MAX_MODEL_LEN, is_multimodal_model=True, enable_chunked_prefill=False)
        cache_config = config.CacheConfig(block_size=BLOCK_SIZE, gpu_memory_utilization=0.9, swap_space=0,
                                          cache_dtype="auto")
        blocks_per_request = MAX_MODEL_LEN // BLOCK_SIZE + 1
        cache_config.num_gpu_blocks = requests * blocks_per_request + 16
        cache_config.num_cpu_blocks = 0
        # async output processing is on in DeepSeek's pipeline: the scheduler keeps two object caches
        self.scheduler = v.scheduler.Scheduler(self.scheduler_config, cache_config, None,
                                               output_proc_callback=lambda: None)
        eos = tokenizer.eos_token_id
        self.vocab = len(tokenizer)
        self.sampling_params = v.sampling_params.SamplingParams(
            temperature=0.0, max_tokens=MAX_MODEL_LEN, logits_processors=[_pass_through], skip_special_tokens=False,
            include_stop_str_in_output=True, output_kind=v.sampling_params.RequestOutputKind.FINAL_ONLY)
        for index in range(requests):
            prompt = [int(t) for t in rng.integers(1, self.vocab, PROMPT_TOKENS)]
            seq = v.sequence.Sequence(index, v.inputs.token_inputs(prompt_token_ids=prompt), BLOCK_SIZE, eos)
            group = v.sequence.SequenceGroup(request_id=str(index), seqs=[seq], arrival_time=0.0,
                                             sampling_params=self.sampling_params.clone())
            self.scheduler.add_seq_group(group)
        self.rng = rng
        self.engine_stub = types.SimpleNamespace(scheduler_config=self.scheduler_config)
        group = types.SimpleNamespace(get_lora_tokenizer=lambda lora_request=None: tokenizer)
        self.detokenizer = v.detokenizer.Detokenizer(group)
        stop_checker = v.stop_checker.StopChecker(MAX_MODEL_LEN, lambda seq: tokenizer)
        self.output_processor = v.single_step.SingleStepOutputProcessor(
            self.scheduler_config, self.detokenizer, [self.scheduler], v.utils.Counter(), stop_checker)
        self.seq_id_to_seq_group: dict = {}
        self.sampler = v.sampler.Sampler()
        self.sampling_cache = v.sampling_metadata.SamplingMetadataCache()
        self.runner = self._runner_stand_in(requests)
        self.builder = v.model_runner.ModelInputForGPUBuilder(self.runner)
        self.torch = torch
        # prefill every request (steps of prompts as the V0 scheduler admits them), then grow the outputs
        while self.scheduler.waiting:
            self.step()
        self._grow_outputs(generated - 1)

    def _runner_stand_in(self, requests: int):
        """The attributes of a GPU model runner that its input builder reads (no model, no GPU)."""
        import torch

        v = self.v
        capture = [1, 2, 4] + list(range(8, 513, 8))  # V0's CUDA-graph batch sizes
        max_capture = max(size for size in capture if size <= max(self.scheduler_config.max_num_seqs, 1) + 7)
        model_config = types.SimpleNamespace(is_encoder_decoder=False, uses_mrope=False, enforce_eager=False,
                                             max_seq_len_to_capture=MAX_MODEL_LEN, use_mla=False)
        return types.SimpleNamespace(
            _model_input_cls=v.model_runner.ModelInputForGPUWithSamplingMetadata,
            attn_backend=v.flash_attn.FlashAttentionBackend, scheduler_config=self.scheduler_config,
            sliding_window=None, block_size=BLOCK_SIZE, lora_config=None, prompt_adapter_config=None,
            model_config=model_config, device=torch.device("cpu"), pin_memory=False,
            max_seq_len_to_capture=MAX_MODEL_LEN, max_batchsize_to_capture=max_capture,
            graph_block_tables=np.zeros((max_capture, MAX_MODEL_LEN // BLOCK_SIZE), dtype=np.int32),
            inter_data_cache={},
            # V0 pads a decode batch to the next captured CUDA-graph size
            vllm_config=types.SimpleNamespace(pad_for_cudagraph=lambda batch: min(s for s in capture if s >= batch)),
            sampling_metadata_cache=self.sampling_cache)

    def _grow_outputs(self, tokens: int) -> None:
        """Give every running request `tokens` more output tokens, as decode steps would (block slots included)."""
        for group in self.scheduler.running:
            seq = group.first_seq
            for token in self.rng.integers(1, self.vocab, tokens):
                seq.append_token_id(int(token), {int(token): self.v.sequence.Logprob(0.0)})
            seq.data.update_num_computed_tokens(tokens)
            self.scheduler.block_manager.append_slots(seq, 0)

    def step(self, timings: dict | None = None) -> None:
        """One engine step; with `timings`, each piece's microseconds are added to it."""
        v, torch = self.v, self.torch
        clock: Callable = (lambda piece, work: _timed(timings, piece, work))
        metadata_list, outputs, _ = clock("schedule", self.scheduler.schedule)
        if not metadata_list:
            return

        def prepare_inputs():
            self.builder.prepare([])
            for metadata in metadata_list:
                self.builder.add_seq_group(metadata)
            return self.builder.build()

        model_input = clock("prepare_inputs", prepare_inputs)
        sampling_metadata = clock("sampling_metadata", lambda: v.sampling_metadata.SamplingMetadata.prepare(
            metadata_list, model_input.seq_lens, model_input.query_lens, torch.device("cpu"), False, {},
            self.sampling_cache))
        logits = torch.randn(sampling_metadata.selected_token_indices.numel(), LOGITS_WIDTH)
        logits = clock("logits", lambda: v.logits_processor._apply_logits_processors(logits, sampling_metadata))
        # the sampler up to its GPU sync (not timed: GPU kernels), its Python work after the sync (timed)
        sampler = self.sampler
        sampler._init_sampling_tensors(logits, sampling_metadata)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        sampling_metadata.skip_sampler_cpu_output = True
        deferred, _ = v.sampler._sample(logprobs.exp(), logprobs, sampling_metadata, sampler._sampling_tensors,
                                        include_gpu_probs_tensor=False, modify_greedy_probs=False)
        sampling_metadata.skip_sampler_cpu_output = False

        def post_sync():
            results = v.sampler.get_pythonized_sample_results(deferred)
            prompt_logprobs, sample_logprobs = v.sampler.get_logprobs(logprobs, sampling_metadata, results)
            return v.sampler._build_sampler_output(results, sampling_metadata, prompt_logprobs, sample_logprobs,
                                                on_device_tensors=None)

        sampler_output = clock("sampler", post_sync)
        scheduled = outputs.scheduled_seq_groups
        clock("bookkeeping", lambda: v.llm_engine.LLMEngine._advance_to_next_step(
            self.engine_stub, sampler_output, metadata_list, scheduled))

        def detokenize():
            for scheduled_group, group_output in zip(scheduled, sampler_output):
                group = scheduled_group.seq_group
                self.output_processor.process_outputs(group, [group_output], True)
                v.outputs.RequestOutputFactory.create(group, self.seq_id_to_seq_group)

        clock("detokenize", detokenize)
        self.scheduler.free_finished_seq_groups()


def _timed(timings: dict | None, piece: str, work: Callable):
    if timings is None:
        return work()
    result: list = []
    timings[piece] = timings.get(piece, 0.0) + time_us(lambda: result.append(work()))
    return result[0]


def measure_v0(request_counts=(1, 8, 32, 100, 256), generated_lengths=(64, 512, 2048), rounds: int = 5,
               steps: int = 3, progress: Callable[[str], None] | None = None) -> dict:
    """The V0 costs of a host profile (microseconds, {value, spread, how}), fitted over running-request counts
    and generated lengths from vLLM's own code; the fits and the points are described in the module docstring."""
    v = _modules()
    tokenizer = _synthetic_tokenizer()
    points = [(n, length) for n in request_counts for length in generated_lengths]
    engines = {}
    for n, length in points:
        if progress:
            progress(f"vLLM V0: setting up {n} running requests of {length} tokens")
        engines[(n, length)] = V0Engine(v, tokenizer, n, length)
    # rounds x points per piece: each round steps every engine (round-robin, so a burst of load hits one round)
    timings = {piece: np.zeros((rounds, len(points))) for piece in V0_PIECES}
    for r in range(rounds):
        if progress:
            progress(f"vLLM V0: round {r + 1} of {rounds}")
        for p, point in enumerate(points):
            per_step = {}
            engine = engines[point]
            samples = {piece: [] for piece in V0_PIECES}
            for _ in range(steps):
                per_step.clear()
                engine.step(per_step)
                for piece in V0_PIECES:
                    samples[piece].append(per_step.get(piece, 0.0))
            for piece in V0_PIECES:
                timings[piece][r, p] = float(np.median(samples[piece]))
    n = np.array([point[0] for point in points], dtype=float)
    generated = np.array([point[1] for point in points], dtype=float)
    per_request = np.column_stack([np.ones_like(n), n])
    costs = {}
    for piece, step_key, request_key in (("schedule", "schedule_step_us", "schedule_per_request_us"),
                                         ("prepare_inputs", "prepare_inputs_step_us",
                                          "prepare_inputs_per_request_us"),
                                         ("sampling_metadata", "sampling_metadata_step_us",
                                          "sampling_metadata_per_request_us"),
                                         ("sampler", "sampler_step_us", "sampler_per_request_us")):
        values, spreads = fit_linear(per_request, timings[piece])
        costs[step_key] = fitted(values, spreads, 0)
        costs[request_key] = fitted(values, spreads, 1)
    values, spreads = fit_linear(per_request, timings["bookkeeping"])
    costs["bookkeeping_per_request_us"] = fitted(values, spreads, 1)
    values, spreads = fit_linear(np.column_stack([np.ones_like(n), n, n * generated]), timings["logits"])
    costs["logits_call_per_request_us"] = fitted(values, spreads, 1)
    costs["logits_history_per_token_us"] = fitted(values, spreads, 2)
    values, spreads = fit_linear(per_request, timings["detokenize"])
    costs["detokenize_per_token_us"] = fitted(values, spreads, 1)
    return costs
