"""The weight EMA's arithmetic: warm-up, decay and what it leaves alone."""

import pytest
import torch
from torch import nn

from primia.train.ema import WeightEMA


def test_average_follows_the_warm_up_then_the_decay():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.5)
    expected = 0.0
    for t in range(12):
        with torch.no_grad():
            model.weight.fill_(float(t + 1))
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * (t + 1)
        ema.update()
        assert ema.average.weight.item() == pytest.approx(expected)
    assert ema.average.weight.item() != model.weight.item()  # an average, not the iterate


def test_updates_after_each_optimizer_step_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 1))
    model.register_buffer("count", torch.zeros((), dtype=torch.long))
    ema = WeightEMA(model, decay=0.99)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema.attach(optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        model.count += 1
    assert ema.updates == 3
    assert ema.average.count.item() == 2  # copied at the last step, before the increment
    assert not any(p.requires_grad for p in ema.average.parameters())


def test_decay_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightEMA(nn.Linear(1, 1), decay=1.0)
