"""The released architectures at full size, on the meta device (no weights, no download): the key/shape tables of
the released files convert into vgt modules of exactly the right shapes."""

from __future__ import annotations

import pytest
import torch
from transformers import InternVLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

from vgt.ae.dcae import build_dcae_decoder
from vgt.backbones.internvl import InternVLBackbone
from vgt.backbones.qwen2_5_vl import Qwen2_5_VLBackbone
from vgt.official import ConversionError, ConversionReport
from vgt.official import convert as conversion
from vgt.official.architectures import (
    RELEASES,
    base_vlm_config,
    checkpoint_layers,
    official_ae_shapes,
    official_ar_shapes,
)
from vgt.official.rules import apply_rules
from vgt.presets import DCAE_F32C32_SANA_1_1
from vgt.vlm.model import build_word_tokenizer

#: (LLM width, converted layers, k/v width, vocab, AE width) per release (docs/official.md)
EXPECTED = {"internvl3-1.6b": (1536, 28, 256, 151674, 896), "internvl3-0.6b": (896, 24, 128, 151674, 896),
            "qwen2.5-vl-2b": (2048, 18, 256, 151936, 2048)}


def meta_conversion(release: str):
    qwen = release.startswith("qwen")
    kind = "qwen2_5_vl" if qwen else "internvl"
    with torch.device("meta"):
        config = base_vlm_config(release)
        model = (Qwen2_5_VLForConditionalGeneration if qwen else InternVLForConditionalGeneration)(config)
        backbone = (Qwen2_5_VLBackbone if qwen else InternVLBackbone)(model, build_word_tokenizer(["<img>"]))
        decoder = {f"decoder.{k}": v for k, v in build_dcae_decoder(DCAE_F32C32_SANA_1_1).state_dict().items()}
        ae_state = {k: torch.empty(s) for k, s in official_ae_shapes(release).items()} | decoder
        ar_state = {k: torch.empty(s) for k, s in official_ar_shapes(release).items()}
        report = ConversionReport()
        mapped = apply_rules(ar_state, conversion.KINDS[kind]["ar_rules"], report, "AR checkpoint")
        llm = {k: v for k, v in mapped.items() if k.startswith("llm.")}  # meta tensors: no duplicate comparison
        generator = {k: v for k, v in mapped.items() if not k.startswith(("llm.", "duplicate."))}
        layers = conversion._layer_count(llm, config.text_config.num_hidden_layers, None, report)
        conversion.prune_language_model(backbone, layers)
        ae = conversion.build_ae(backbone, ae_state, dict(DCAE_F32C32_SANA_1_1), report, kind)
        generator_model = conversion.build_generator(backbone, ae, llm, generator, kind)
    return backbone, ae, generator_model, report


@pytest.mark.parametrize("release", RELEASES)
def test_full_size_release_converts_into_modules_of_the_right_shapes(release):
    width, layers, kv, vocab, ae_width = EXPECTED[release]
    backbone, ae, model, report = meta_conversion(release)
    text = backbone.model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (width, layers, vocab)
    assert len(backbone.text.language_model.layers) == layers == checkpoint_layers(release)
    assert backbone.text.language_model.layers[0].self_attn.k_proj.weight.shape == (kv, width)
    assert model.queries.query_grid.shape == (width, 64, 64)
    assert (model.config.head.width, model.config.head.depth) == (1536, 12)
    assert 140e6 < sum(p.numel() for p in model.head.parameters()) < 160e6  # the authors' ~150M head
    assert ae.vision.out_dim == ae_width and ae.config.latent_channels == 32
    assert report.count("refused") == 0
    if release.startswith("internvl"):
        assert ae.vision.vision_tower.encoder.layer[23].attention.q_proj.weight.shape == (1024, 1024)
        assert report.rules_used("renamed") >= {"llm", "lm-head", "query-grid", "flow-head"}
    else:
        assert len(ae.vision.visual.blocks) == 32


def test_qwen_release_keeps_18_of_36_layers_and_refuses_36():
    config = base_vlm_config("qwen2.5-vl-2b")
    assert config.text_config.num_hidden_layers == 36
    llm = {f"llm.layers.{i}.input_layernorm.weight": torch.empty(1) for i in range(18)}
    report = ConversionReport()
    assert conversion._layer_count(llm, 36, None, report) == 18
    assert "first 18 of the VLM's 36 layers" in report.notes[-1]
    with pytest.raises(ConversionError, match="--num-layers 36 but the checkpoint holds 18"):
        conversion._layer_count(llm, 36, 36, ConversionReport())
