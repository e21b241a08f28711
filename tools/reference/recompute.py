"""Recompute the reference fixtures from the fixture files alone, without the authors' code.

Uses transformers 5 (HF-native InternVL / Qwen2.5-VL modules), diffusers' DC-AE decoder and vgt's flow head and
SDE sampler, with the official key renames listed in FIXTURES.md. Prints the largest difference to each
reference tensor: a check that the fixtures are self-consistent and reachable from vgt's stack (the numbers quoted
in FIXTURES.md). Run with vgt's Python: `PYTHONPATH=src python tools/reference/recompute.py tests/fixtures/official`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, InternVLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from vgt.ae.dcae import build_dcae_decoder
from vgt.ar.config import FlowHeadConfig
from vgt.ar.flow_head import FlowHead
from vgt.ar.sampling import sample_sde
from vgt.backbones.internvl import pixel_shuffle
from vgt.backbones.qwen2_5_vl import patchify


def report(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    diff, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
    print(f"  {name:26s} max|diff| {diff:.1e}   (reference max|x| {scale:.2f})")


def sub(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def token_ln(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def internvit_to_hf(enc: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    width = enc["embeddings.class_embedding"].shape[-1]
    out = {"embeddings.cls_token": enc["embeddings.class_embedding"],
           "embeddings.position_embeddings": enc["embeddings.position_embedding"],
           "embeddings.patch_embeddings.projection.weight": enc["embeddings.patch_embedding.weight"],
           "embeddings.patch_embeddings.projection.bias": enc["embeddings.patch_embedding.bias"]}
    renames = [("attn.proj", "attention.projection_layer"), ("norm1", "layernorm_before"),
               ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"encoder.layer.{i}."
        for j, name in enumerate("qkv"):
            for kind in ("weight", "bias"):
                out[f"{dst}attention.{name}_proj.{kind}"] = enc[f"{src}attn.qkv.{kind}"][j * width:(j + 1) * width]
        for a, b in renames:
            for kind in ("weight", "bias"):
                out[f"{dst}{b}.{kind}"] = enc[f"{src}{a}.{kind}"]
        out[f"{dst}lambda_1"], out[f"{dst}lambda_2"] = enc[f"{src}ls1"], enc[f"{src}ls2"]
    return out


def bottleneck(ae: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    def mlp(p, y, eps):
        y = F.layer_norm(y, y.shape[-1:], ae[f"{p}.0.weight"], ae[f"{p}.0.bias"], eps)
        y = F.gelu(F.linear(y, ae[f"{p}.1.weight"], ae[f"{p}.1.bias"]))
        return F.linear(y, ae[f"{p}.3.weight"], ae[f"{p}.3.bias"])

    for i in range(3):
        x = x + mlp(f"down_blocks.{i}.mlp", x, 1e-6)
    return mlp("down_mlp", x, 1e-5)


def check_ae(kind: str, folder: Path, weights: dict[str, torch.Tensor], config) -> None:
    ref = load_file(folder / "reference_ae.safetensors")
    ae = sub(weights, "vgt_ae.")
    images = ref["images"].float()
    if kind == "internvl":
        model = InternVLForConditionalGeneration(config).eval()
        model.model.vision_tower.load_state_dict(
            internvit_to_hf(sub(ae, "encoder."), config.vision_config.num_hidden_layers))
        mlp1 = sub(ae, "mlp1.")
        names = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}
        model.model.multi_modal_projector.load_state_dict(
            {f"{names[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in mlp1.items()})
        mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    else:
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        model.model.visual.load_state_dict(sub(ae, "encoder."))
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    pixels = ((images + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    b, _, height, width = pixels.shape
    if kind == "internvl":
        hidden = model.model.vision_tower(pixel_values=pixels).last_hidden_state[:, 1:]
        grid = hidden.reshape(b, height // 14, width // 14, -1)
        merged = pixel_shuffle(grid, 2)
        features = model.model.multi_modal_projector(merged.reshape(b, -1, merged.shape[-1]))
    else:
        grid_thw = torch.tensor([[1, height // 14, width // 14]] * b)
        features = model.model.visual(patchify(pixels, 14, 2, 2), grid_thw=grid_thw).pooler_output.reshape(b, -1, 32)
    report("AE features", features, ref["features"])
    h, w = ref["latents"].shape[2:]
    raw = bottleneck(ae, features).transpose(1, 2).reshape(b, -1, h, w)
    report("AE latents before LN", raw, ref["latents_before_norm"])
    report("AE latents", token_ln(raw.movedim(1, -1)).movedim(-1, 1), ref["latents"])
    report("AE decoded", decode(folder, ae, ref["latents"]), ref["decoded"])


def decode(folder: Path, ae: dict[str, torch.Tensor], latents: torch.Tensor) -> torch.Tensor:
    decoder = build_dcae_decoder(json.loads((folder / "dcae_config.json").read_text()))
    decoder.load_state_dict({k: v.contiguous() for k, v in sub(ae, "decoder.").items()})
    size = (28 * latents.shape[2], 28 * latents.shape[3])
    return F.interpolate(decoder(latents), size=size, mode="bilinear", align_corners=False)


class Generator:
    """The VGT-AR pieces of one converted checkpoint (fp32), run without a KV cache."""

    def __init__(self, kind: str, weights: dict[str, torch.Tensor], config, tokenizer_ids: list[int]):
        text = config.text_config
        if kind == "internvl":
            self.llm = InternVLForConditionalGeneration(config).model.language_model
            prefix = "lmm.language_model.model."
        else:
            layers = 1 + max(int(k.split(".")[4]) for k in weights if k.startswith("lmm.model.language_model.layers."))
            text.num_hidden_layers = layers  # the checkpoint's (pruned) depth
            self.llm = Qwen2_5_VLForConditionalGeneration(config).model.language_model
            prefix = "lmm.model.language_model."
        self.llm.load_state_dict(sub(weights, prefix))
        self.llm.eval()
        self.head = FlowHead(FlowHeadConfig(latent_channels=32, cond_dim=text.hidden_size, width=32, depth=2,
                                            timestep_scale=1.0))
        self.head.load_state_dict(sub(weights, "image_head.net."))
        self.w = weights
        self.image_start = tokenizer_ids

    def grids(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.w["adaptive_metaquery.max_metaquery"].shape[-1]
        top, left = (size - h) // 2, (size - w) // 2

        def crop(grid):
            return grid[0, :, top:top + h, left:left + w].reshape(grid.shape[1], -1).t()

        positions = crop(self.w["adaptive_metaquery.pos_encoding.grid_embed"])
        return crop(self.w["adaptive_metaquery.max_metaquery"]) + positions, positions

    def latent_token(self, z: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return F.linear(z, self.w["image_in_projector.weight"], self.w["image_in_projector.bias"]) + position

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        return F.linear(states, self.w["image_out_projector.weight"], self.w["image_out_projector.bias"])

    def prefix(self, input_ids: torch.Tensor) -> torch.Tensor:
        start = self.llm.embed_tokens(torch.tensor([self.image_start])).expand(len(input_ids), -1, -1)
        return torch.cat([self.llm.embed_tokens(input_ids), start], dim=1)


def check_teacher_forced(gen: Generator, folder: Path) -> None:
    ref = load_file(folder / "reference_ar.safetensors")
    z = ref["latents"]
    b, c, h, w = z.shape
    queries, positions = gen.grids(h, w)
    order = ref["order"]
    tokens = gen.latent_token(z.flatten(2).transpose(1, 2), positions)
    image = torch.stack([queries[order].expand(b, -1, -1), tokens[:, order]], dim=2).flatten(1, 2)
    embeds = torch.cat([gen.prefix(ref["input_ids"]), image], dim=1)
    mask = torch.cat([ref["attention_mask"], torch.ones(b, embeds.shape[1] - ref["attention_mask"].shape[1],
                                                        dtype=torch.long)], dim=1)
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    assert torch.equal(position_ids, ref["position_ids"])
    hidden = gen.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).last_hidden_state
    states = hidden[:, -image.shape[1]:][:, 0::2][:, torch.argsort(order)]
    report("TF query states", states, ref["query_states"])
    report("TF velocity", gen.head(ref["x_t"], ref["t"], gen.condition(states)), ref["velocity"])


def check_generate(kind: str, gen: Generator, folder: Path, settings: dict) -> None:
    ref = load_file(folder / "reference_generate.safetensors")
    g = settings["generate"]
    h, w = g["height"] // 28, g["width"] // 28
    n = h * w
    queries, positions = gen.grids(h, w)
    order, noise, scale = ref["order"], ref["noise"], g["cfg_scale"]
    embeds = [gen.prefix(ref["input_ids"])]
    text_len = ref["input_ids"].shape[1]
    position_ids = [torch.arange(embeds[0].shape[1] + 1)]
    tokens = torch.zeros(n, 32)
    states_in_order, z = [], None
    for step in range(n):
        if step > 0:
            embeds.append(gen.latent_token(z, positions[order[step - 1]]).expand(2, 1, -1))
            if kind == "internvl":  # contiguous (= training) positions
                last = position_ids[-1][-1].item()
                position_ids.append(torch.tensor([last + 1, last + 2]))
            else:  # their Qwen loop: text_len + 2 step + i, without the <img> slots
                position_ids.append(torch.tensor([text_len + 2 * step, text_len + 2 * step + 1]))
        embeds.append(queries[order[step]].expand(2, 1, -1))
        pos = torch.cat(position_ids).expand(2, -1)
        recorded = ref[f"position_ids_step{step}"]
        assert torch.equal(pos[:, -recorded.shape[1]:], recorded), step
        states = gen.llm(inputs_embeds=torch.cat(embeds, dim=1), position_ids=pos).last_hidden_state[:, -1]
        states_in_order.append(states)
        condition = gen.condition(states)[:, None]
        cfg = 1 + (scale - 1) * (n - step) / n
        assert abs(cfg - ref["cfg"][step].item()) < 1e-12

        def velocity(x, t, condition=condition, cfg=cfg):
            v = gen.head(torch.cat([x, x]), torch.cat([t, t]), condition).float()
            return v[1:] + cfg * (v[:1] - v[1:])

        sample = sample_sde(velocity, noise[:, step:step + 1, 0], g["num_steps"], None, 0.96,
                            step_noise=noise[:, step:step + 1, 1:])
        z = token_ln(sample)
        tokens[order[step]] = z[0, 0]
    report("generation query states", torch.stack(states_in_order, dim=1), ref["query_states"])
    latents = tokens.t().reshape(1, 32, h, w)
    report("generation latents", latents, ref["latents"])
    report("generation images", decode(folder, sub(gen.w, "vgt_ae."), latents), ref["images"])


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("fixtures", type=Path, help="tests/fixtures/official")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for kind in ("internvl", "qwen"):
        folder = args.fixtures / kind
        print(kind)
        checkpoint = torch.load(folder / "iter_5.pth", weights_only=True)
        weights = {k[len("module."):]: v.float() for k, v in checkpoint["ema_state_dict"].items()
                   if k.startswith("module.")}
        settings = json.loads((folder / "reference.json").read_text())
        config = AutoConfig.from_pretrained(folder / "base_vlm")
        check_ae(kind, folder, weights, config)
        gen = Generator(kind, weights, config, settings["generate"]["image_start_ids"])
        check_teacher_forced(gen, folder)
        check_generate(kind, gen, folder, settings)


if __name__ == "__main__":
    main()
