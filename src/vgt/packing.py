"""Packing a trained pipeline into the package (`vgt recipe pack`), and what the packing costs.

Packing stores the pipeline folder as it is (same files, same keys, so the ordinary loaders read it) with each
floating-point tensor in float16 where that is lossless enough: a tensor keeps float32 when it is 1-D or small (norm
scales, biases, the image-start embedding: negligible bytes), when it does not fit float16's range, or when its
float16 round trip changes it by more than `max_relative_error` (relative L2). Loaders cast back to float32, so
the packed model runs in float32 arithmetic; `compare_pipelines` measures what the storage costs in images and
ShapesEval.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vgt.io import write_json
from vgt.pretrained import PIPELINE_FILE, resolve_model_dir, shipped_model_dir

PACK_REPORT = "packing.json"
#: the size budget of the shipped model
MAX_PACKED_BYTES = 25 * 1024 * 1024
#: tensors with fewer elements stay float32 (their bytes do not matter)
SMALL_TENSOR = 4096
FLOAT16_MAX = 65504.0


@dataclass
class PackReport:
    source: str
    bytes_before: int = 0
    bytes_after: int = 0
    tensors_float16: int = 0
    tensors_float32: int = 0
    #: largest relative L2 round-trip error among the tensors stored in float16
    max_relative_error: float = 0.0
    #: tensors kept in float32 although large, with the reason
    kept_float32: dict[str, str] = field(default_factory=dict)
    #: filled by `compare_pipelines`
    comparison: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _pack_tensor(name: str, tensor, dtype, max_relative_error: float, report: PackReport):
    """The tensor to store and whether it became float16."""
    import torch

    if not tensor.is_floating_point() or dtype == torch.float32 or tensor.dim() < 2 or tensor.numel() < SMALL_TENSOR:
        return tensor, False
    original = tensor.float()
    if original.abs().max().item() > FLOAT16_MAX:
        report.kept_float32[name] = "values beyond the float16 range"
        return tensor, False
    packed = original.to(dtype)
    norm = original.norm().item()
    error = (packed.float() - original).norm().item() / norm if norm > 0 else 0.0
    if error > max_relative_error:
        report.kept_float32[name] = f"float16 round trip changes it by {error:.2e} (relative L2)"
        return tensor, False
    report.max_relative_error = max(report.max_relative_error, error)
    return packed, True


def pack_pipeline(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, dtype: str = "float16",
                  max_relative_error: float = 1e-3, max_bytes: int | None = MAX_PACKED_BYTES,
                  overwrite: bool = False) -> PackReport:
    """Copy the pipeline folder `model_dir` to `out_dir` (default: the shipped model's place) with its safetensors
    weights stored in `dtype` where lossless enough (module docstring). Written atomically; fails, leaving any
    previous model in place, when the result exceeds `max_bytes`. An existing `out_dir` is replaced only when it
    is a pipeline folder (or empty), or with `overwrite`; never when it holds the source or lies inside it."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vgt.io import atomic_directory, holds

    source = resolve_model_dir(model_dir)
    out = Path(out_dir) if out_dir is not None else shipped_model_dir()
    target_dtype = {"float16": torch.float16, "float32": torch.float32}.get(dtype)
    if target_dtype is None:
        raise ValueError(f"dtype {dtype!r} is not one of float16, float32")
    report = PackReport(source=str(source))
    with atomic_directory(out, overwrite, ours=holds(PIPELINE_FILE), protect=[source]) as staging:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source)
            if relative.name == PACK_REPORT:
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            report.bytes_before += path.stat().st_size
            if path.suffix != ".safetensors":
                shutil.copy2(path, target)
                continue
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata()
                tensors = {}
                for name in f.keys():
                    tensors[name], halved = _pack_tensor(f"{relative}:{name}", f.get_tensor(name), target_dtype,
                                                         max_relative_error, report)
                    report.tensors_float16 += halved
                    report.tensors_float32 += not halved
            save_file(tensors, str(target), metadata=metadata)
        report.bytes_after = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        if max_bytes is not None and report.bytes_after > max_bytes:
            raise ValueError(f"the packed model takes {report.bytes_after / 2**20:.1f} MiB, over the "
                             f"{max_bytes / 2**20:.1f} MiB budget; shrink the model or raise max_bytes")
        (staging / PACK_REPORT).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def compare_pipelines(reference: str | os.PathLike, packed: str | os.PathLike, prompts_per_category: int = 10,
                      n_per_prompt: int = 2, seed: int = 0, work_dir: str | os.PathLike | None = None) -> dict:
    """What packing costs: both pipelines (loaded in float32) generate the same reduced ShapesEval set with the same
    seeds; returns the pixel differences between corresponding images and both ShapesEval scores. Autoregressive
    sampling amplifies any weight difference, so individual images may differ; the scores say whether quality
    did."""
    import numpy as np
    from PIL import Image

    from vgt.eval.benchmark import evaluate_pipeline
    from vgt.eval.layout import read_layout

    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="vgt-pack-check-") as work:
            return compare_pipelines(reference, packed, prompts_per_category, n_per_prompt, seed, work)
    work = Path(work_dir)
    scores = {}
    for name, model in (("float32", reference), ("packed", packed)):
        scores[name] = evaluate_pipeline(model, work / name, prompts_per_category, n_per_prompt, seed)
    diffs, identical = [], 0
    for a, b in zip(read_layout(work / "float32" / "samples"), read_layout(work / "packed" / "samples"), strict=True):
        for pa, pb in zip(a.sample_paths, b.sample_paths, strict=True):
            x = np.asarray(Image.open(pa), dtype=np.float32)
            y = np.asarray(Image.open(pb), dtype=np.float32)
            diffs.append(np.abs(x - y).mean())
            identical += bool(np.array_equal(x, y))
    return {"images": len(diffs), "identical_images": identical, "mean_abs_pixel_diff": float(np.mean(diffs)),
            "max_image_mean_abs_pixel_diff": float(np.max(diffs)),
            "shapes_eval_float32": scores["float32"]["overall"], "shapes_eval_packed": scores["packed"]["overall"],
            "categories_float32": scores["float32"]["categories"], "categories_packed": scores["packed"]["categories"],
            "prompts_per_category": prompts_per_category, "n_per_prompt": n_per_prompt, "seed": seed}


def record_comparison(out_dir: str | os.PathLike, comparison: dict) -> None:
    """Add the measured comparison to the packed model's packing.json."""
    path = Path(out_dir) / PACK_REPORT
    report = json.loads(path.read_text())
    report["comparison"] = comparison
    write_json(path, report)
