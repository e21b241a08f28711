"""Released checkpoints + the base VLM folder (HF-native layout) + a DC-AE config -> a vgt pipeline folder.

The language model gets exactly the checkpoint's layers: a checkpoint with fewer layers than the VLM folder (the
Qwen2.5-VL release keeps the first 18 of 36) prunes the converted backbone's config to that count; one with more
is refused. Nothing is padded or kept from the pretrained VLM in place of a trained weight (the authors' loader
did that silently: their issue #11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vgt.io import read_json
from vgt.official.checkpoint import DEFAULT_WEIGHTS, read_pth, select_weights
from vgt.official.keymaps import (
    AE_PREFIX,
    INTERNVL_AE_RULES,
    INTERNVL_AR_RULES,
    QWEN_AE_RULES,
    QWEN_AR_RULES,
)
from vgt.official.rules import ConversionError, ConversionReport, apply_rules, check_against

#: the authors' prompt (their INSTRUCTION template: a user turn and the assistant header, no system turn)
OFFICIAL_PROMPT_TEMPLATE = "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"
#: their image-start text, tokenized with the VLM's tokenizer (`tokenizer.encode('<img>')`)
OFFICIAL_IMAGE_START = "<img>"
#: per-kind facts of the released models that the weights do not show
KINDS = {
    "internvl": dict(ae_rules=INTERNVL_AE_RULES, ar_rules=INTERNVL_AR_RULES, timestep_shift=1.4,
                     ar_marker="lmm.language_model.model."),
    "qwen2_5_vl": dict(ae_rules=QWEN_AE_RULES, ar_rules=QWEN_AR_RULES, timestep_shift=1.0, ar_marker="lmm.model."),
}
#: released sampling defaults (GenEval setting of their scripts: 448 px, guidance 4.5 linear, 30 head steps); a
#: query grid smaller than 16 (a test-size model) defaults to its largest grid
OFFICIAL_SAMPLING = dict(guidance_scale=4.5, cfg_schedule="linear", num_inference_steps=30, sampler="sde",
                         sde_t_end=0.96, order="random", tokens_per_step=1, grid_size=16)
AE_NORM_EPS = 1e-6  # LayerNorm eps of the released bottleneck blocks


@dataclass
class ConvertedModel:
    report: ConversionReport
    out: Path
    kind: str


def load_base_vlm(vlm: str | Path, report: ConversionReport):
    """The base VLM as a vgt backbone. A folder with only config + tokenizer (no weights) gets a freshly initialised
    model: everything generation needs comes from the checkpoints, only the understanding path stays random."""
    from transformers import AutoConfig, AutoTokenizer

    from vgt.backbones.hf import image_normalization, read_model_type
    from vgt.backbones.internvl import InternVLBackbone
    from vgt.backbones.qwen2_5_vl import Qwen2_5_VLBackbone
    from vgt.backbones.registry import load_backbone
    from vgt.vlm.model import seeded_model

    vlm = Path(vlm)
    model_type = read_model_type(vlm)
    classes = {"internvl": InternVLBackbone, "qwen2_5_vl": Qwen2_5_VLBackbone}
    if model_type not in classes:
        raise ConversionError(f"{str(vlm)!r} holds a {model_type!r} model; the released VGT models are built on "
                              "InternVL3 ('internvl', HF-native -hf layout) or Qwen2.5-VL ('qwen2_5_vl')")
    if any(vlm.glob("*.safetensors")) or any(vlm.glob("*.bin")):
        return load_backbone(model_type, vlm)
    cls = classes[model_type]
    model = seeded_model(cls.model_class, AutoConfig.from_pretrained(str(vlm)), seed=0)
    mean, std = image_normalization(vlm, cls.default_image_mean, cls.default_image_std)
    report.notes.append(f"{str(vlm)!r} holds no weights: the backbone's own vision tower and projector (not used "
                        "for generation) are randomly initialised")
    return cls(model, AutoTokenizer.from_pretrained(str(vlm)), image_mean=mean, image_std=std)


def resolve_dcae_config(value: str | Path | None) -> dict:
    """A DC-AE (`AutoencoderDC`) config: a preset name, a config.json, or a folder holding one."""
    from vgt.presets import DCAE_PRESETS

    if value is None:
        value = "f32c32-sana-1.1"
    if str(value) in DCAE_PRESETS:
        return dict(DCAE_PRESETS[str(value)])
    path = Path(value)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"DC-AE config {str(value)!r} is neither a preset ({', '.join(DCAE_PRESETS)}) nor a "
                                "config.json (or a folder holding one, e.g. dc-ae-f32c32-sana-1.1-diffusers)")
    return {k: v for k, v in read_json(path).items() if not k.startswith("_")}


def _split_ae(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    ae = {k.removeprefix(AE_PREFIX): v for k, v in state.items() if k.startswith(AE_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith(AE_PREFIX)}, ae


def _resolve_duplicates(llm: dict[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """The Qwen release registers its pruned language model twice: keep one copy, refuse copies that differ."""
    duplicates = {k.removeprefix("duplicate."): v for k, v in llm.items() if k.startswith("duplicate.")}
    llm = {k: v for k, v in llm.items() if not k.startswith("duplicate.")}
    if not duplicates:
        return llm
    entries = report.entries["renamed"]
    report.entries["renamed"] = [e for e in entries if e[2] != "llm-duplicate"]
    if not llm:  # only the alias exists: it is the language model
        for source, target, _ in (e for e in entries if e[2] == "llm-duplicate"):
            report.add("renamed", source, target.replace("duplicate.", "llm.", 1), "llm-duplicate")
        return {f"llm.{k}": v for k, v in duplicates.items()}
    differing = [k for k, v in duplicates.items() if f"llm.{k}" not in llm or not torch.equal(llm[f"llm.{k}"], v)]
    if differing or len(duplicates) != len(llm):
        raise ConversionError(
            f"the checkpoint's two copies of the language model (lmm.model.language_model.* and "
            f"lmm.language_model.*) differ in {len(differing) or abs(len(duplicates) - len(llm))} tensor(s), e.g. "
            f"{differing[:4]}; which one was trained is unknown, so nothing was converted. Re-export the checkpoint "
            "from the training run, or remove the stale copy if you know which one it is"
        )
    for source, _, _ in (e for e in entries if e[2] == "llm-duplicate"):
        report.add("dropped", source, "identical duplicate of lmm.model.language_model.*", "llm-duplicate")
    return llm


def _layer_count(llm: dict[str, torch.Tensor], vlm_layers: int, requested: int | None,
                 report: ConversionReport) -> int:
    indices = sorted({int(m.group(1)) for k in llm if (m := re.match(r"llm\.layers\.(\d+)\.", k))})
    if not indices:
        raise ConversionError("the AR checkpoint holds no language-model layers (llm layers.N.*)")
    count = indices[-1] + 1
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise ConversionError(f"the checkpoint's language model lacks layers {missing[:8]} of 0..{count - 1}; "
                              "vgt never fills layers in from the pretrained VLM: use a complete checkpoint")
    if requested is not None and requested != count:
        raise ConversionError(
            f"--num-layers {requested} but the checkpoint holds {count} trained language-model layers; a converted "
            "model gets exactly the checkpoint's layers (vgt never pads them, nor keeps pretrained ones in their "
            "place: the authors' issue #11). Drop --num-layers or pass the checkpoint that has that many layers"
        )
    if count > vlm_layers:
        raise ConversionError(
            f"the checkpoint holds {count} language-model layers but the VLM folder's model has only {vlm_layers}; "
            "this is not the VLM the checkpoint was trained from: pass its folder (InternVL3-2B-hf for the 1.6B "
            "InternVL release, Qwen2.5-VL-3B-Instruct for the Qwen release)"
        )
    if count < vlm_layers:
        report.notes.append(f"language model: the checkpoint holds the first {count} of the VLM's {vlm_layers} "
                            f"layers (layer_ratio {count / vlm_layers:g}); the converted backbone keeps exactly those")
    return count


def prune_language_model(backbone, num_layers: int) -> None:
    """Keep the first `num_layers` decoder layers and record the count in the backbone's config."""
    language_model = backbone.text.language_model
    language_model.layers = torch.nn.ModuleList(list(language_model.layers)[:num_layers])
    for config in {id(c): c for c in (language_model.config, backbone.model.config.text_config)}.values():
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = list(config.layer_types)[:num_layers]


