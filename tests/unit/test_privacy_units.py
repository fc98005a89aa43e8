"""Patient-level sampling and clipping, augmentation multiplicity, the ledger's unit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional

from primia.errors import ConfigError, PrivacyUnitMismatch
from primia.train.accounting import Mechanism, noise_for_target
from primia.train.fast_dp import FastDPSGD, vmap_clipped_grad_sum
from primia.train.ledger import Budget, PrivacyLedger
from primia.train.ledger_repair import repair
from primia.train.units import (
    UnitPoissonSampler,
    random_shifts,
    unit_batches,
    unit_members,
    unnamed_patients_problem,
)

PATIENTS = ["p1", "p2", "p1", "p3", "p2", "p1", "p4", "p3", "p1"]


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def _noiseless(model: nn.Module, clip: float) -> FastDPSGD:
    """DP-SGD without noise or scaling: ``.grad`` becomes the clipped sum itself."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    return FastDPSGD(
        model, optimizer, noise_multiplier=0.0, max_grad_norm=clip, expected_batch_size=1
    )


def test_patient_members_keep_each_patients_images_together_and_capped() -> None:
    members = unit_members(PATIENTS, "patient", max_images_per_patient=3)
    assert [m.tolist() for m in members] == [[0, 2, 5], [1, 4], [3, 7], [6]]
    examples = unit_members(PATIENTS, "example", max_images_per_patient=3)
    assert [m.tolist() for m in examples] == [[i] for i in range(len(PATIENTS))]
    with pytest.raises(ConfigError, match="no patient ID"):
        unit_members(["p1", ""], "patient", max_images_per_patient=4)


def test_sampling_never_puts_a_patient_twice_in_a_batch_nor_splits_one() -> None:
    members = unit_members(PATIENTS, "patient", max_images_per_patient=16)
    sampler = UnitPoissonSampler(len(members), 0.5, torch.Generator().manual_seed(1))
    assert len(sampler) == 2
    seen_sizes = set()
    for _ in range(20):
        for sampled in sampler:
            assert len(set(sampled.tolist())) == len(sampled)
            batches = list(unit_batches(sampled, members, max_images=3))
            images = torch.cat([indices for indices, _ in batches]) if batches else torch.tensor([])
            assert len(set(images.tolist())) == len(images)  # no image twice
            for indices, labels in batches:
                for unit in labels.unique().tolist():
                    # the whole patient is in this physical batch
                    assert sorted(indices[labels == unit].tolist()) == members[unit].tolist()
            seen_sizes.add(len(sampled))
    assert len(seen_sizes) > 1  # Poisson: the number of patients varies


def test_physical_batches_of_patients_give_the_reference_patient_clipped_sum() -> None:
    """Patients spread over several physical batches (never split) clip as the reference."""
    model = _net()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(len(PATIENTS), 1, 8, 8, generator=gen) * 3
    targets = (torch.rand(len(PATIENTS), 2, generator=gen) > 0.5).float()
    members = unit_members(PATIENTS, "patient", max_images_per_patient=16)
    sampled = torch.arange(len(members))
    labels = torch.cat([torch.full((len(m),), u) for u, m in enumerate(members)])
    order = torch.cat(list(members))
    expected = vmap_clipped_grad_sum(
        model, _loss, images[order], targets[order], max_grad_norm=0.05, groups=labels
    )
    dp = _noiseless(model, 0.05)
    dp.zero_grad()
    for indices, units in unit_batches(sampled, members, max_images=4):
        dp.backward(_loss(model(images[indices]), targets[indices]), groups=units)
    dp.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_augmentation_multiplicity_averages_augmentations_before_clipping() -> None:
    """K shifted copies weighted 1/K in one group = the mean of the K per-augmentation
    gradients, clipped once: checked against separate autograd passes."""
    model = _net()
    k, clip = 3, 0.05
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 8, 8, generator=gen)
    targets = (torch.rand(4, 2, generator=gen) > 0.5).float()
    augmented = random_shifts(images.repeat_interleave(k, 0), 2, torch.Generator().manual_seed(5))
    assert not torch.equal(augmented[0], augmented[1])  # the copies differ

    expected = [torch.zeros_like(p) for p in model.parameters()]
    for example in range(4):
        grads = []
        for copy in range(k):
            row = example * k + copy
            model.zero_grad()
            _loss(model(augmented[row : row + 1]), targets[example : example + 1]).sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        mean = [torch.stack(parts).mean(0) for parts in zip(*grads, strict=True)]
        norm = torch.cat([g.flatten() for g in mean]).norm()
        factor = min(1.0, clip / (float(norm) + 1e-6))
        expected = [e + factor * g for e, g in zip(expected, mean, strict=True)]
    model.zero_grad()

    dp = _noiseless(model, clip)
    dp.zero_grad()
    losses = _loss(model(augmented), targets.repeat_interleave(k, 0)) / k
    dp.backward(losses, groups=torch.arange(4).repeat_interleave(k))
    dp.step()
    for param, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.grad, want, rtol=1e-4, atol=1e-6)


