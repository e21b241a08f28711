"""Token layout and attention rule shared by the training forward and the KV-cached decoder.

Layout of one row (slots, left to right):

    [pads][prompt tokens][<img>][image tokens ...]

(`<img>` is one learned vector, or the embeddings of the authors' tokenized `<img>`: `prefix` slots in all.)

The backbone returns right-padded prompts; we move the pads to the left of each row so that every row's image
part starts at the same slot. Pads are masked out as keys and take no position: position ids are
cumsum(mask) - 1 over the prompt, so a row with n real prompt tokens has its prompt at 0..n-1, `<img>` at n,
and the image tokens from n + 1 on. This is the same attention pattern, with the same position ids, as the
authors' right-padded layout with a padding mask, but it lets a batch decode in lock step.

Image tokens carry their *training* position: for a generation order p_0, p_1, ... the training sequence is
q_{p_0}, e_{p_0}, q_{p_1}, e_{p_1}, ... so the query of the j-th position sits at n + 1 + 2j and its latent
token at n + 2 + 2j, whichever step of the decoder feeds them.

Attention rule, for a query slot a and a key slot b of the same row:

    a and b are not pads  and  b entered the model no later than a  and  pos(b) <= pos(a)
    and  not (b is a query of a's own decoding group, b != a)
    (besides, every slot attends to itself, so pad rows stay finite)

In training every query is its own group, so this is plain causal attention with a padding mask. When the
decoder emits k positions per step (a group), the k new queries see exactly what their training counterparts see
*minus* the earlier members of their own group (whose latents are not known yet): no query ever sees another
query without its latent. Latent tokens fed in the next step see exactly their training context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NO_GROUP = -1


def left_align_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's pads to the front, keeping the real tokens in order."""
    order = torch.sort(attention_mask.to(torch.int64), dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


@dataclass
class SlotLayout:
    """Per-slot metadata of a whole sequence (prompt + image part), in the order the slots enter the model.

    position: [B, S] position ids; valid: [B, S] False for pads; group: [S] decoding group of each query slot
    (NO_GROUP for everything else)."""

    position: torch.Tensor
    valid: torch.Tensor
    group: torch.Tensor

    def allowed(self, start: int, end: int) -> torch.Tensor:
        """Boolean mask [B, 1, end - start, end]: may slot start..end-1 attend to slot 0..end-1."""
        q_pos, k_pos = self.position[:, start:end, None], self.position[:, None, :end]
        q_group, k_group = self.group[start:end, None], self.group[None, :end]
        q_slot = torch.arange(start, end, device=self.group.device)[:, None]
        k_slot = torch.arange(end, device=self.group.device)[None, :]
        same_group_query = (k_group == q_group) & (k_group != NO_GROUP) & (k_slot != q_slot)
        allowed = self.valid[:, start:end, None] & self.valid[:, None, :end] & (k_pos <= q_pos) & (k_slot <= q_slot)
        allowed = (allowed & ~same_group_query) | (k_slot == q_slot)
        return allowed[:, None]

    def attention_bias(self, start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
        """The same mask as an additive bias (0 where allowed, the dtype's minimum elsewhere) for eager attention."""
        allowed = self.allowed(start, end)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


def prompt_slots(attention_mask: torch.Tensor, prefix: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and validity of a left-aligned prompt followed by the `prefix` slots of `<img>`:
    ([B, T + prefix], [B, T + prefix])."""
    valid = torch.cat([attention_mask.bool(), attention_mask.new_ones(attention_mask.shape[0], prefix).bool()], dim=1)
    position = (valid.long().cumsum(1) - 1).clamp(min=0)
    return position, valid


def image_positions(text_lengths: torch.Tensor, order_index: torch.Tensor, is_latent: bool) -> torch.Tensor:
    """Training positions [B, k] of the queries (or latent tokens) of order indices `order_index` [k];
    `text_lengths` counts the prompt and the `<img>` slots."""
    return text_lengths[:, None] + 2 * order_index[None, :] + int(is_latent)


def build_layout(
    attention_mask: torch.Tensor, image_slots: list[tuple[torch.Tensor, bool, torch.Tensor]], prefix: int = 1
) -> SlotLayout:
    """Layout for a prompt followed by image slot blocks.

    `image_slots`: blocks of (order indices [k], is_latent, group ids [k]) in the order they enter the model.
    """
    position, valid = prompt_slots(attention_mask, prefix)
    text_lengths = attention_mask.long().sum(1) + prefix
    groups = [torch.full((position.shape[1],), NO_GROUP, dtype=torch.long, device=position.device)]
    positions, valids = [position], [valid]
    for order_index, is_latent, group in image_slots:
        positions.append(image_positions(text_lengths, order_index, is_latent))
        valids.append(torch.ones_like(positions[-1], dtype=torch.bool))
        groups.append(torch.full_like(group, NO_GROUP) if is_latent else group)
    return SlotLayout(torch.cat(positions, 1), torch.cat(valids, 1), torch.cat(groups))


def training_layout(attention_mask: torch.Tensor, num_tokens: int, prefix: int = 1) -> SlotLayout:
    """q_0, e_0, q_1, e_1, ...: each query its own group, i.e. causal attention."""
    index = torch.arange(num_tokens, device=attention_mask.device)
    position, valid = prompt_slots(attention_mask, prefix)
    text_lengths = attention_mask.long().sum(1) + prefix
    image = torch.stack(
        [image_positions(text_lengths, index, False), image_positions(text_lengths, index, True)], dim=2
    ).flatten(1)
    group = torch.stack([index, torch.full_like(index, NO_GROUP)], dim=1).flatten()
    prefix_group = torch.full((position.shape[1],), NO_GROUP, dtype=torch.long, device=position.device)
    return SlotLayout(
        torch.cat([position, image], 1),
        torch.cat([valid, torch.ones_like(image, dtype=torch.bool)], 1),
        torch.cat([prefix_group, group]),
    )


def decoding_layout(attention_mask: torch.Tensor, group_sizes: list[int],
                    prefix: int = 1, known: int = 0) -> tuple[SlotLayout, list[int]]:
    """Slots of a KV-cached decode: step 0 = prompt + `<img>` + queries of group 0; step s = latents of group s-1 +
    queries of group s. Returns the layout and the slot index where each step ends.

    `known` > 0: step 0 also feeds, after `<img>`, the first `known` positions of the order as teacher-forced
    pairs q_0, e_0, ..., q_{known-1}, e_{known-1} (exactly the training prefix: causal, no group); the groups of
    `group_sizes` then decode order indices `known`, `known` + 1, ..."""
    device = attention_mask.device
    bounds = (torch.tensor([0, *group_sizes], device=device).cumsum(0) + known).tolist()
    blocks, step_ends = [], []
    for index in torch.arange(known, device=device).split(1):
        blocks += [(index, False, torch.full_like(index, NO_GROUP)), (index, True, torch.full_like(index, NO_GROUP))]
    end = attention_mask.shape[1] + prefix + 2 * known
    for step, size in enumerate(group_sizes):
        if step > 0:
            previous = torch.arange(bounds[step - 1], bounds[step], device=device)
            blocks.append((previous, True, torch.full_like(previous, NO_GROUP)))
            end += previous.numel()
        current = torch.arange(bounds[step], bounds[step + 1], device=device)
        blocks.append((current, False, torch.full_like(current, step)))
        end += size
        step_ends.append(end)
    return build_layout(attention_mask, blocks, prefix), step_ends
