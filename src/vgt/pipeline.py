"""`VGTPipeline`: text -> image with a tuned VLM, its VGT-AE and the VGT-AR generator; a diffusers `DiffusionPipeline`.

Folder layout (diffusers'; `save_pretrained` / `from_pretrained` / `push_to_hub`):

    DIR/model_index.json   the pipeline class and each component's library and class
    DIR/vlm/               the VLM (a transformers model) with the *tuned* language model
    DIR/tokenizer/         its tokenizer and chat template
    DIR/ae/                the VGT-AE (`VGTAutoencoder`: config.json + diffusion_pytorch_model.safetensors)
    DIR/generator/         `VGTForGeneration`: position grids, <img>, W_in, W_out, flow head (the LLM lives in vlm/)

Load with `VGTPipeline.from_pretrained(DIR)`. diffusers' generic `DiffusionPipeline.from_pretrained(DIR)` cannot
load it: it looks the class named in model_index.json up in the `diffusers` package, and reaches a class defined
elsewhere only through a code file in the folder run with `trust_remote_code=True` (docs/api.md). Folders of the
older layout (`pipeline.json`) convert with `vgt convert pipeline OLD NEW` (`vgt.legacy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from vgt.ae.model import VGTAutoencoder
from vgt.ar.model import VGTForGeneration
from vgt.editing import prepare_edit
from vgt.text import check_prompt

MODEL_INDEX = "model_index.json"
VLM_DIR, TOKENIZER_DIR, AE_DIR, GENERATOR_DIR = "vlm", "tokenizer", "ae", "generator"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class VGTPipelineOutput(BaseOutput):
    #: PIL images, [B, H, W, 3] floats in [0, 1] (np), [B, 3, H, W] in [0, 1] (pt) or latents [B, C, h, w]
    images: list[Image.Image] | np.ndarray | torch.Tensor


def _pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL images (rounded to the nearest 8-bit value)."""
    pixels = images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]


