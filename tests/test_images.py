"""`vgt.images`: the one image format ([3, H, W] in [-1, 1]) and its PIL edge, the grid, the atomic PNG save."""

import numpy as np
import pytest
import torch
from PIL import Image

from vgt.images import batch_to_pil, image_grid, save_png, side_by_side, to_pil, to_tensor


def test_tensor_and_pil_round_trip_exactly():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    tensor = to_tensor(image)
    assert tensor.shape == (3, 5, 7) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(np.asarray(to_pil(tensor)), np.asarray(image))
    assert to_pil(torch.full((3, 2, 2), 5.0)).getpixel((0, 0)) == (255, 255, 255)  # out of range: clipped


def test_grid_is_row_major_and_pads_a_short_last_row_with_white():
    tiles = [Image.new("RGB", (4, 3), (10 * i, 0, 0)) for i in range(5)]
    grid = image_grid(tiles)  # 3 columns (as square as possible), 2 rows
    assert grid.size == (12, 6)
    assert grid.getpixel((4, 0)) == (10, 0, 0) and grid.getpixel((4, 3)) == (40, 0, 0)
    assert grid.getpixel((8, 3)) == (255, 255, 255)
    assert image_grid(tiles, columns=5).size == (20, 3)
    with pytest.raises(ValueError, match="no images"):
        image_grid([])


def test_side_by_side_pairs_each_original_with_its_reconstruction():
    originals, reconstructions = -torch.ones(3, 3, 2, 2), torch.ones(3, 3, 2, 2)
    grid = side_by_side(originals, reconstructions, pairs_per_row=2)
    assert grid.size == (8, 4)  # 2 pairs per row, 2 rows
    assert [grid.getpixel((x, 0)) for x in (0, 2)] == [(0, 0, 0), (255, 255, 255)]
    assert len(batch_to_pil(originals)) == 3


def test_save_png_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "x.png"
    save_png(Image.new("RGB", (2, 2), (1, 2, 3)), target)
    assert Image.open(target).getpixel((0, 0)) == (1, 2, 3)

    def broken_save(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(Image.new("RGB", (2, 2)), target)
    monkeypatch.undo()
    assert Image.open(target).getpixel((0, 0)) == (1, 2, 3)  # the old image, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.png"]  # no temporary file left
