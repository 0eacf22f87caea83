"""The DeepSeek-OCR networks, built from transformers' own classes on the meta device.

Which transformers model implements which variant is said once, in the variant's entry of analyzer/variants.py, so
that a native `deepseek_ocr` model can replace `unlimited_ocr` for v1 by changing that entry; this module builds
it. Configs ship as package data (`analyzer/configs/*.json`); nothing is downloaded and no weights exist.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any

import attrs

from analyzer.errors import AnalyzerInputError
from analyzer.variants import VARIANTS, model_variant

# The variants (config file, transformers classes, names) are declared once, in analyzer/variants.py.
MODEL_IDS = {v.model_id: v.name for v in VARIANTS.values()}

DTYPE_NAME = "bfloat16"
DTYPE_BYTES = 2
# The experts path transformers takes on CUDA (sort, histc, cumsum, index and two grouped GEMMs per layer); it
# traces on the meta device without data-dependent ops. The counts charge top-k experts per token and the
# distinct experts' weights, as the grouped kernel reads them.
EXPERTS_COUNTING_IMPLEMENTATION = "grouped_mm"


def canonical_variant(name: str) -> str:
    return model_variant(name).name


def variant_for_model_id(model_id: str) -> str:
    if model_id in MODEL_IDS:
        return MODEL_IDS[model_id]
    raise AnalyzerInputError(
        f"unknown model id {model_id!r}; expected one of: {', '.join(sorted(MODEL_IDS))}")


@attrs.frozen
class ArchitectureSpec:
    """What the analyzer needs to know about a variant beyond the module tree."""

    variant: str
    model_id: str
    transformers_model: str
    checkpoint_parameters: int
    config: dict[str, Any]

    @property
    def text(self) -> dict[str, Any]:
        return self.config["text_config"]

    @property
    def kv_cache_bytes_per_token(self) -> int:
        text = self.text
        head_dim = text["hidden_size"] // text["num_attention_heads"]
        return text["num_hidden_layers"] * 2 * text["num_key_value_heads"] * head_dim * DTYPE_BYTES

    @property
    def num_experts(self) -> int:
        return self.text["n_routed_experts"]

    @property
    def experts_per_token(self) -> int:
        return self.text["num_experts_per_tok"]


@functools.cache
def load_spec(variant: str) -> ArchitectureSpec:
    variant = canonical_variant(variant)
    filename = VARIANTS[variant].config_file
    data = json.loads(importlib.resources.files("analyzer.configs").joinpath(filename).read_text("utf-8"))
    return ArchitectureSpec(variant=variant, model_id=data["model_id"],
                            transformers_model=data["transformers_model"],
                            checkpoint_parameters=int(data["checkpoint_parameters"]), config=data["config"])


def __getattr__(name: str) -> Any:
    # torch is loaded where a model is built or traced, not where a workload is read: commands that only read
    # stored reports never load it.
    if name == "DTYPE":
        import torch

        return torch.bfloat16
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def instantiate(variant: str, device: str | torch.device) -> torch.nn.Module:
    """The full ForConditionalGeneration model of a variant on `device` (random weights off the meta device), in
    bf16, in eval mode."""
    import torch
    import transformers

    variant = canonical_variant(variant)
    spec = load_spec(variant)
    described = VARIANTS[variant]
    config = getattr(transformers, described.transformers_config)(**spec.config)
    with torch.device(device):
        model = getattr(transformers, described.transformers_model)(config)
    return model.to(torch.bfloat16).eval()


@functools.cache
def build_model(variant: str) -> torch.nn.Module:
    """The model on the meta device, with the experts path the counter traces."""
    model = instantiate(variant, "meta")
    model.set_experts_implementation(EXPERTS_COUNTING_IMPLEMENTATION)
    return model