def build_ae(backbone, ae_state: dict[str, torch.Tensor], dcae: dict, report: ConversionReport, kind: str):
    """Map the official VGT-AE weights and build the vgt autoencoder they fit."""
    from vgt.ae.config import AEConfig
    from vgt.ae.model import VGTAutoencoder

    state = apply_rules(ae_state, KINDS[kind]["ae_rules"], report, "VGT-AE checkpoint")
    for needed in ("bottleneck.to_latent.1.weight", "bottleneck.to_latent.3.weight", "decoder.conv_in.weight"):
        if needed not in state:
            raise ConversionError(f"the VGT-AE weights lack {needed!r}: not a complete VGT-AE checkpoint")
    width = state["bottleneck.to_latent.1.weight"].shape[0]
    decoder_channels = state["decoder.conv_in.weight"].shape[1]
    if width == 2 * decoder_channels:
        raise ConversionError(
            f"this VGT-AE was trained with `kl: True`: its down_mlp emits {width} channels (mean and log-variance "
            f"of a {decoder_channels}-channel Gaussian), the authors' early stage-1 recipe. vgt's VGT-AE is "
            "deterministic and the released generators were trained on the deterministic AE: convert the AE inside "
            "the AR checkpoint (omit --ae) or the released stage-2 vgt_ae_*.pth"
        )
    if dcae.get("latent_channels", 32) != decoder_channels:
        raise ConversionError(f"the checkpoint's DC-AE decoder takes {decoder_channels} latent channels, the DC-AE "
                              f"config {dcae.get('latent_channels', 32)}: pass the matching --dcae-config")
    blocks = len({k.split(".")[2] for k in state if k.startswith("bottleneck.blocks.")})
    projector = state.get("vision.projector.linear_1.weight")
    config = AEConfig(encoder="vlm", backbone=backbone.name, latent_channels=decoder_channels,
                      bottleneck_blocks=blocks, bottleneck_norm_eps=AE_NORM_EPS, channel_norm=True,
                      projector_width=None if projector is None else projector.shape[0], dcae=dcae,
                      image_size=backbone.vision.image_size)
    ae = VGTAutoencoder.from_backbone(backbone, config)
    expected = {k: v.shape for k, v in ae.state_dict().items()}
    check_against(state, expected, "the VGT-AE checkpoint",
                  "Pass the VLM folder and DC-AE config the AE was trained with (InternVL3-1B-hf's vision path for "
                  "vgt_ae_internvl3.pth, Qwen2.5-VL-3B-Instruct for vgt_ae_qwen25vl.pth; dc-ae-f32c32-sana-1.1)")
    ae.load_state_dict(state, strict=True)
    return ae


