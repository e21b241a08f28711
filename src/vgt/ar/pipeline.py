"""`VGTPipeline`: text -> image with a tuned backbone, its VGT-AE and the VGT-AR generator, in one folder.

Folder layout (`save_pretrained` / `from_pretrained`):

    DIR/pipeline.json              format marker and the backbone's registry name
    DIR/backbone/                  the VLM in its HF layout, with the *tuned* language model
    DIR/ae/                        the VGT-AE (config.json + model.safetensors)
    DIR/generator/config.json      ARConfig (architecture and sampling defaults)
    DIR/generator/model.safetensors  position grids, <img>, W_in, W_out, flow head (the LLM lives in backbone/)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from vgt.ar.config import CFG_SCHEDULES, ORDERS, SAMPLERS, ARConfig
from vgt.ar.model import VGTForGeneration
from vgt.ar.sampling import generate_latents
from vgt.data.transforms import to_pil as image_to_pil
from vgt.editing import prepare_edit
from vgt.io import read_json
from vgt.pretrained import DEFAULT_MODEL_ENV, default_model_dir  # noqa: F401  (re-exported; the model used by default)
from vgt.text import check_prompt
from vgt.train.checkpoint import load_state_strict, read_weights

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT = "vgt-pipeline"
GENERATOR_DIR, BACKBONE_DIR, AE_DIR = "generator", "backbone", "ae"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def generator_state(model: VGTForGeneration) -> dict[str, torch.Tensor]:
    """The generator's own weights: everything but the language model, which is saved with the backbone."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("llm.")}


def load_generator_state(model: VGTForGeneration, path: str | Path) -> None:
    """Strict load of everything but `llm.*`, which comes from the backbone folder."""
    load_state_strict(model, read_weights(path), str(path), loaded_elsewhere=("llm.",))


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL images."""
    return [image_to_pil(image) for image in images]


def image_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile equally sized images into one (row-major, as square as possible)."""
    if not images:
        raise ValueError("no images to tile")
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    w, h = images[0].size
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    return grid


@dataclass
class VGTPipelineOutput:
    #: PIL images, [B, H, W, 3] floats in [0, 1] (np), [B, 3, H, W] in [0, 1] (pt) or latents [B, C, h, w]
    images: list[Image.Image] | np.ndarray | torch.Tensor


