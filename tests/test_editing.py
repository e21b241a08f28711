"""Editing with QueryAR: known latents as context (exact against teacher forcing), masks, outpainting, variations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vgt.ar.sampling import generate_latents
from vgt.editing import outpaint_canvas, prepare_edit, random_subset, regenerated_tokens
from vgt.testing import TINY_CAPTIONS, fill_zero_parameters, tiny_pipeline

CAPTION = TINY_CAPTIONS[0]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline()
    fill_zero_parameters(p.generator.head, seed=1)
    return p


def known_latents(pipe, seed: int = 5) -> torch.Tensor:
    z = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(seed))
    return pipe.generator.normalize_tokens(z).transpose(1, 2).reshape(1, 8, 4, 4)


def decode(pipe, known, mask, prompt=CAPTION, seed=0, **kwargs):
    kwargs = {"num_inference_steps": 4, "generator": torch.Generator().manual_seed(seed), **kwargs}
    prompts = [prompt] if isinstance(prompt, str) else prompt
    return generate_latents(pipe.generator, prompts, (4, 4), known_latents=known, known_mask=mask, **kwargs)


def centre_mask() -> torch.Tensor:
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = False  # 12 known, 4 to generate
    return mask


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@pytest.mark.parametrize("order", ["random", "raster"])
def test_context_is_the_teacher_forced_prefix(pipe, guidance_scale, order):
    known, mask = known_latents(pipe), centre_mask()
    out = decode(pipe, known, mask, guidance_scale=guidance_scale, order=order, return_query_states=True)
    keep = mask.flatten()
    assert torch.equal(out.latents.flatten(2)[..., keep], known.flatten(2)[..., keep])  # unchanged
    assert not torch.equal(out.latents.flatten(2)[..., ~keep], known.flatten(2)[..., ~keep])
    assert keep[out.orders[0, :12]].all() and not keep[out.orders[0, 12:]].any()  # known first
    if order == "raster":
        assert torch.equal(out.orders[0, :12], keep.nonzero()[:, 0])
    # with one token per step, every generated query sees exactly what training shows it
    expected = pipe.generator.teacher_forced_query_states(out.latents, [CAPTION], out.orders)[:, 12:]
    assert torch.allclose(out.query_states, expected, atol=1e-5)


def test_parallel_groups_with_context_and_the_recomputing_reference(pipe):
    known, mask = known_latents(pipe), centre_mask()
    cached = decode(pipe, known, mask, guidance_scale=3.0, tokens_per_step=3, return_query_states=True)
    full = decode(pipe, known, mask, guidance_scale=3.0, tokens_per_step=3, return_query_states=True, use_cache=False)
    assert torch.allclose(cached.latents, full.latents, atol=1e-5)
    expected = pipe.generator.teacher_forced_query_states(cached.latents, [CAPTION], cached.orders)[:, 12:]
    # the first query of each group (order indices 12 and 15) has all earlier latents: its training context
    assert torch.allclose(cached.query_states[:, [0, 3]], expected[:, [0, 3]], atol=1e-5)
    assert not torch.allclose(cached.query_states[:, 1], expected[:, 1], atol=1e-5)  # it does not see q_12


def test_all_but_one_known_seeds_prompts_and_per_image_generators(pipe):
    known = known_latents(pipe)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2, 3] = False
    a = decode(pipe, known, mask, seed=1).latents
    assert torch.equal(a, decode(pipe, known, mask, seed=1).latents)
    assert torch.equal(a.flatten(2)[..., mask.flatten()], known.flatten(2)[..., mask.flatten()])
    assert not torch.equal(a[..., 2, 3], decode(pipe, known, mask, seed=2).latents[..., 2, 3])
    assert not torch.equal(a[..., 2, 3], decode(pipe, known, mask, prompt="a blue square", seed=1).latents[..., 2, 3])
    gens = [torch.Generator().manual_seed(s) for s in (1, 7)]
    pair = decode(pipe, known, mask, prompt=[CAPTION, CAPTION], generator=gens).latents
    # row 0 does not depend on row 1 (up to float rounding: batch shapes change the matmul kernels on some CPUs)
    assert torch.allclose(pair[:1], a, atol=1e-5)


def test_context_errors(pipe):
    known, mask = known_latents(pipe), centre_mask()
    with pytest.raises(ValueError, match="nothing to generate"):
        decode(pipe, known, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="known_latents must have shape"):
        decode(pipe, known[..., :3], mask)
    with pytest.raises(ValueError, match="known_mask must have shape"):
        decode(pipe, known, mask[:3])
    with pytest.raises(ValueError, match="together"):
        decode(pipe, known, None)
    rows = torch.stack([mask, torch.ones(4, 4, dtype=torch.bool).logical_and_(torch.rand(4, 4) < 2)])
    rows[1, 0, 0] = False
    with pytest.raises(ValueError, match="same number of positions"):
        decode(pipe, known, rows, prompt=[CAPTION, CAPTION])


def test_mask_downsampling_threshold():
    mask = np.zeros((16, 16), dtype=bool)
    mask[0, 0] = True  # one pixel of token (0, 0)
    mask[8:16, 8:14] = True  # 6 of 8 columns of token (1, 1)
    assert regenerated_tokens(mask, 8).tolist() == [[True, False], [False, True]]
    assert regenerated_tokens(mask, 8, mask_threshold=0.5).tolist() == [[False, False], [False, True]]
    assert regenerated_tokens(mask, 8, mask_threshold=0.8).tolist() == [[False, False], [False, False]]
    with pytest.raises(ValueError, match="mask_threshold"):
        regenerated_tokens(mask, 8, mask_threshold=1.0)


def test_random_subset_strength_and_seed():
    candidates = torch.zeros(4, 4, dtype=torch.bool)
    candidates[:2] = True
    picked = random_subset(candidates, 0.5, 3, torch.Generator().manual_seed(0))
    assert picked.shape == (3, 4, 4) and (picked.flatten(1).sum(1) == 4).all() and not picked[:, 2:].any()
    assert torch.equal(picked, random_subset(candidates, 0.5, 3, torch.Generator().manual_seed(0)))
    assert torch.equal(random_subset(candidates, 1.0, 2, None), candidates.expand(2, 4, 4))


def test_outpaint_canvas():
    image = Image.new("RGB", (16, 8), (255, 0, 0))
    canvas, mask = outpaint_canvas(image, (32, 16))
    assert canvas.size == (32, 16) and canvas.getpixel((8, 4)) == (255, 0, 0) and canvas.getpixel((0, 0)) != (255, 0, 0)
    m = np.asarray(mask)
    assert m[4:12, 8:24].max() == 0 and m.sum() == 255 * (32 * 16 - 16 * 8)
    canvas, mask = outpaint_canvas(image, (16, 16), offset=(0, 0))
    assert np.asarray(mask)[8:].min() == 255 and np.asarray(mask)[:8].max() == 0
    with pytest.raises(ValueError, match="does not fit"):
        outpaint_canvas(image, (16, 16), offset=(4, 0))
    with pytest.raises(ValueError, match="nothing to outpaint"):
        outpaint_canvas(image, (16, 8))


def scene(size=32) -> tuple[Image.Image, Image.Image]:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    image.paste((200, 30, 30), (4, 4, 12, 12))
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (16, 16, 32, 32))
    return image, mask


def test_pipeline_inpaints_keeps_outside_and_pastes_back(pipe):
    image, mask = scene()
    out = pipe(CAPTION, image=image, mask_image=mask, output_type="latent", generator=torch.Generator().manual_seed(0))
    edit = prepare_edit(pipe.ae, image, mask)
    keep = edit.known[0].flatten()
    assert int(keep.sum()) == 12  # stride 8: the mask is the bottom-right 2x2 tokens
    assert torch.equal(out.images.flatten(2)[..., keep], edit.latents.flatten(2)[..., keep])
    pasted = pipe(CAPTION, image=image, mask_image=mask, output_type="np", paste_back=True,
                  generator=torch.Generator().manual_seed(0)).images
    assert pasted.shape == (1, 32, 32, 3)
    assert np.allclose(pasted[0, :16] * 255, np.asarray(image)[:16], atol=0.51)  # the input's own pixels
    plain = pipe(CAPTION, image=image, mask_image=mask, output_type="np", generator=torch.Generator().manual_seed(0))
    assert np.allclose(plain.images[0, 16:, 16:], pasted[0, 16:, 16:])  # the generated region is the same
    canvas, outside = outpaint_canvas(image.crop((0, 0, 16, 16)), (32, 32), offset=(0, 0))
    assert pipe(CAPTION, image=canvas, mask_image=outside, generator=torch.Generator().manual_seed(0)).images[0].size \
        == (32, 32)


def test_pipeline_variations_follow_strength(pipe):
    image, _ = scene()
    a = pipe(CAPTION, image=image, strength=0.25, output_type="latent", generator=torch.Generator().manual_seed(0))
    b = pipe(CAPTION, image=image, strength=0.25, output_type="latent", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.images, b.images)
    edit = prepare_edit(pipe.ae, image)
    same = (a.images == edit.latents).all(1).flatten()
    assert int(same.sum()) == 12  # 4 of 16 tokens regenerated


def test_pipeline_edit_errors_name_the_fix(pipe):
    image, mask = scene()
    call = {"generator": torch.Generator().manual_seed(0)}
    with pytest.raises(ValueError, match="multiples of the AE stride 8"):
        pipe(CAPTION, image=image.resize((30, 30)), mask_image=mask.resize((30, 30)), **call)
    with pytest.raises(ValueError, match="pass a mask of the image's size"):
        pipe(CAPTION, image=image, mask_image=mask.resize((24, 24)), **call)
    with pytest.raises(ValueError, match="selects no pixel"):
        pipe(CAPTION, image=image, mask_image=Image.new("L", (32, 32), 0), **call)
    with pytest.raises(ValueError, match="covers the whole image"):
        pipe(CAPTION, image=image, mask_image=Image.new("L", (32, 32), 255), **call)
    with pytest.raises(ValueError, match="convert it first"):
        pipe(CAPTION, image=image, mask_image=mask.convert("F"), **call)
    with pytest.raises(ValueError, match="convert it first"):
        pipe(CAPTION, image=image.convert("CMYK"), mask_image=mask, **call)
    with pytest.raises(ValueError, match="need an image"):
        pipe(CAPTION, mask_image=mask, **call)
    with pytest.raises(ValueError, match="strength must lie"):
        pipe(CAPTION, image=image, mask_image=mask, strength=1.5, **call)
    with pytest.raises(ValueError, match="lower strength"):
        pipe(CAPTION, image=image, strength=1.0, **call)
    with pytest.raises(ValueError, match="paste_back"):
        pipe(CAPTION, image=image, paste_back=True, **call)
    with pytest.raises(ValueError, match="leave them out"):
        pipe(CAPTION, image=image, mask_image=mask, height=40, **call)


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "vgt"
    pipe.save_pretrained(path)
    return path


def test_cli_inpaint_outpaint_variations(model_dir, tmp_path, capsys):
    from vgt.cli import main

    image, mask = scene()
    image.save(tmp_path / "in.png")
    mask.save(tmp_path / "mask.png")
    image.crop((0, 0, 16, 16)).save(tmp_path / "small.png")
    common = ["--model", str(model_dir), "--num-inference-steps", "2", "--seed", "3"]
    run = ["inpaint", CAPTION, "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), *common]
    assert main([*run, "--out", str(tmp_path / "a.png"), "--paste-back"]) == 0
    assert main([*run, "--out", str(tmp_path / "b.png"), "--paste-back"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "ab")
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert np.array_equal(a[:16], np.asarray(image)[:16])  # kept pixels
    assert main(["outpaint", CAPTION, "--image", str(tmp_path / "small.png"), "--size", "32", "--offset", "0", "0",
                 "--out", str(tmp_path / "o.png"), "--num-images-per-prompt", "2", *common]) == 0
    assert Image.open(tmp_path / "o-001.png").size == (32, 32)
    assert main(["variations", CAPTION, "--image", str(tmp_path / "in.png"), "--strength", "0.5",
                 "--out", str(tmp_path / "v.png"), *common]) == 0
    assert Image.open(tmp_path / "v.png").size == (32, 32)
    with pytest.raises(SystemExit, match="canvas size"):
        main(["outpaint", CAPTION, "--image", str(tmp_path / "small.png"), *common])
    with pytest.raises(SystemExit, match="does not exist"):
        main([*run[:2], "--image", str(tmp_path / "none.png"), *run[4:]])
    with pytest.raises(ValueError, match="multiples of the AE stride"):
        image.resize((30, 30)).save(tmp_path / "odd.png")
        main(["variations", CAPTION, "--image", str(tmp_path / "odd.png"), *common])
