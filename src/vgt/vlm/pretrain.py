"""Pretraining the small VLM for understanding (ShapesWorld image -> full scene caption) on the training engine.

The run directory holds the engine's checkpoints and metrics (loss, token accuracy and, every `eval_every` steps,
the held-out understanding accuracies: the training curve). At the end the evaluation weights (EMA when enabled)
are exported as a standard HF folder loadable with `load_backbone("tiny", DIR)`. Its training schedules are
`vlm-small` and `vlm-toy` in `vgt.presets.TRAIN_PRESETS`.
"""

from __future__ import annotations

from pathlib import Path

from vgt.presets import small_vlm_preset
from vgt.vlm.model import build_small_vlm
from vgt.vlm.understanding import METRIC_KEYS, CaptioningModel, caption_batch, evaluate_understanding

#: world seed of the training stream (the held-out scenes use `understanding.EVAL_WORLD_SEED`)
TRAIN_WORLD_SEED = 0

def understanding_loss(model: CaptioningModel, batch: dict, ctx) -> tuple:
    """Engine loss function: tokenize the captions, then cross-entropy on the answer tokens."""
    images = batch["image"]
    grid_h, grid_w = model.backbone.vision.grid_size(images.shape[2], images.shape[3])
    tokens = caption_batch(model.backbone, batch["caption"], grid_h * grid_w)
    tokens = {k: v.to(ctx.device) for k, v in tokens.items()}
    loss, accuracy = model(images, **tokens)
    return loss, {"token_acc": accuracy}


def train_small_vlm(preset: str, cfg, out: str | Path | None = None, eval_images: int = 100,
                    overwrite: bool = False) -> dict:
    """Train the small VLM of architecture `preset` with engine config `cfg` (resumes from `cfg.run_dir`), export
    it to `out` (default RUN_DIR/model) and return its final understanding metrics. `out` is checked first: it
    may not hold the run's checkpoints, nor be a folder vgt did not write unless `overwrite`."""
    from vgt.backbones.hf import BACKBONE_FILE
    from vgt.data.readers import ShapesSource
    from vgt.io import check_replaceable, holds
    from vgt.train import Hook, load_checkpoint_weights, train

    target = Path(out) if out is not None else Path(cfg.run_dir) / "model"
    check_replaceable(target, overwrite, holds(BACKBONE_FILE), protect=[Path(cfg.run_dir) / "checkpoints"])
    arch = small_vlm_preset(preset)
    backbone = build_small_vlm(arch, seed=cfg.seed)
    model = CaptioningModel(backbone)
    source = ShapesSource(arch.image_size, text="caption", world_seed=TRAIN_WORLD_SEED, tasks=("scene",))

    def understanding_hook(ctx) -> dict:
        with ctx.eval_model() as captioner:
            metrics = evaluate_understanding(captioner.backbone, num_images=eval_images, progress=False)
        return {k: metrics[k] for k in METRIC_KEYS}

    hooks = [Hook(understanding_hook, name="understanding")] if eval_images > 0 else []
    result = train(model, understanding_loss, source, cfg, hooks=hooks,
                   extra_config={"vlm": {"preset": preset, **arch.to_dict()}, "eval_images": eval_images})
    if result.checkpoint is not None:
        load_checkpoint_weights(model, result.checkpoint)
    backbone.save_pretrained(target, overwrite)
    return {"model": str(target), "step": result.step, **result.metrics}