def build_generator(backbone, ae, llm: dict[str, torch.Tensor], generator: dict[str, torch.Tensor], kind: str):
    from vgt.ar.config import ARConfig, FlowHeadConfig, SamplingConfig
    from vgt.ar.model import VGTForGeneration

    language_model = backbone.text.language_model
    check_against({k.removeprefix("llm."): v for k, v in llm.items()},
                  {k: v.shape for k, v in language_model.state_dict().items()}, "the AR checkpoint's language model",
                  "Pass the VLM folder the generator was tuned from (InternVL3-2B-hf for the 1.6B InternVL release, "
                  "Qwen2.5-VL-3B-Instruct for the Qwen release)")
    language_model.load_state_dict({k.removeprefix("llm."): v for k, v in llm.items()}, strict=True)
    lm_head = generator.pop("lm_head.weight", None)
    if lm_head is not None:  # frozen in training: the pretrained head, which understanding uses
        head_weight = backbone.lm_head.weight
        if head_weight.shape != lm_head.shape:
            raise ConversionError(f"the checkpoint's lm_head {tuple(lm_head.shape)} does not fit the VLM's "
                                  f"{tuple(head_weight.shape)}: pass the VLM folder the generator was tuned from")
        tied = head_weight.data_ptr() == language_model.embed_tokens.weight.data_ptr()
        if tied and not lm_head.is_meta and not torch.equal(lm_head, language_model.embed_tokens.weight):
            raise ConversionError("the VLM ties lm_head to embed_tokens but the checkpoint's two differ: pass the "
                                  "VLM folder the generator was tuned from")
        with torch.no_grad():
            head_weight.copy_(lm_head)
    for needed in ("head.input_proj.weight", "head.time_embed.mlp.0.weight", "queries.query_grid"):
        if needed not in generator:
            raise ConversionError(f"the AR checkpoint lacks {needed!r}: not a complete VGT-AR checkpoint")
    head = FlowHeadConfig(width=generator["head.input_proj.weight"].shape[0],
                          depth=len({k.split(".")[2] for k in generator if k.startswith("head.res_blocks.")}),
                          time_embed_dim=generator["head.time_embed.mlp.0.weight"].shape[1], timestep_scale=1.0)
    grid = generator["queries.query_grid"]
    if grid.dim() != 3 or grid.shape[1] != grid.shape[2]:
        raise ConversionError(f"the query grid has shape {tuple(grid.shape)}, expected a square [D, G, G] grid")
    ids = backbone.tokenizer.encode(OFFICIAL_IMAGE_START, add_special_tokens=True)
    latent_channels = generator["head.input_proj.weight"].shape[1]
    config = ARConfig(hidden_size=backbone.text.hidden_size, latent_channels=latent_channels,
                      max_grid=grid.shape[-1], position_init="normal", head=head,
                      timestep_shift=KINDS[kind]["timestep_shift"], image_start_ids=list(ids),
                      prompt_template=OFFICIAL_PROMPT_TEMPLATE,
                      sampling=SamplingConfig(**{**OFFICIAL_SAMPLING,
                                                 "grid_size": min(OFFICIAL_SAMPLING["grid_size"], grid.shape[-1])}),
                      decode_position_offset=1 - len(ids) if kind == "qwen2_5_vl" else 0)
    model = VGTForGeneration(config, backbone, ae=ae)
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("llm.")}
    check_against(generator, expected, "the AR checkpoint's generator weights",
                  "The head width/depth and grids are read from the checkpoint; a mismatch means a damaged file")
    model.load_state_dict({**generator, **{k: v for k, v in model.state_dict().items() if k.startswith("llm.")}},
                          strict=True)
    return model


