"""VGT-AR building blocks, the training forward and the KV-cached QueryAR decoder, on a tiny random InternVL."""

from __future__ import annotations

import pytest
import torch

from vgt.ar.config import ARConfig, FlowHeadConfig
from vgt.ar.flow_head import FlowHead
from vgt.ar.model import VGTForGeneration
from vgt.ar.position_queries import PositionQueries
from vgt.ar.randomness import generation_orders, sample_timesteps
from vgt.ar.sampling import (
    GuidedVelocity,
    generate_latents,
    group_sizes,
    guidance_at,
    head_times,
    sample_euler,
    sample_heun,
    sample_sde,
)
from vgt.ar.sequence import NO_GROUP, decoding_layout, left_align_padding, training_layout
from vgt.testing import tiny_internvl_backbone

CAPTIONS = ["a red circle", "two blue squares to the left of a green triangle"]
CHANNELS = 8


def randomize_zero_init(model: VGTForGeneration, seed: int = 0) -> None:
    """Give the zero-initialised head layers random values so that the head's output depends on its inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def model() -> VGTForGeneration:
    backbone = tiny_internvl_backbone(words=CAPTIONS)
    torch.manual_seed(0)
    config = ARConfig(hidden_size=backbone.text.hidden_size, latent_channels=CHANNELS, max_grid=8,
                      head=FlowHeadConfig(width=32, depth=2))
    m = VGTForGeneration(config, backbone).eval()
    randomize_zero_init(m)
    return m


def decode(model, seed=1, **kwargs):
    kwargs.setdefault("num_inference_steps", 4)
    return generate_latents(model, CAPTIONS, (3, 3), generator=torch.Generator().manual_seed(seed), **kwargs)


# ---- pieces --------------------------------------------------------------------------------------------------------


def test_zero_initialised_head_predicts_zero_velocity():
    head = FlowHead(FlowHeadConfig(latent_channels=CHANNELS, cond_dim=16, width=32, depth=3))
    v = head(torch.randn(5, 7, CHANNELS), torch.rand(5, 7), torch.randn(5, 7, 16))
    assert v.shape == (5, 7, CHANNELS)
    assert torch.equal(v, torch.zeros_like(v))


@pytest.mark.parametrize("grid", [(1, 1), (3, 3), (4, 6), (8, 8), (5, 2)])
def test_position_grid_centre_crop(grid):
    torch.manual_seed(0)
    pq = PositionQueries(hidden_size=4, max_grid=8)
    h, w = grid
    queries, positions = pq(h, w)
    assert queries.shape == positions.shape == (h * w, 4)
    top, left = (8 - h) // 2, (8 - w) // 2
    for i in range(h):
        for j in range(w):  # raster order, centre window
            assert torch.equal(positions[i * w + j], pq.position_grid[:, top + i, left + j])
            expected = pq.query_grid[:, top + i, left + j] + pq.position_grid[:, top + i, left + j]
            assert torch.equal(queries[i * w + j], expected)


def test_position_grid_starts_with_nearby_cells_alike():
    # sine-cosine start: similarity falls with the distance between cells (a random start has no such order)
    _, positions = PositionQueries(hidden_size=64, max_grid=16)(8, 8)
    similarity = torch.nn.functional.cosine_similarity(positions[:1], positions, dim=-1).reshape(8, 8)
    assert similarity[0, 1] > similarity[0, 3] > similarity[0, 7]
    assert similarity[1, 0] > similarity[3, 0] > similarity[7, 0]
    assert similarity[1, 1] > similarity[4, 4]
    authors = PositionQueries(hidden_size=64, max_grid=16, position_init="normal").position_grid
    assert 0.015 < authors.std() < 0.025  # trunc-normal 0.02
    with pytest.raises(ValueError, match="position_init"):
        PositionQueries(hidden_size=64, max_grid=16, position_init="zeros")


def test_position_grid_too_large_is_a_clear_error():
    pq = PositionQueries(hidden_size=4, max_grid=8)
    with pytest.raises(ValueError, match="larger than the 8x8 query grid"):
        pq(9, 4)


def test_timesteps_follow_the_shifted_logit_normal():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps((200_000,), 1.0, g, torch.device("cpu"))
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.01  # unshifted: symmetric about 1/2
    t_shift = sample_timesteps((200_000,), 3.0, g, torch.device("cpu"))
    assert abs(t_shift.median().item() - 0.25) < 0.01  # s = 3 maps the median tau = 1/2 to 1 - 1.5 / 2


def test_left_align_padding_keeps_token_order():
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ids2, mask2 = left_align_padding(ids, mask)
    assert ids2.tolist() == [[0, 0, 5, 6, 7], [1, 2, 3, 4, 9]]
    assert mask2.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]


def test_training_layout_is_causal_with_padding_and_contiguous_positions():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    layout = training_layout(mask, num_tokens=2)
    assert layout.position.tolist() == [[0, 0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6, 7]]
    allowed = layout.allowed(0, 8)[:, 0]
    assert torch.equal(layout.attention_bias(0, 8, torch.float32)[:, 0] == 0, allowed)
    causal = torch.ones(8, 8).tril().bool()
    assert torch.equal(allowed[1], causal)
    expected0 = causal.clone()
    expected0[1:, 0] = False  # the pad is no key for anyone but itself
    assert torch.equal(allowed[0], expected0)


def reference_allowed(kinds: list[tuple[str, int, int]], pos: list[int]) -> torch.Tensor:
    """The documented attention rule, written out slot by slot: slots are (kind, order index, group)."""
    n = len(kinds)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for a in range(n):
        for b in range(n):
            same_group_query = kinds[b][0] == "q" and kinds[a][0] == "q" and kinds[b][2] == kinds[a][2] and a != b
            allowed[a, b] = a == b or (b <= a and pos[b] <= pos[a] and not same_group_query)
    return allowed


def test_decoding_layout_matches_the_documented_rule():
    sizes = [2, 3, 1]
    mask = torch.ones(1, 2, dtype=torch.long)  # two prompt tokens + <img>
    layout, ends = decoding_layout(mask, sizes)
    kinds = [("p", -1, NO_GROUP)] * 3
    bounds = [0, 2, 5, 6]
    for s in range(3):
        if s:
            kinds += [("e", j, NO_GROUP) for j in range(bounds[s - 1], bounds[s])]
        kinds += [("q", j, s) for j in range(bounds[s], bounds[s + 1])]
    pos = [0, 1, 2] + [3 + 2 * j + (k == "e") for k, j, _ in kinds[3:]]
    assert layout.position[0].tolist() == pos
    assert ends == [5, 10, 14]
    got = layout.allowed(0, ends[-1])[0, 0]
    assert torch.equal(got, reference_allowed(kinds, pos))


def test_group_schedules():
    assert group_sizes(16, 4) == [4, 4, 4, 4]
    assert group_sizes(10, 4) == [4, 4, 2]
    assert group_sizes(9, [1, 2, 6]) == [1, 2, 6]
    with pytest.raises(ValueError, match="summing to 9"):
        group_sizes(9, [1, 2])
    with pytest.raises(ValueError, match=">= 1"):
        group_sizes(9, 0)


def test_guidance_schedules():
    assert guidance_at(4.0, "constant", 12, 16) == 4.0
    assert guidance_at(4.0, "linear", 0, 16) == 4.0
    assert guidance_at(4.0, "linear", 8, 16) == 2.5
    with pytest.raises(ValueError, match="unknown"):
        guidance_at(4.0, "cosine", 0, 16)


def gaussian_velocity(mu: float, sigma: float):
    """Exact rectified-flow velocity E[z - eps | x_t] for data z ~ N(mu, sigma^2): the ODE maps noise x0 to
    mu + sigma * x0, and the SDE samples N(mu, sigma^2)."""

    def velocity(x, t):
        var = t**2 * sigma**2 + (1 - t) ** 2
        return mu + (t * sigma**2 - (1 - t)) / var * (x - t * mu)

    return velocity


def test_head_samplers_integrate_a_known_flow():
    velocity = gaussian_velocity(1.5, 0.5)
    noise = torch.randn(4000, 1, 2, generator=torch.Generator().manual_seed(0))
    exact = 1.5 + 0.5 * noise
    assert (sample_euler(velocity, noise, 200) - exact).abs().max() < 3e-2
    assert (sample_heun(velocity, noise, 20) - exact).abs().max() < 5e-3
    heun_error = (sample_heun(velocity, noise, 20) - exact).abs().max()
    assert heun_error < (sample_euler(velocity, noise, 20) - exact).abs().max()
    sde = sample_sde(velocity, noise, 100, torch.Generator().manual_seed(1))
    assert abs(sde.mean().item() - 1.5) < 0.02 and abs(sde.std().item() - 0.5) < 0.02


@pytest.mark.parametrize("scale", [None, 3.0])
@pytest.mark.parametrize("sampler", ["sde", "heun"])
def test_guided_velocity_equals_the_plain_head(model, scale, sampler):
    """The sampler's precomputed per-group / per-step work gives the velocity of the head's plain forward."""
    batch, k, rows = 2, 3, 4 if scale is not None else 2
    g = torch.Generator().manual_seed(0)
    states = torch.randn(rows, k, model.config.hidden_size, generator=g)
    times = head_times(sampler, 5, 0.96)
    fast = GuidedVelocity(model, states, times, batch, scale)
    for t in times:
        x = torch.randn(batch, k, CHANNELS, generator=g)
        with torch.no_grad():
            x_rows = torch.cat([x, x]) if scale is not None else x
            v = model.velocity(x_rows, torch.full((rows, k), t), states)
            expected = v if scale is None else v[batch:] + scale * (v[:batch] - v[batch:])
            assert torch.allclose(fast(x, t), expected, rtol=1e-5, atol=1e-6)


def test_step_modulations_in_chunks_equal_the_whole_grid(model):
    """Computing the modulations a few steps at a time (large batches) gives those of the whole grid at once, in
    any order of access."""
    g = torch.Generator().manual_seed(0)
    condition = model.image_out_projector(torch.randn(4, 3, model.config.hidden_size, generator=g))
    times = head_times("heun", 5, 0.96)
    with torch.no_grad():
        whole = model.head.step_modulations(times, condition)
        assert whole.chunk >= len(times)  # small batches: the whole grid at once
        for max_rows in (1, 24, 30):  # 1 step, 2 steps, 2 steps of 12 rows per chunk
            chunked = model.head.step_modulations(times, condition, max_rows=max_rows)
            assert chunked.chunk == max(1, max_rows // 12)
            for t in [*times, times[1], times[-1], times[0]]:
                for a, b in zip(chunked[t], whole[t], strict=True):
                    for x, y in zip(a, b, strict=True):
                        assert (x is None and y is None) or torch.allclose(x, y, rtol=1e-6, atol=1e-7)


def test_sde_sampler_follows_the_euler_maruyama_update():
    """The fused update x (1 - dt) + (1 + t) v dt + noise equals the textbook score/drift form."""
    velocity = gaussian_velocity(0.5, 2.0)
    noise = torch.randn(64, 2, 4, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    x, ts = noise, torch.linspace(0.0, 0.9, 6).tolist()
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        dt = t_next - t
        v = velocity(x, t)
        drift = v + (1 - t) * (t * v - x) / (1 - t)
        x = x + drift * dt + 0.7 * (2 * (1 - t) * dt) ** 0.5 * torch.randn(x.shape, generator=generator)
    expected = x + velocity(x, ts[-1]) * (1 - ts[-1])
    sampled = sample_sde(velocity, noise, 6, torch.Generator().manual_seed(1), t_end=0.9, temperature=0.7)
    assert torch.allclose(sampled, expected, rtol=1e-5, atol=1e-5)


# ---- the model -----------------------------------------------------------------------------------------------------


def test_training_loss_is_seeded_and_backpropagates(model):
    latents = torch.randn(2, CHANNELS, 3, 3, generator=torch.Generator().manual_seed(0))
    a = model(latents, CAPTIONS, generator=torch.Generator().manual_seed(3))
    b = model(latents, CAPTIONS, generator=torch.Generator().manual_seed(3))
    c = model(latents, CAPTIONS, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.loss, b.loss) and not torch.equal(a.loss, c.loss)
    a.loss.backward()
    assert model.queries.query_grid.grad is not None and model.queries.query_grid.grad.abs().sum() > 0
    assert model.image_start.grad.abs().sum() > 0
    assert next(model.llm.parameters()).grad is not None
    model.zero_grad(set_to_none=True)


def test_head_noise_samples_train_the_head_on_k_noisy_copies_of_each_token(model, monkeypatch):
    """k noise draws per token: the head sees every token k times, each copy with the same query state and its
    own timestep; k = 1 is the plain loss."""
    import dataclasses

    latents = torch.randn(2, CHANNELS, 3, 3, generator=torch.Generator().manual_seed(0))
    seen = []
    velocity = model.velocity
    monkeypatch.setattr(model, "velocity", lambda x_t, t, states: seen.append((t, states)) or velocity(x_t, t, states))
    plain = model(latents, CAPTIONS, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(model, "_settings", dataclasses.replace(model.config, head_noise_samples=3))
    tripled = model(latents, CAPTIONS, generator=torch.Generator().manual_seed(3))
    (t1, s1), (t3, s3) = seen
    assert t1.shape == (2, 1, 9) and t3.shape == (2, 3, 9) and s3.shape == (2, 1, 9, s1.shape[-1])
    assert torch.allclose(s3, s1, atol=1e-6)  # one query state per token, projected once for its k copies
    assert not torch.equal(t3[:, 0], t3[:, 1])
    assert torch.isfinite(tripled.loss) and not torch.equal(plain.loss, tripled.loss)
    # broadcasting the shared state is the loss of the head run on k explicit copies of it
    monkeypatch.setattr(model, "velocity", lambda x_t, t, states: velocity(x_t, t, states.expand(-1, 3, -1, -1)))
    copied = model(latents, CAPTIONS, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(copied.loss, tripled.loss, rtol=1e-5)
    with pytest.raises(ValueError, match="head_noise_samples"):
        dataclasses.replace(model.config, head_noise_samples=0)


def test_ae_is_not_part_of_the_state_dict(model):
    keys = set(model.state_dict())
    assert not any(k.startswith(("ae.", "backbone.")) for k in keys)
    assert any(k.startswith("llm.") for k in keys) and "image_start" in keys


def test_one_token_per_step_reproduces_the_teacher_forced_training_forward(model):
    out = decode(model, tokens_per_step=1, return_query_states=True, guidance_scale=3.0)
    teacher = model.teacher_forced_query_states(out.latents, CAPTIONS, out.orders)
    assert torch.allclose(out.query_states, teacher, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 4, [1, 3, 5]])
def test_kv_cache_equals_full_recomputation(model, k):
    cached = decode(model, tokens_per_step=k, return_query_states=True)
    full = decode(model, tokens_per_step=k, return_query_states=True, use_cache=False)
    assert torch.equal(cached.orders, full.orders)
    assert torch.allclose(cached.query_states, full.query_states, atol=1e-5)
    assert torch.allclose(cached.latents, full.latents, atol=1e-5)


def test_group_queries_do_not_see_each_other(model):
    """With k > 1 each query of a group sees the prompt (and earlier groups) and itself at its training position,
    never the other queries of its group: compare with a sequence that holds that one query only."""
    out = decode(model, tokens_per_step=9, order="raster", return_query_states=True, guidance_scale=1.0)
    prefix, mask = model.prompt_embeddings(CAPTIONS)
    queries, _ = model.query_tokens(3, 3)
    for j in range(9):
        layout = training_layout(mask, 1)
        layout.position[:, -2:] += 2 * j  # query j sits at its training position n + 1 + 2j
        embeds = torch.cat([prefix, queries[j].expand(2, 1, -1)], dim=1)
        with torch.no_grad():
            alone = model.run_llm(embeds, layout, 0, embeds.shape[1]).last_hidden_state[:, -1]
        assert torch.allclose(out.query_states[:, j], alone, atol=1e-5)


def test_seeds(model):
    a, b, c = decode(model, seed=7), decode(model, seed=7), decode(model, seed=8)
    assert torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.latents, c.latents)
    assert not torch.equal(a.orders, c.orders)


def test_temperature_scales_the_head_noise(model):
    # temperature 0 removes every Gaussian draw of the head sampler: in raster order the seed no longer matters
    for sampler in ("sde", "euler"):
        cold = [decode(model, seed=s, order="raster", sampler=sampler, temperature=0.0).latents for s in (7, 8)]
        assert torch.equal(cold[0], cold[1])
        warm = [decode(model, seed=s, order="raster", sampler=sampler, temperature=0.5).latents for s in (7, 8)]
        assert not torch.allclose(warm[0], warm[1])
    assert torch.equal(decode(model, seed=7).latents, decode(model, seed=7, temperature=1.0).latents)  # the default
    with pytest.raises(ValueError, match="temperature"):
        decode(model, temperature=-0.1)


def test_sampled_latents_are_layer_normalized(model):
    z = decode(model).latents
    assert torch.allclose(z.mean(1), torch.zeros(()), atol=1e-5)
    assert torch.allclose(z.var(1, unbiased=False), torch.ones(()), atol=1e-3)


def test_guidance_one_equals_conditional_only(model):
    """Scale 1 skips the unconditional rows; it must equal a CFG decode whose unconditional branch has no weight."""
    a = decode(model, guidance_scale=1.0, sampler="heun")
    b = decode(model, guidance_scale=1.0 + 1e-7, cfg_schedule="constant", sampler="heun")
    assert torch.allclose(a.latents, b.latents, atol=1e-4)
    c = decode(model, guidance_scale=3.0, cfg_schedule="constant", sampler="heun")
    assert not torch.allclose(a.latents, c.latents, atol=1e-3)


def test_raster_order_and_orders_are_permutations():
    g = torch.Generator().manual_seed(0)
    orders = generation_orders(3, 10, "random", g, torch.device("cpu"))
    assert torch.equal(orders.sort(1).values, torch.arange(10).expand(3, 10))
    raster = generation_orders(2, 5, "raster", g, torch.device("cpu"))
    assert raster.tolist() == [list(range(5))] * 2
    with pytest.raises(ValueError, match="unknown"):
        generation_orders(2, 5, "spiral", g, torch.device("cpu"))


def test_bad_arguments_are_clear_errors(model):
    with pytest.raises(ValueError, match="empty"):
        generate_latents(model, [], (2, 2))
    with pytest.raises(ValueError, match="num_inference_steps"):
        generate_latents(model, CAPTIONS, (2, 2), num_inference_steps=0)
    with pytest.raises(ValueError, match="sampler"):
        generate_latents(model, CAPTIONS, (2, 2), sampler="ddim")
    with pytest.raises(ValueError, match="larger than"):
        generate_latents(model, CAPTIONS, (9, 9))


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "internvl-eager"])
def test_other_backbones_and_attention_kernels(kind):
    """The custom 4-D masks and position ids work with Qwen2.5-VL's mRoPE LLM and with eager attention too."""
    from vgt.testing import tiny_qwen2_5_vl_backbone

    backbone = tiny_qwen2_5_vl_backbone(words=CAPTIONS) if kind == "qwen2_5_vl" else tiny_internvl_backbone(
        words=CAPTIONS)
    if kind == "internvl-eager":
        backbone.model.set_attn_implementation("eager")
    torch.manual_seed(0)
    config = ARConfig(hidden_size=backbone.text.hidden_size, latent_channels=CHANNELS, max_grid=8,
                      head=FlowHeadConfig(width=32, depth=2))
    m = VGTForGeneration(config, backbone).eval()
    randomize_zero_init(m)
    out = decode(m, tokens_per_step=1, return_query_states=True)
    teacher = m.teacher_forced_query_states(out.latents, CAPTIONS, out.orders)
    assert torch.allclose(out.query_states, teacher, atol=1e-5)
    cached = decode(m, tokens_per_step=4, return_query_states=True)
    full = decode(m, tokens_per_step=4, return_query_states=True, use_cache=False)
    assert torch.allclose(cached.query_states, full.query_states, atol=1e-5)


def test_presets_and_config_round_trip(tmp_path):
    from vgt.presets import AR_PRESETS, ar_preset

    for name in AR_PRESETS:
        config = ar_preset(name, hidden_size=64)
        assert config.head.cond_dim == 64 and config.head.latent_channels == 32
        config.save(tmp_path / f"{name}.json")
        assert ARConfig.load(tmp_path / f"{name}.json") == config
    assert ar_preset("vgt-1.6b", hidden_size=1536).head.width == 1536
    with pytest.raises(ValueError, match="unknown VGT-AR preset"):
        ar_preset("huge", hidden_size=64)
    with pytest.raises(ValueError, match="unknown ARConfig fields"):
        ARConfig.from_dict({"hidden_size": 8, "heads": 3})
