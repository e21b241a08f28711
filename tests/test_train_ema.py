"""The weight EMA: copies the weights before its start step and averages after; swapping the average in and out,
and its state round trip."""

import torch
from torch import nn

from vgt.train import EMA


def test_ema_copies_before_start_then_averages():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.9, start=2)
    values = [1.0, 2.0, 3.0, 4.0]
    for step, value in enumerate(values):
        model.weight.data.fill_(value)
        ema.update(model, step)
        if step == 1:
            assert ema.state_dict()["weight"].item() == 2.0  # before start: a copy
    # step 2: 0.9 * 2 + 0.1 * 3 = 2.1; step 3: 0.9 * 2.1 + 0.1 * 4 = 2.29
    assert abs(ema.state_dict()["weight"].item() - 2.29) < 1e-6


def test_ema_swaps_in_and_restores_and_roundtrips():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5)
    online = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, 0)
    with ema.applied_to(model):
        assert torch.allclose(model[0].weight, online["0.weight"] + 0.5)
    assert torch.allclose(model[0].weight, online["0.weight"] + 1.0)
    assert "1.num_batches_tracked" not in ema.state_dict()  # integer buffers are not averaged
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.state_dict()["0.weight"], ema.state_dict()["0.weight"])