def convert_official(out: str | Path, vlm: str | Path, ar: str | Path | None = None, ae: str | Path | None = None,
                     dcae_config: str | Path | None = None, weights: str = DEFAULT_WEIGHTS,
                     num_layers: int | None = None, overwrite: bool = False) -> ConvertedModel:
    """Convert the authors' files into a vgt folder: a pipeline (with an AR checkpoint; its `vgt_ae.*` tensors
    hold the AE unless `ae` is given) or a VGT-AE folder (an AE checkpoint alone)."""
    from vgt.pipeline import VGTPipeline

    if ar is None and ae is None:
        raise ConversionError("nothing to convert: pass an AR checkpoint (iter_*.pth) and/or a VGT-AE .pth")
    from vgt.io import check_replaceable

    out = Path(out)
    sources = [p for p in (vlm, ar, ae, dcae_config) if p is not None and Path(p).exists()]
    check_replaceable(out, overwrite, protect=sources)  # before the work, not after it
    report = ConversionReport()
    dcae = resolve_dcae_config(dcae_config)
    backbone = load_base_vlm(vlm, report)
    kind = "qwen2_5_vl" if backbone.model.config.model_type == "qwen2_5_vl" else "internvl"
    ae_state, model_state = None, None
    if ar is not None:
        model_state, embedded_ae = _split_ae(select_weights(read_pth(ar), weights, report, "AR checkpoint"))
        marker = KINDS[kind]["ar_marker"]
        if not any(k.startswith(marker) for k in model_state):
            other = next(n for n in KINDS if n != kind)
            if any(k.startswith(KINDS[other]["ar_marker"]) for k in model_state):
                raise ConversionError(f"the AR checkpoint is a {other} model but the VLM folder holds a {kind} model; "
                                      f"pass the {other} VLM folder")
        if ae is None:
            ae_state = embedded_ae
            report.notes.append("VGT-AE: taken from the AR checkpoint's vgt_ae.* tensors")
        else:
            for key in embedded_ae:
                report.add("dropped", AE_PREFIX + key, "replaced by the --ae file", "ar-embedded-ae")
    if ae is not None:
        ae_state = select_weights(read_pth(ae), weights if ar is None else DEFAULT_WEIGHTS, report,
                                  "VGT-AE checkpoint")
    if not ae_state:
        raise ConversionError("the AR checkpoint holds no vgt_ae.* tensors; pass the VGT-AE file with --ae")

    if model_state is None:
        autoencoder = build_ae(backbone, ae_state, dcae, report, kind)
        autoencoder.save_pretrained(out, overwrite=overwrite)  # self-contained: its config describes the vision path
        return ConvertedModel(report, out, kind)

    mapped = apply_rules(model_state, KINDS[kind]["ar_rules"], report, "AR checkpoint")
    llm = _resolve_duplicates({k: v for k, v in mapped.items() if k.startswith(("llm.", "duplicate."))}, report)
    generator = {k: v for k, v in mapped.items() if not k.startswith(("llm.", "duplicate."))}
    count = _layer_count(llm, backbone.model.config.text_config.num_hidden_layers, num_layers, report)
    prune_language_model(backbone, count)
    autoencoder = build_ae(backbone, ae_state, dcae, report, kind)
    model = build_generator(backbone, autoencoder, llm, generator, kind)
    VGTPipeline.from_generator(model, autoencoder).save_pretrained(out, overwrite=overwrite)
    return ConvertedModel(report, out, kind)
