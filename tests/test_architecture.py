"""The networks come from transformers' classes with the shipped configs; their sizes are the real ones."""

import pytest

from analyzer.architecture import build_model, canonical_variant, load_spec, variant_for_model_id
from analyzer.errors import AnalyzerInputError


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_v1_parameter_counts_match_the_checkpoint_split():
    model = build_model("v1")
    assert _params(model) == 3_335_504_128
    # the checkpoint additionally stores CLIP's unused patch-embedding conv (1024 x 3 x 14 x 14 + 1024)
    assert load_spec("v1").checkpoint_parameters - _params(model) == 602_112
    vision = model.model.vision_tower
    assert _params(vision.sam_encoder) == 95_569_152
    assert _params(vision.vision_encoder) == 303_177_728 - 602_112
    assert _params(model.model.multi_modal_projector) + 2 * 1280 == 2_625_280
    lm = model.model.language_model
    assert _params(lm.layers) == 2_603_776_000
    assert _params(lm.embed_tokens) == 165_478_400
    assert _params(model.lm_head) == 165_478_400


def test_ocr2_parameter_count():
    model = build_model("ocr2")
    assert _params(model) == 3_389_119_360
    assert load_spec("ocr2").checkpoint_parameters == 3_389_119_360
    assert model.model.vision_tower.sam_encoder.proj.conv2.out_channels == 896
    assert model.model.multi_modal_projector.in_features == 896


def test_activated_parameters_per_token_is_the_papers_570m():
    model = build_model("v1")
    text = load_spec("v1").text
    lm = model.model.language_model
    per_expert = 3 * text["hidden_size"] * text["moe_intermediate_size"]
    routed = sum(_params(layer.mlp.experts) for layer in lm.layers[1:])
    activated = _params(lm.layers) + _params(lm.norm) - routed + 11 * text["num_experts_per_tok"] * per_expert
    assert activated == 408_648_960
    assert activated + _params(model.lm_head) == 574_127_360


def test_decoder_config_is_deepseek_ocr():
    text = load_spec("v1").text
    assert (text["vocab_size"], text["hidden_size"], text["num_hidden_layers"]) == (129_280, 1_280, 12)
    assert (text["num_attention_heads"], text["num_key_value_heads"]) == (10, 10)
    assert (text["n_routed_experts"], text["num_experts_per_tok"], text["n_shared_experts"]) == (64, 6, 2)
    assert load_spec("v1").kv_cache_bytes_per_token == 61_440
    assert load_spec("ocr2").kv_cache_bytes_per_token == 61_440


def test_models_live_on_the_meta_device_in_bf16():
    import torch

    for variant in ("v1", "ocr2"):
        params = list(build_model(variant).parameters())
        assert all(p.device.type == "meta" for p in params)
        assert all(p.dtype == torch.bfloat16 for p in params)


@pytest.mark.parametrize("name,expected", [("v1", "v1"), ("OCR2", "ocr2"), ("v2", "ocr2"),
                                           ("deepseek-ocr-2", "ocr2")])
def test_variant_aliases(name, expected):
    assert canonical_variant(name) == expected


def test_unknown_variant_and_model_id():
    with pytest.raises(AnalyzerInputError, match="unknown variant"):
        canonical_variant("v3")
    with pytest.raises(AnalyzerInputError, match="unknown model id"):
        variant_for_model_id("deepseek-ai/DeepSeek-V3")
    assert variant_for_model_id("deepseek-ai/DeepSeek-OCR") == "v1"
