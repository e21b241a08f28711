"""Evaluating an exported VGT-AE: reconstruction quality (PSNR, SSIM, FID, a side-by-side grid) and how well the VLM
still understands images through the tuned vision path (`vgt eval recon`, `vgt eval ae-understanding`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def _fid_features(fid_features: str, backbone):
    from vgt.ae.metrics import PooledTokenFeatures, TorchScriptFeatures

    if fid_features == "none":
        return None, "none"
    if fid_features == "vision":
        if backbone is None:
            raise ValueError("--fid-features vision needs a VLM: pass --backbone-path (or --fid-features none / "
                             "a TorchScript file)")
        return PooledTokenFeatures(backbone.vision, backbone.vision.out_dim), f"{backbone.name} vision tower (pooled)"
    return TorchScriptFeatures(fid_features), f"TorchScript {fid_features}"


def evaluate_reconstruction(model: str | os.PathLike, data: Sequence[str] | None = None, num: int = 256,
                            batch_size: int = 16, size: int | None = None, fid_features: str = "vision",
                            seed: int = 0, out: str | os.PathLike | None = None,
                            backbone_path: str | os.PathLike | None = None) -> dict:
    """PSNR, SSIM and FID of the VGT-AE in `model` on `num` held-out images (`data`: specs; default held-out
    ShapesWorld scenes) at `size` px (default: its training resolution). `fid_features`: vision (the VLM's frozen
    vision tower), none, or a TorchScript file. With `out`, writes OUT/recon_metrics.json and OUT/recon_grid.png."""
    import torch
    from tqdm.auto import tqdm

    from vgt.ae.frozen import load_frozen_autoencoder
    from vgt.ae.metrics import SSIM_DATA_RANGE, frechet_distance, psnr_per_image, ssim_per_image
    from vgt.ae.trainer import heldout_images
    from vgt.images import save_png, side_by_side
    from vgt.io import write_json

    ae, backbone = load_frozen_autoencoder(model, backbone_path)
    size = size or ae.config.image_size
    if size is None:
        raise ValueError("pass --size (the model does not record a training resolution)")
    images = heldout_images(data, size, num, seed)
    feature_net, feature_name = _fid_features(fid_features, backbone)
    fid = frechet_distance(feature_net) if feature_net is not None else None
    psnr, ssim, recons = [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="reconstruct"):
            x = images[start : start + batch_size]
            recon = ae(x).sample.float().clamp(-1, 1)
            psnr.append(psnr_per_image(recon, x))
            ssim.append(ssim_per_image(recon, x))
            if fid is not None:
                fid.update((x + 1) / 2, real=True)
                fid.update((recon + 1) / 2, real=False)
            if start == 0:
                recons = recon[:8]
    psnr, ssim = torch.cat(psnr), torch.cat(ssim)
    result = {
        "model": str(model), "data": list(data) if data else ["shapes (held-out world seed)"],
        "num_images": len(images), "image_size": size, "psnr_db": psnr.mean().item(), "ssim": ssim.mean().item(),
        "ssim_data_range": SSIM_DATA_RANGE, "fid": fid.compute().item() if fid is not None else None,
        "fid_features": feature_name,
    }
    if out:
        out = Path(out)
        write_json(out / "recon_metrics.json", result)
        save_png(side_by_side(images[: len(recons)], recons), out / "recon_grid.png")
    return result


def evaluate_ae_understanding(model: str | os.PathLike, num: int = 200, batch_size: int = 25,
                              out: str | os.PathLike | None = None,
                              backbone_path: str | os.PathLike | None = None) -> dict:
    """Held-out ShapesWorld understanding of the VGT-AE's VLM with its original and with the tuned vision path:
    {"original": metrics, "tuned": metrics}; with `out`, also written to OUT/understanding.json."""
    from vgt.ae.frozen import load_frozen_autoencoder
    from vgt.ae.understanding import backbone_with_tuned_vision
    from vgt.io import write_json
    from vgt.vlm.understanding import evaluate_understanding

    ae, backbone = load_frozen_autoencoder(model, backbone_path)
    if backbone is None:
        raise ValueError("understanding needs the VLM: pass --backbone-path")
    result = {"original": evaluate_understanding(backbone, num_images=num, batch_size=batch_size),
              "tuned": evaluate_understanding(backbone_with_tuned_vision(backbone, ae), num_images=num,
                                              batch_size=batch_size)}
    if out:
        write_json(Path(out) / "understanding.json", result)
    return result