def _mechanism() -> Mechanism:
    sigma = noise_for_target(epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=20)
    return Mechanism(sigma, 0.1, 20)


def test_the_ledger_records_the_unit_and_refuses_to_mix_units(tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, 1e-5))
    assert ledger.unit is None
    ledger.reserve(_mechanism(), epsilon=1.0, delta=1e-5, unit="patient")
    assert PrivacyLedger.open(path).unit == "patient"
    before = path.read_text()
    with pytest.raises(PrivacyUnitMismatch, match="records patient-level releases"):
        ledger.reserve(_mechanism(), epsilon=1.0, delta=1e-5, unit="example")
    assert path.read_text() == before  # nothing written
    ledger.reserve(_mechanism(), epsilon=1.0, delta=1e-5, unit="patient")


def test_example_level_releases_refuse_a_patient_level_one(tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, 1e-5))
    ledger.reserve(_mechanism(), epsilon=1.0, delta=1e-5, unit="example")
    reserve = json.loads(path.read_text().splitlines()[1])
    assert reserve["event"] == "reserve" and reserve["unit"] == "example"
    with pytest.raises(PrivacyUnitMismatch, match="do not compose"):
        PrivacyLedger.open(path).reserve(_mechanism(), epsilon=1.0, delta=1e-5, unit="patient")


def test_patient_level_is_refused_for_images_that_name_no_patient() -> None:
    """Each such image would be its own 'patient': example-level DP recorded as patient."""
    problem = unnamed_patients_problem("patient", unnamed=2, images=5)
    assert problem is not None and "2 of the 5 training images name no patient" in problem
    assert "privacy unit 'example'" in problem
    assert unnamed_patients_problem("patient", unnamed=0, images=5) is None
    assert unnamed_patients_problem("example", unnamed=5, images=5) is None


def test_a_repaired_ledger_keeps_the_unit_of_the_epsilon_it_carries(tmp_path) -> None:
    path = tmp_path / "ledger.jsonl"
    PrivacyLedger.open(path, budget=Budget(10.0, 1e-5)).reserve(
        _mechanism(), epsilon=1.0, delta=1e-5, unit="patient"
    )
    path.unlink()  # lost; the anchor beside it still says what was spent
    with pytest.raises(ConfigError, match="give --unit patient or --unit example"):
        repair(path, accept=True, budget=Budget(10.0, 1e-5))
    repair(path, accept=True, budget=Budget(10.0, 1e-5), unit="patient")
    ledger = PrivacyLedger.open(path)
    assert ledger.unit == "patient"
    assert ledger.spent_epsilon() > 0.9  # the patient-level epsilon is carried ...
    with pytest.raises(PrivacyUnitMismatch):  # ... and an example-level release joins it
        ledger.reserve(_mechanism(), epsilon=1.0, delta=1e-5, unit="example")
