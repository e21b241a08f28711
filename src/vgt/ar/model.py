"""VGT-AR: the backbone's language model, tuned to generate VGT-AE latents one position (or group) at a time.

Training sequence of one row (see `vgt.ar.sequence` for the layout, pads and position ids):

    [prompt "Generate an image: {caption}"] [<img>] [q_p1, e_p1, q_p2, e_p2, ..., q_pN, e_pN]

for a random order p of the N latent positions. The hidden state at q_pk sees the prompt and the latents of
p1..p(k-1) but not z_pk; W_out maps it to the condition of the flow head, which is trained by rectified flow
(data at t = 1) to produce z_pk. The AE is frozen and held by reference only: its weights are not part of this
module's state dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from vgt.ae.bottleneck import normalize_latents
from vgt.ar.config import ARConfig
from vgt.ar.flow_head import FlowHead
from vgt.ar.position_queries import PositionQueries
from vgt.ar.randomness import draw, generation_orders, sample_timesteps
from vgt.ar.sequence import SlotLayout, left_align_padding, training_layout
from vgt.backbones.base import GENERATION_INSTRUCTION, UNCONDITIONAL_INSTRUCTION, Backbone
from vgt.loading import CONFIG_NAME, WEIGHTS_NAME, TypedConfigModel, weights_file

__all__ = ["ModelMixin", "VGTForGeneration"]  # ModelMixin: diffusers' pipeline loader looks for it here


@dataclass
class ARLossOutput:
    loss: torch.Tensor
    query_states: torch.Tensor  # [B, N, D] hidden states at the queries, in generation order


def is_generator_folder(directory: Path) -> bool:
    """Whether `directory` holds a generator written by `VGTForGeneration.save_pretrained`."""
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"hidden_size", "head", "sampling"} <= set(config) and (
        weights_file(directory) is not None)


class VGTForGeneration(TypedConfigModel):
    """VGT-AR, a diffusers model: position grids, the image-start embedding `<img>`, W_in, W_out and the flow head,
    built from `config` alone. The language model is the backbone's: it is attached (`attach`, or the `backbone`
    argument) and trained with the generator, but saved with the VLM, not here. `config` is the typed `ARConfig`."""

    config_class = ARConfig

    def __init__(self, config: ARConfig, backbone: Backbone | None = None, ae: nn.Module | None = None):
        super().__init__()
        self._settings = config
        object.__setattr__(self, "backbone", None)  # set by `attach`
        object.__setattr__(self, "ae", None)
        if backbone is not None:
            self.attach(backbone, ae)
        hidden = config.hidden_size
        self.queries = PositionQueries(hidden, config.max_grid, config.position_init)
        if config.image_start_ids is None:
            self.image_start = nn.Parameter(torch.empty(hidden))
        else:  # the language model's own token embeddings (part of `llm`)
            self.register_parameter("image_start", None)
        self.image_in_projector = nn.Linear(config.latent_channels, hidden)  # W_in
        self.image_out_projector = nn.Linear(hidden, hidden)  # W_out
        self.head = FlowHead(config.head)
        self.reset_image_start()

    def attach(self, backbone: Backbone, ae: nn.Module | None = None) -> None:
        """Hand the generator the backbone's language model (trainable, registered as `llm`) and, by reference, the
        backbone (tokenizer, prompts) and the frozen AE, checking that they fit the config."""
        config = self.config
        hidden = backbone.text.hidden_size
        if config.hidden_size != hidden:
            raise ValueError(
                f"ARConfig.hidden_size={config.hidden_size} but the backbone's language model has width {hidden}; "
                "build the config with hidden_size=backbone.text.hidden_size"
            )
        if ae is not None and getattr(ae, "latent_channels", config.latent_channels) != config.latent_channels:
            raise ValueError(f"the AE has {ae.latent_channels} latent channels, the config {config.latent_channels}")
        channel_norm = getattr(getattr(ae, "config", None), "channel_norm", None)
        if channel_norm is not None and bool(channel_norm) != config.normalize_sampled_latents:
            raise ValueError(
                f"the AE {'normalizes' if channel_norm else 'does not normalize'} its latents but the generator "
                f"config has normalize_sampled_latents={config.normalize_sampled_latents}; build the config with "
                "normalize_sampled_latents=ae.config.channel_norm (sampled latents must match the AE's)"
            )
        self.llm = backbone.text  # fully trainable
        # References only: the vision tower is not part of the generator and the AE stays frozen.
        object.__setattr__(self, "backbone", backbone)
        object.__setattr__(self, "ae", ae)

    @apply_forward_hook
    def generate(self, prompts: list[str | None], grid: tuple[int, int], **kwargs: Any):
        """`vgt.ar.sampling.generate_latents` with this model (the entry diffusers' CPU offload hooks onto)."""
        from vgt.ar.sampling import generate_latents

        return generate_latents(self, prompts, grid, **kwargs)

    def generator_state(self) -> dict[str, torch.Tensor]:
        """The generator's own weights: everything but the language model, which is saved with the VLM."""
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("llm.")}

    def save_pretrained(self, directory: str | Path, overwrite: bool = False, **kwargs: Any) -> None:
        """config.json + diffusion_pytorch_model.safetensors (the generator's own weights, not the attached
        language model's), written atomically. An existing folder is replaced only when it holds a generator (or
        nothing), or with `overwrite`."""
        from safetensors.torch import save_file

        from vgt.io import atomic_directory

        with atomic_directory(directory, overwrite, ours=is_generator_folder) as staging:
            self.save_config(staging)
            save_file(self.generator_state(), str(staging / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def write_config(cls, config: ARConfig, directory: str | Path) -> None:
        """Replace the config.json of the generator folder `directory` with `config`, written as `save_pretrained`
        writes it (diffusers' `_class_name`, `_diffusers_version`) and atomically; the weights stay as they are.
        The model it serializes is built on the meta device, so no weights are allocated."""
        from vgt.io import atomic_write_text

        with torch.device("meta"):
            model = cls(config)
        atomic_write_text(Path(directory) / CONFIG_NAME, model.to_json_string())

    @classmethod
    def from_pretrained(cls, directory: str | Path, subfolder: str | None = None,
                        torch_dtype: torch.dtype | None = None,
                        backbone: Backbone | None = None, ae: nn.Module | None = None,
                        **kwargs: Any) -> VGTForGeneration:
        """Load a saved generator strictly (any missing, unexpected or mis-shaped weight is an error), from a local
        folder or a Hub repository id (with `subfolder`, e.g. "generator"); attach `backbone` / `ae` when given."""
        from vgt.loading import check_loading_kwargs, load_component, read_component_config, resolve_folder

        check_loading_kwargs(kwargs, "a VGT-AR generator")
        folder = resolve_folder(directory, subfolder, **kwargs)
        values = read_component_config(folder, "VGT-AR generator", "VGTForGeneration.save_pretrained")
        config = ARConfig.from_dict(values)
        model = load_component(lambda: cls(config), folder, torch_dtype)
        if backbone is not None:
            model.attach(backbone, ae)
        return model

    @torch.no_grad()
    def reset_image_start(self) -> None:
        """Start from the VLM's own image-start token embedding when it has one (InternVL's `<img>`)."""
        if self.image_start is None:
            return
        token_id = getattr(self.backbone, "image_start_token_id", None)
        if token_id is None or not hasattr(self, "llm"):
            nn.init.normal_(self.image_start, std=0.02)
        else:
            ids = torch.tensor([[token_id]], device=self.image_start.device)
            self.image_start.copy_(self.llm.embed_tokens(ids)[0, 0].to(self.image_start))

    # ---- building blocks shared with the sampler -------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.image_in_projector.weight.device

    @property
    def prefix_length(self) -> int:
        """Slots of the image-start prefix (`<img>`)."""
        return len(self.config.image_start_ids or [None])

    def prompts(self, captions: list[str | None]) -> dict[str, torch.Tensor]:
        """Right-padded `input_ids` / `attention_mask` of the generation prompts (None: unconditional)."""
        template = self.config.prompt_template
        if template is None:
            return self.backbone.generation_prompts(captions)
        from vgt.backbones.hf import right_padded

        texts = [template.format(instruction=UNCONDITIONAL_INSTRUCTION if c is None
                                 else GENERATION_INSTRUCTION.format(caption=c.strip())) for c in captions]
        return right_padded(self.backbone.tokenizer, texts)

    def prompt_embeddings(self, captions: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the left-aligned prompts followed by `<img>` ([B, T + prefix_length, D]) and the prompt
        mask [B, T]."""
        if not captions:
            raise ValueError("got an empty list of captions/prompts")
        prompts = self.prompts(list(captions))
        input_ids, mask = left_align_padding(prompts["input_ids"].to(self.device),
                                             prompts["attention_mask"].to(self.device))
        text = self.llm.embed_tokens(input_ids)
        if self.image_start is None:
            ids = torch.tensor([self.config.image_start_ids], device=self.device)
            start = self.llm.embed_tokens(ids).to(text.dtype).expand(text.shape[0], -1, -1)
        else:
            start = self.image_start.to(text.dtype).expand(text.shape[0], 1, -1)
        return torch.cat([text, start], dim=1), mask

    def query_tokens(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries Q_i + P_i, positions P_i) for an h x w latent grid, [N, D] each in raster order."""
        return self.queries(height, width)

    def latent_tokens(self, z: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """e_i = W_in z_i + P_i for latent tokens z [B, k, C] at positions [B, k, D]."""
        return self.image_in_projector(z.to(self.image_in_projector.weight.dtype)) + positions

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, query_states: torch.Tensor) -> torch.Tensor:
        """Head velocity for noisy tokens x_t [.., C] at times t [..] given the LLM states at their queries (which
        broadcast against x_t: K noise draws of a token share one state)."""
        return self.head(x_t, t, self.image_out_projector(query_states))

    def normalize_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """The AE's per-token channel LayerNorm on latent tokens [B, k, C] (when the AE uses it)."""
        if not self.config.normalize_sampled_latents:
            return z
        return normalize_latents(z.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)

    @property
    def attention_implementation(self) -> str:
        """The HF attention kernel of the language model ("sdpa", "eager", ...). The decoder needs custom 4-D masks,
        which flash-attention kernels do not take."""
        config = getattr(getattr(self.llm, "language_model", None), "config", None)
        implementation = getattr(config, "_attn_implementation", None) or "eager"
        if "flash" in implementation:
            raise ValueError(
                f"VGT-AR needs custom 4-D attention masks, which the {implementation!r} kernel does not support; "
                "load the backbone with attn_implementation='sdpa' (or 'eager')"
            )
        return implementation

    def run_llm(self, embeds: torch.Tensor, layout: SlotLayout, start: int, end: int, cache=None,
                use_cache: bool = False, position_ids: torch.Tensor | None = None):
        """Language model over slots start..end-1 of `layout` (slots before `start` come from `cache`);
        `position_ids` replaces the layout's rotary positions (not its attention rule)."""
        if self.attention_implementation == "eager":
            mask = layout.attention_bias(start, end, dtype=embeds.dtype)
        else:  # sdpa / flex take boolean masks (True = attend), as transformers itself builds them
            mask = layout.allowed(start, end)
        positions = layout.position[:, start:end] if position_ids is None else position_ids
        return self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                        past_key_values=cache, use_cache=use_cache)

    # ---- training ----------------------------------------------------------------------------------------------

    def teacher_forced_query_states(self, latents: torch.Tensor, captions: list[str | None],
                                    orders: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, N, D] at the queries of the full training sequence, in generation order.

        latents: [B, C, h, w] (already normalized as the AE emits them); orders: [B, N] raster indices."""
        b, c, h, w = latents.shape
        n = h * w
        if len(captions) != b:
            raise ValueError(f"got {len(captions)} captions for {b} latents")
        prefix, mask = self.prompt_embeddings(captions)
        queries, positions = self.query_tokens(h, w)
        tokens = latents.flatten(2).transpose(1, 2)  # [B, N, C] raster
        z = tokens.gather(1, orders[..., None].expand(b, n, c))
        q = queries[orders]
        e = self.latent_tokens(z, positions[orders])
        image = torch.stack([q.to(prefix.dtype), e.to(prefix.dtype)], dim=2).flatten(1, 2)  # q0, e0, q1, e1, ...
        embeds = torch.cat([prefix, image], dim=1)
        layout = training_layout(mask, n, self.prefix_length)
        hidden = self.run_llm(embeds, layout, 0, embeds.shape[1]).last_hidden_state
        return hidden[:, prefix.shape[1] :: 2]

    def forward(self, latents: torch.Tensor, captions: list[str | None],
                generator: torch.Generator | None = None) -> ARLossOutput:
        """Rectified-flow loss on latents [B, C, h, w] given captions; all randomness (caption dropout, order,
        timesteps, noise) comes from `generator`."""
        b, c, h, w = latents.shape
        n = h * w
        device = self.device
        latents = latents.to(device)
        drop = draw((b,), generator, device, kind="rand") < self.config.uncond_prob
        captions = [None if d else cap for cap, d in zip(captions, drop.tolist(), strict=True)]
        orders = generation_orders(b, n, "random", generator, device)
        states = self.teacher_forced_query_states(latents, captions, orders)
        z = latents.flatten(2).transpose(1, 2).gather(1, orders[..., None].expand(b, n, c)).float()
        k = self.config.head_noise_samples
        t = sample_timesteps((b, n * k), self.config.timestep_shift, generator, device).view(b, k, n)
        noise = draw((b, n * k, c), generator, device).view(b, k, n, c)
        z = z[:, None]  # the k noise draws of a token share its latent and its query state: broadcast, not copied
        x_t = t[..., None] * z + (1 - t[..., None]) * noise
        target = z - noise
        pred = self.velocity(x_t, t, states[:, None])
        loss = (pred.float() - target).pow(2).mean()
        return ARLossOutput(loss=loss, query_states=states)
