"""QueryAR decoding: KV-cached generation of latent groups, classifier-free guidance, and the head samplers.

Step 0 feeds the prompt, `<img>` and the queries of the first group; step s feeds the latent tokens of group
s-1 (sampled at step s-1 and re-normalized) and the queries of group s. Every token carries its training position
and the attention rule of `vgt.ar.sequence` (a query never sees other queries of its own group), so
`tokens_per_step=1` is exactly the training factorisation. CFG runs conditional and unconditional rows in one
batch and mixes the head velocities. All randomness comes from one `torch.Generator`. See docs/sampling.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vgt.ar.config import CFG_SCHEDULES, SamplingConfig
from vgt.ar.context import context_orders, context_tokens, known_positions
from vgt.ar.randomness import Generators, draw_rows, generation_orders
from vgt.ar.sequence import decoding_layout

if TYPE_CHECKING:
    from vgt.ar.model import VGTForGeneration

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


# ---- head samplers: integrate the flow from noise (t = 0) to a latent token (t = 1) --------------------------------


def sde_times(steps: int, t_end: float) -> list[float]:
    return torch.linspace(0.0, t_end, steps).tolist()


def ode_times(steps: int) -> list[float]:
    return torch.linspace(0.0, 1.0, steps + 1).tolist()


def head_times(sampler: str, steps: int, t_end: float) -> list[float]:
    """The times at which `sampler` evaluates the head (every point of its grid)."""
    return sde_times(steps, t_end) if sampler == "sde" else ode_times(steps)


def sample_sde(velocity: Velocity, noise: torch.Tensor, steps: int, generator: Generators,
               t_end: float = 0.96, temperature: float = 1.0, step_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Euler-Maruyama on t = linspace(0, t_end, steps) with the score implied by the velocity, then one deterministic
    Euler step to t = 1 (the authors' sampler; `steps` head evaluations). `temperature` scales the injected noise;
    `step_noise` [B, k, steps - 1, C] replaces its draws from `generator`."""
    x = noise
    ts = sde_times(steps, t_end)
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
        dt = t_next - t
        v = velocity(x, t)
        # drift = v + (1 - t) * score with score = (t v - x) / (1 - t), i.e. (1 + t) v - x
        if step_noise is None:
            noise = draw_rows(tuple(x.shape[1:]), generator, len(x), x.device)
        else:
            noise = step_noise[:, :, i]
        x = torch.add(x * (1 - dt), v, alpha=(1 + t) * dt).add_(noise, alpha=temperature * (2 * (1 - t) * dt) ** 0.5)
    t = ts[-1]
    return x + velocity(x, t) * (1 - t)


