"""The weight average follows its formula, warm-up included, and touches no gradient."""

import torch
from torch import nn

from primia.train.ema import WeightAverage


def test_the_average_follows_the_warmed_up_decay() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    expected = 0.0
    for step, value in enumerate([10.0, 20.0, 30.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
    kept = nn.Linear(1, 1, bias=False)
    average.copy_to(kept)
    assert kept.weight.item() == torch.tensor(expected).item()
    assert model.weight.item() == 30.0  # the trained model itself is not changed