class VGTPipeline:
    def __init__(self, model: VGTForGeneration, ae):
        if model.ae is not ae:
            raise ValueError("the generator must hold the pipeline's AE (VGTForGeneration(config, backbone, ae=ae))")
        self.model = model.eval()
        self.ae = ae.eval().requires_grad_(False)

    @property
    def config(self) -> ARConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device) -> VGTPipeline:
        self.model.to(device)
        self.ae.to(device)
        return self

    # ---- persistence ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, overwrite: bool = False) -> None:
        """Write the whole model into one folder, atomically. An existing folder is replaced only when it is a VGT
        pipeline folder (or empty), or with `overwrite`."""
        from vgt.io import atomic_directory, holds

        with atomic_directory(directory, overwrite, ours=holds(PIPELINE_FILE)) as staging:
            self.model.backbone.save_pretrained(staging / BACKBONE_DIR)
            self.ae.save_pretrained(staging / AE_DIR, backbone_path=f"../{BACKBONE_DIR}")  # the folder stays movable
            (staging / GENERATOR_DIR).mkdir()
            self.config.save(staging / GENERATOR_DIR / CONFIG_NAME)
            save_file(generator_state(self.model), str(staging / GENERATOR_DIR / WEIGHTS_NAME),
                      metadata={"format": "pt"})
            record = {"format": PIPELINE_FORMAT, "version": 1, "backbone": self.model.backbone.name}
            (staging / PIPELINE_FILE).write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> VGTPipeline:
        """Load a pipeline folder (None: the default model, `vgt.pretrained.default_model_dir()`). `dtype` (e.g.
        torch.bfloat16 on a GPU) applies to every weight; sampling arithmetic of the head samplers stays in
        float32."""
        from vgt.ae.model import VGTAutoencoder
        from vgt.backbones.registry import load_backbone

        directory = Path(directory) if directory is not None else default_model_dir()
        record_file = directory / PIPELINE_FILE
        if not record_file.is_file():
            raise FileNotFoundError(
                f"{str(directory)!r} is not a VGT pipeline folder (no {PIPELINE_FILE}); expected the folder written "
                "by VGTPipeline.save_pretrained or `vgt train ar --export`"
            )
        record = read_json(record_file)
        if record.get("format") != PIPELINE_FORMAT:
            raise ValueError(f"{str(record_file)!r} is not a {PIPELINE_FORMAT} record: {record}")
        backbone = load_backbone(record.get("backbone", "auto"), directory / BACKBONE_DIR)
        ae = VGTAutoencoder.from_pretrained(directory / AE_DIR, backbone=backbone)
        config = ARConfig.load(directory / GENERATOR_DIR / CONFIG_NAME)
        model = VGTForGeneration(config, backbone, ae=ae)
        load_generator_state(model, directory / GENERATOR_DIR / WEIGHTS_NAME)
        model.to(dtype)
        ae.to(dtype)
        return cls(model, ae).to(device)

    # ---- generation ------------------------------------------------------------------------------------------------

    def latent_grid(self, height: int | None, width: int | None) -> tuple[int, int]:
        stride = self.ae.stride
        default = self.config.sampling.grid_size * stride
        height, width = default if height is None else height, default if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
            if value % stride:
                raise ValueError(f"{name} {value} is not a multiple of the AE stride {stride}; use e.g. "
                                 f"{max(1, round(value / stride)) * stride}")
        grid = (height // stride, width // stride)
        if max(grid) > self.config.max_grid:
            raise ValueError(
                f"{height}x{width} px is a {grid[0]}x{grid[1]} latent grid, larger than this model's "
                f"{self.config.max_grid}x{self.config.max_grid} query grid (at most "
                f"{self.config.max_grid * stride} px per side)"
            )
        return grid

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        tokens_per_step: int | list[int] | None = None,
        order: str | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        sampler: str | None = None,
        cfg_schedule: str | None = None,
        temperature: float | None = None,
        progress: bool = False,
        image: Image.Image | np.ndarray | None = None,
        mask_image: Image.Image | np.ndarray | None = None,
        strength: float | None = None,
        paste_back: bool = False,
        step_callback: Callable[[int, int], None] | None = None,
    ) -> VGTPipelineOutput:
        """Generate `num_images_per_prompt` images per prompt. Arguments left at None take the model's saved
        sampling defaults (`config.sampling`: guidance 4.5, 30 head steps, 1 token per step, random order, SDE,
        linear CFG schedule, temperature 1 unless the model was saved with others). `generator`: one for the whole
        call, or one per image (prompt-major), which makes each image independent of what else is in the batch.

        Editing (`vgt.editing`): `image` with `mask_image` (white = regenerate) inpaints or outpaints, `image` alone
        makes variations; `strength` is the fraction of the masked (or all) tokens regenerated, `paste_back` keeps
        the input's pixels outside the mask. The output has the image's size. `step_callback(done, total)` is called
        after each decoding step."""
        defaults = self.config.sampling
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("got an empty prompt list; pass at least one prompt")
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be strings")
        tokenizer = self.model.backbone.tokenizer
        prompts = [check_prompt(tokenizer, p) for p in prompts]
        negatives = None
        if negative_prompt is not None:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
            negatives = [check_prompt(tokenizer, n) for n in negatives]
        guidance_scale = defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
        steps = defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        tokens_per_step = defaults.tokens_per_step if tokens_per_step is None else tokens_per_step
        order = order or defaults.order
        sampler = sampler or defaults.sampler
        cfg_schedule = cfg_schedule or defaults.cfg_schedule
        temperature = defaults.temperature if temperature is None else float(temperature)
        for name, value in (("guidance_scale", guidance_scale), ("temperature", temperature)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {steps!r}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        for name, value, allowed in (("order", order, ORDERS), ("sampler", sampler, SAMPLERS),
                                     ("cfg_schedule", cfg_schedule, CFG_SCHEDULES), ("output_type", output_type,
                                                                                      OUTPUT_TYPES)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is unknown; choose one of {allowed}")
        edit = None
        if image is not None or mask_image is not None:
            edit = prepare_edit(self.ae, image, mask_image, strength, len(prompts) * num_images_per_prompt, generator)
            if (height or edit.size[0], width or edit.size[1]) != edit.size:
                raise ValueError(f"height={height}, width={width} differ from the image's size "
                                 f"{edit.size[0]}x{edit.size[1]} (height x width); leave them out")
            height, width = edit.size
        if paste_back and (edit is None or edit.pixel_mask is None):
            raise ValueError("paste_back keeps the input's pixels outside the mask: pass image and mask_image")
        grid = self.latent_grid(height, width)
        if isinstance(generator, (list, tuple)) and len(generator) != len(prompts) * num_images_per_prompt:
            raise ValueError(f"got {len(generator)} generators for {len(prompts) * num_images_per_prompt} images; "
                             "pass one generator, or one per image")

        rows = [p for p in prompts for _ in range(num_images_per_prompt)]
        negative_rows = None if negatives is None else [n for n in negatives for _ in range(num_images_per_prompt)]
        latents = generate_latents(
            self.model, rows, grid, negative_prompts=negative_rows, guidance_scale=guidance_scale,
            cfg_schedule=cfg_schedule, num_inference_steps=steps, sampler=sampler, sde_t_end=defaults.sde_t_end,
            temperature=temperature, tokens_per_step=tokens_per_step, order=order, generator=generator,
            progress=progress, known_latents=None if edit is None else edit.latents,
            known_mask=None if edit is None else edit.known, step_callback=step_callback,
        ).latents
        if output_type == "latent":
            return VGTPipelineOutput(images=latents)
        images = self.ae.decode(latents.to(next(self.ae.parameters()).dtype)).sample.float()
        images = edit.paste_back(images) if paste_back else images
        if output_type == "pil":
            return VGTPipelineOutput(images=to_pil(images))
        images = ((images.clamp(-1, 1) + 1) / 2).cpu()
        return VGTPipelineOutput(images=images.permute(0, 2, 3, 1).numpy() if output_type == "np" else images)