def sample_euler(velocity: Velocity, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic ODE, Euler on a uniform grid of `steps` steps."""
    x = noise
    ts = ode_times(steps)
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        x = x + velocity(x, t) * (t_next - t)
    return x


def sample_heun(velocity: Velocity, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic ODE, Heun (trapezoidal predictor-corrector): `steps` steps, 2 head evaluations each."""
    x = noise
    ts = ode_times(steps)
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        dt = t_next - t
        v = velocity(x, t)
        x_pred = x + v * dt
        v_next = velocity(x_pred, t_next)
        x = x + 0.5 * (v + v_next) * dt
    return x


@contextlib.contextmanager
def kv_heads_shared(device: torch.device) -> Iterator[None]:
    """On CPU, let transformers' sdpa attention read grouped key/value heads in place (`enable_gqa`) instead of
    copying the whole KV cache to every query head at every layer and step (`repeat_kv`: 10-20% of a 16-image
    call). The CPU kernel computes the same numbers either way; on accelerators transformers' own choice stands
    (there a mask with GQA can fall back to a slower kernel). An explicit TRANSFORMERS_SDPA_FORCE_GQA is kept."""
    key = "TRANSFORMERS_SDPA_FORCE_GQA"
    if device.type != "cpu" or key in os.environ:
        yield
        return
    os.environ[key] = "1"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def guidance_at(scale: float, schedule: str, decoded: int, total: int) -> float:
    """CFG scale for a group that starts after `decoded` of `total` tokens: constant, or linear from `scale` at the
    first group down towards 1 at the last."""
    if schedule == "constant":
        return scale
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * (1.0 - decoded / total)
    raise ValueError(f"cfg schedule {schedule!r} is unknown; choose one of {CFG_SCHEDULES}")


def group_sizes(num_tokens: int, tokens_per_step: int | Sequence[int]) -> list[int]:
    """Group schedule: a fixed k (the last group takes the remainder) or an explicit list summing to N."""
    if isinstance(tokens_per_step, int):
        if tokens_per_step < 1:
            raise ValueError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
        k = min(tokens_per_step, num_tokens)
        return [k] * (num_tokens // k) + ([num_tokens % k] if num_tokens % k else [])
    sizes = [int(s) for s in tokens_per_step]
    if any(s < 1 for s in sizes) or sum(sizes) != num_tokens:
        raise ValueError(f"a tokens_per_step schedule must be positive sizes summing to {num_tokens}, got {sizes}")
    return sizes


@dataclass
class DecodeOutput:
    latents: torch.Tensor  # [B, C, h, w], normalized like the AE's latents
    orders: torch.Tensor  # [B, N] generation order (raster indices)
    query_states: torch.Tensor | None = None  # [B, N, D] conditional rows' hidden states at the queries, in order


@torch.no_grad()
def generate_latents(
    model: VGTForGeneration,
    prompts: list[str | None],
    grid: tuple[int, int],
    negative_prompts: list[str | None] | None = None,
    guidance_scale: float = 4.5,
    cfg_schedule: str = "linear",
    num_inference_steps: int = 30,
    sampler: str = "sde",
    sde_t_end: float = 0.96,
    temperature: float = 1.0,
    tokens_per_step: int | Sequence[int] = 1,
    order: str = "random",
    generator: Generators = None,
    use_cache: bool = True,
    return_query_states: bool = False,
    progress_bar: Callable[[Iterable[int]], Iterable[int]] | None = None,
    orders: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    step_callback: Callable[[int, int], None] | None = None,
) -> DecodeOutput:
    """Decode one latent grid per prompt. `generator`: one for the whole batch, or one per prompt (each row's
    randomness then does not depend on the other rows). `temperature` scales the head sampler's Gaussian noise (its
    start and the SDE's injected noise): below 1 each token keeps nearer its most likely values. `use_cache=False`
    recomputes the whole sequence at every step (the reference the KV cache is tested and benchmarked against).
    `progress_bar` wraps the decoding steps (the pipeline passes its `self.progress_bar`).

    `orders` [B, N] (raster indices) and `noise` [B, N, num_inference_steps, C] (standard Gaussian, in generation
    order: [:, j, 0] starts token j's head sampler, [:, j, s] is the SDE's noise at its step s) replace the draws
    from `generator`, so that a whole generation can be compared with another implementation fed the same numbers.

    `known_latents` [1 or B, C, h, w] with `known_mask` [h, w] (True = keep): those positions are fed first as
    context (`vgt.ar.context`) and come back unchanged; only the others are generated (then `noise` covers those
    N - K positions, `orders` is not taken, and the linear CFG schedule runs over the generated positions).
    `step_callback(done, total)` is called after each decoding step (a progress display)."""
    if not prompts:
        raise ValueError("got an empty prompt list")
    SamplingConfig(guidance_scale=guidance_scale, cfg_schedule=cfg_schedule, num_inference_steps=num_inference_steps,
                   sampler=sampler, sde_t_end=sde_t_end, temperature=temperature, order=order)  # the checks
    height, width = grid
    num_tokens = height * width
    batch = len(prompts)
    channels = model.config.latent_channels
    known, tokens = 0, torch.zeros(batch, num_tokens, channels, device=model.device)  # raster order
    if known_latents is not None or known_mask is not None:
        if known_latents is None or known_mask is None or orders is not None:
            raise ValueError("pass known_latents and known_mask together, and no orders (the sampler orders the "
                             "known positions first)")
        context, known_rows, known = known_positions(known_latents, known_mask, batch, grid, channels)
        tokens = context.to(tokens).clone()
        orders = context_orders(known_rows, order, generator, model.device)
    sizes = group_sizes(num_tokens - known, tokens_per_step)
    use_cfg = guidance_scale != 1.0
    if negative_prompts is not None and len(negative_prompts) != batch:
        raise ValueError(f"got {len(negative_prompts)} negative prompts for {batch} prompts")
    rows = list(prompts) + (list(negative_prompts or [None] * batch) if use_cfg else [])
    device = model.device

    if orders is None:
        orders = generation_orders(batch, num_tokens, order, generator, device)
    elif tuple(orders.shape) != (batch, num_tokens):
        raise ValueError(f"orders must have shape {(batch, num_tokens)}, got {tuple(orders.shape)}")
    if noise is not None and tuple(noise.shape) != (batch, num_tokens - known, num_inference_steps, channels):
        raise ValueError(f"noise must have shape {(batch, num_tokens - known, num_inference_steps, channels)}, "
                         f"got {tuple(noise.shape)}")
    row_orders = orders.repeat(2, 1) if use_cfg else orders
    prefix, mask = model.prompt_embeddings(rows)
    queries, positions = model.query_tokens(height, width)
    layout, step_ends = decoding_layout(mask, sizes, model.prefix_length, known)
    rope = layout.position.clone()
    rope[:, step_ends[0] :] += model.config.decode_position_offset
    bounds = [known]
    for size in sizes:
        bounds.append(bounds[-1] + size)

    states_in_order = []
    fed: list[torch.Tensor] = []  # embeddings fed so far (only kept when recomputing)
    cache = None
    previous_z = None
    start = 0
    times = head_times(sampler, num_inference_steps, sde_t_end)
    for step in range(len(sizes)) if progress_bar is None else progress_bar(range(len(sizes))):
        group = row_orders[:, bounds[step] : bounds[step + 1]]
        new = [queries[group].to(prefix.dtype)]
        if step == 0:
            new.insert(0, prefix)
            if known:
                context = tokens.repeat(2, 1, 1) if use_cfg else tokens  # the unconditional rows see it too
                new.insert(1, context_tokens(model, context, row_orders, known, queries, positions).to(prefix.dtype))
        else:
            previous = row_orders[:, bounds[step - 1] : bounds[step]]
            new.insert(0, model.latent_tokens(previous_z, positions[previous]).to(prefix.dtype))
        embeds = torch.cat(new, dim=1)
        end = step_ends[step]
        with kv_heads_shared(device):
            if use_cache:
                out = model.run_llm(embeds, layout, start, end, cache=cache, use_cache=True,
                                    position_ids=rope[:, start:end])
                cache = out.past_key_values
            else:
                fed.append(embeds)
                out = model.run_llm(torch.cat(fed, dim=1), layout, 0, end, position_ids=rope[:, :end])
        start = end
        k = sizes[step]
        states = out.last_hidden_state[:, -k:]
        scale = (guidance_at(guidance_scale, cfg_schedule, bounds[step] - known, num_tokens - known) if use_cfg
                 else 1.0)
        velocity = GuidedVelocity(model, states, times, batch, scale if use_cfg else None)
        given = None if noise is None else noise[:, bounds[step] - known : bounds[step + 1] - known].to(device)
        start_noise = draw_rows((k, channels), generator, batch, device) if given is None else given[:, :, 0]
        if sampler == "sde":
            z = sample_sde(velocity, temperature * start_noise, num_inference_steps, generator, sde_t_end, temperature,
                           step_noise=None if given is None else given[:, :, 1:])
        elif sampler == "euler":
            z = sample_euler(velocity, temperature * start_noise, num_inference_steps)
        else:
            z = sample_heun(velocity, temperature * start_noise, num_inference_steps)
        z = model.normalize_tokens(z)
        tokens.scatter_(1, orders[:, bounds[step] : bounds[step + 1], None].expand(-1, -1, channels), z)
        previous_z = z.repeat(2, 1, 1) if use_cfg else z
        if return_query_states:
            states_in_order.append(states[:batch])
        if step_callback is not None:
            step_callback(step + 1, len(sizes))
    latents = tokens.transpose(1, 2).reshape(batch, channels, height, width)
    return DecodeOutput(latents=latents, orders=orders,
                        query_states=torch.cat(states_in_order, dim=1) if return_query_states else None)


class GuidedVelocity:
    """The head's velocity v(x, t) for one token group, at the times of the sampler's grid. With guidance
    (`scale` not None) v = v_u + scale (v_c - v_u), conditional and unconditional rows in one head batch. What does
    not depend on the noisy token (W_out and the condition projection, the time embedding, every adaLN modulation)
    is computed once for the group (the modulations a chunk of grid times at a time, `FlowHead.step_modulations`),
    so a head evaluation is only the token's own path."""

    def __init__(self, model: VGTForGeneration, states: torch.Tensor, times: Sequence[float], batch: int,
                 scale: float | None):
        self.head = model.head
        self.batch = batch
        self.scale = scale
        self.modulations = model.head.step_modulations(times, model.image_out_projector(states))

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        modulations = self.modulations[t]
        if self.scale is None:
            return self.head.velocity(x, modulations).float()
        v = self.head.velocity(torch.cat([x, x]), modulations).float()
        return torch.lerp(v[self.batch :], v[: self.batch], self.scale)