class VGTPipeline(DiffusionPipeline):
    """The VLM (`vlm`, a transformers model, and its `tokenizer`), the VGT-AE and the generator. The generator
    decodes with the VLM's own language model: the pipeline attaches it (`VGTForGeneration.attach`)."""

    model_cpu_offload_seq = "generator->ae"
    _optional_components: list[str] = []

    def __init__(self, vlm, tokenizer, ae: VGTAutoencoder, generator: VGTForGeneration):
        super().__init__()
        self.register_modules(vlm=vlm, tokenizer=tokenizer, ae=ae, generator=generator)
        backbone = generator.backbone
        if backbone is None or getattr(backbone, "model", None) is not vlm:
            from vgt.backbones.registry import backbone_for_model

            backbone = backbone_for_model(vlm, tokenizer, ae.config.backbone)
        if generator.backbone is not backbone or generator.ae is not ae:
            generator.attach(backbone, ae)
        generator.eval()
        ae.eval().requires_grad_(False)

    @classmethod
    def from_generator(cls, generator: VGTForGeneration, ae: VGTAutoencoder | None = None) -> VGTPipeline:
        """The pipeline around a generator that holds its backbone (as training builds it) and `ae` (default: the
        generator's own)."""
        ae = ae if ae is not None else generator.ae
        if generator.backbone is None or ae is None:
            raise ValueError("the generator holds no backbone or AE: build it with VGTForGeneration(config, backbone, "
                             "ae=ae), or pass vlm/tokenizer/ae to VGTPipeline(...)")
        if generator.ae is not ae:
            raise ValueError("the generator must hold the pipeline's AE (VGTForGeneration(config, backbone, ae=ae))")
        return cls(generator.backbone.model, generator.backbone.tokenizer, ae, generator)

    # ---- persistence ---------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, overwrite: bool = False, **kwargs: Any) -> None:
        """diffusers' `save_pretrained`, written atomically: an existing folder is replaced only when it is a
        pipeline folder (or empty), or with `overwrite`. `push_to_hub=True` etc. work as in diffusers."""
        from vgt.io import atomic_directory, holds

        if kwargs.get("push_to_hub"):  # diffusers names the repository after the folder it writes: the final one
            kwargs.setdefault("repo_id", Path(save_directory).name)
        with atomic_directory(save_directory, overwrite, ours=holds(MODEL_INDEX)) as staging:
            super().save_pretrained(staging, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | None = None, dtype: torch.dtype | None = None,
                        torch_dtype: torch.dtype | None = None, **kwargs: Any) -> VGTPipeline:
        """Load a pipeline folder or Hub repository (None: the default model, `vgt.pretrained.default_model_dir()`).
        Every component loads strictly: a missing, unexpected or mis-shaped weight is an error, not a warning.
        `dtype` (or its older diffusers name `torch_dtype`; default float32, e.g. torch.bfloat16 on a GPU)
        applies to every weight; the head samplers' arithmetic stays in float32. Other keyword arguments go to
        `DiffusionPipeline.from_pretrained`."""
        from vgt.backbones.hf import strict_from_pretrained
        from vgt.io import read_json
        from vgt.loading import resolve_folder
        from vgt.pretrained import check_pipeline_folder, default_model_dir

        source = pretrained_model_name_or_path if pretrained_model_name_or_path is not None else default_model_dir()
        folder = resolve_folder(source, **kwargs)
        check_pipeline_folder(folder)
        dtype = dtype or torch_dtype or torch.float32
        index = read_json(folder / MODEL_INDEX)
        missing = [c for c in (VLM_DIR, TOKENIZER_DIR, AE_DIR, GENERATOR_DIR) if not isinstance(index, dict)
                   or not isinstance(index.get(c), list) or len(index[c]) != 2]
        if missing:
            raise ValueError(f"{str(folder / MODEL_INDEX)!r} is not a VGT pipeline index: no [library, class] entry "
                             f"for {missing}; save the pipeline again with VGTPipeline.save_pretrained")
        if "vlm" not in kwargs:  # transformers only warns about missing weights; vgt's loader refuses them
            import importlib

            library, class_name = index[VLM_DIR]
            model_class = getattr(importlib.import_module(library), class_name)
            kwargs["vlm"] = strict_from_pretrained(model_class, folder / VLM_DIR, dtype)
        return super().from_pretrained(str(folder), dtype=dtype, **kwargs)

    # ---- generation ------------------------------------------------------------------------------------------------

    def latent_grid(self, height: int | None, width: int | None, grid_size: int) -> tuple[int, int]:
        stride = self.ae.stride
        default = grid_size * stride
        height, width = default if height is None else height, default if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
            if value % stride:
                raise ValueError(f"{name} {value} is not a multiple of the AE stride {stride}; use e.g. "
                                 f"{max(1, round(value / stride)) * stride}")
        grid = (height // stride, width // stride)
        max_grid = self.generator.config.max_grid
        if max(grid) > max_grid:
            raise ValueError(
                f"{height}x{width} px is a {grid[0]}x{grid[1]} latent grid, larger than this model's "
                f"{max_grid}x{max_grid} query grid (at most {max_grid * stride} px per side)"
            )
        return grid

    def check_prompts(self, prompt: str | list[str], negative_prompt: str | list[str] | None):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("got an empty prompt list; pass at least one prompt")
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be strings")
        prompts = [check_prompt(self.tokenizer, p) for p in prompts]
        if negative_prompt is None:
            return prompts, None
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        return prompts, [check_prompt(self.tokenizer, n) for n in negatives]

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
        return_dict: bool = True,
        sampler: str | None = None,
        cfg_schedule: str | None = None,
        temperature: float | None = None,
        image: Image.Image | np.ndarray | None = None,
        mask_image: Image.Image | np.ndarray | None = None,
        strength: float | None = None,
        paste_back: bool = False,
        step_callback: Callable[[int, int], None] | None = None,
    ) -> VGTPipelineOutput | tuple:
        """Generate `num_images_per_prompt` images per prompt. Arguments left at None take the model's saved
        sampling defaults (`config.sampling`: guidance 4.5, 30 head steps, 1 token per step, random order, SDE,
        linear CFG schedule, temperature 1 unless the model was saved with others); they are checked by
        `SamplingConfig`. `generator`: one for the whole call, or one per image (prompt-major), which makes each
        image independent of what else is in the batch. `return_dict=False` returns `(images,)`. The decoding
        steps show in `self.progress_bar` (`set_progress_bar_config(disable=True)` hides it), and
        `step_callback(done, total)` is called after each of them.

        Editing (`vgt.editing`, docs/editing.md): `image` with `mask_image` (white = regenerate) inpaints or
        outpaints, `image` alone makes variations; `strength` is the fraction of the masked (or all) tokens
        regenerated, `paste_back` keeps the input's pixels outside the mask. The output has the image's size."""
        given = {"guidance_scale": None if guidance_scale is None else float(guidance_scale),
                 "num_inference_steps": num_inference_steps, "order": order, "sampler": sampler,
                 "cfg_schedule": cfg_schedule, "temperature": None if temperature is None else float(temperature),
                 "tokens_per_step": tokens_per_step if isinstance(tokens_per_step, int) else None}
        defaults = self.generator.config.sampling
        sampling = dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})
        prompts, negatives = self.check_prompts(prompt, negative_prompt)
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r} is unknown; choose one of {OUTPUT_TYPES}")
        count = len(prompts) * num_images_per_prompt
        edit = None
        if image is not None or mask_image is not None:
            edit = prepare_edit(self.ae, image, mask_image, strength, count, generator)
            if (height or edit.size[0], width or edit.size[1]) != edit.size:
                raise ValueError(f"height={height}, width={width} differ from the image's size "
                                 f"{edit.size[0]}x{edit.size[1]} (height x width); leave them out")
            height, width = edit.size
        if paste_back and (edit is None or edit.pixel_mask is None):
            raise ValueError("paste_back keeps the input's pixels outside the mask: pass image and mask_image")
        grid = self.latent_grid(height, width, sampling.grid_size)
        if isinstance(generator, (list, tuple)) and len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images; pass one generator, or one per "
                             "image")

        rows = [p for p in prompts for _ in range(num_images_per_prompt)]
        negative_rows = None if negatives is None else [n for n in negatives for _ in range(num_images_per_prompt)]
        latents = self.generator.generate(
            rows, grid, negative_prompts=negative_rows, guidance_scale=sampling.guidance_scale,
            cfg_schedule=sampling.cfg_schedule, num_inference_steps=sampling.num_inference_steps,
            sampler=sampling.sampler, sde_t_end=sampling.sde_t_end, temperature=sampling.temperature,
            tokens_per_step=sampling.tokens_per_step if tokens_per_step is None or isinstance(tokens_per_step, int)
            else tokens_per_step, order=sampling.order, generator=generator, progress_bar=self.progress_bar,
            known_latents=None if edit is None else edit.latents, known_mask=None if edit is None else edit.known,
            step_callback=step_callback,
        ).latents
        if output_type == "latent":
            images = latents
        else:
            decoded = self.ae.decode(latents.to(next(self.ae.parameters()).dtype)).sample.float()
            decoded = edit.paste_back(decoded) if paste_back else decoded
            if output_type == "pil":
                images = _pil(decoded)
            else:
                decoded = ((decoded.clamp(-1, 1) + 1) / 2).cpu()
                images = decoded.permute(0, 2, 3, 1).numpy() if output_type == "np" else decoded
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return VGTPipelineOutput(images=images)
