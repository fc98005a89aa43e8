"""Label recovery from updates (iDLG and the counting strategy for batches)."""

import pytest
import torch
from torch import nn

from primia.audit.labels import last_linear, recover_labels
from primia.audit.release import Defense, UpdateRule, node_update
from primia.data import Task
from primia.errors import ModelError
from primia.models import build_model


def _targets(task: Task, count: int, outputs: int, generator: torch.Generator) -> torch.Tensor:
    if task is Task.MULTICLASS:
        return torch.randint(outputs, (count,), generator=generator)
    return (torch.rand(count, outputs, generator=generator) > 0.5).float()


@pytest.mark.parametrize(
    ("task", "outputs"), [(Task.MULTILABEL, 4), (Task.BINARY, 1), (Task.MULTICLASS, 3)]
)
@pytest.mark.parametrize("architecture", ["lenet", "cnn"])
@pytest.mark.parametrize("local_steps", [1, 3])
def test_idlg_recovers_the_label_of_a_single_image(
    task: Task, outputs: int, architecture: str, local_steps: int
) -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(architecture, num_classes=outputs, width=4)
    rule = UpdateRule(local_steps=local_steps, local_lr=0.05)
    for _ in range(5):
        image = torch.rand(1, 1, 32, 32, generator=generator)
        target = _targets(task, 1, outputs, generator)
        update = node_update(model, image, target, task, rule)
        recovered = recover_labels(
            model, update, task=task, count=1, prior=image, update_scale=0.05 * local_steps
        )
        assert torch.equal(recovered, target)


def test_counts_for_a_batch_are_close_to_the_true_label_counts() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model("lenet", num_classes=4, width=4)
    images = torch.rand(16, 1, 32, 32, generator=generator)
    targets = _targets(Task.MULTILABEL, 16, 4, generator)
    update = node_update(model, images, targets, Task.MULTILABEL, UpdateRule())
    recovered = recover_labels(
        model, update, task=Task.MULTILABEL, count=16, prior=images.mean(0, keepdim=True)
    )
    assert recovered.shape == (16, 4)
    assert (recovered.sum(0) - targets.sum(0)).abs().max() <= 1


def test_multiclass_batch_gets_one_class_per_image() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, width=4)
    images = torch.rand(6, 1, 32, 32)
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    update = node_update(model, images, targets, Task.MULTICLASS, UpdateRule())
    recovered = recover_labels(
        model, update, task=Task.MULTICLASS, count=6, prior=images.mean(0, keepdim=True)
    )
    assert recovered.shape == (6,) and recovered.dtype == torch.int64
    assert set(recovered.tolist()) <= {0, 1, 2}


def test_noise_does_not_break_the_shape_of_the_answer() -> None:
    torch.manual_seed(0)
    model = build_model("lenet", num_classes=4, width=4)
    images, targets = torch.rand(8, 1, 32, 32), torch.ones(8, 4)
    rule = UpdateRule(defense=Defense.DP, noise_multiplier=1.0)
    update = node_update(model, images, targets, Task.MULTILABEL, rule, noise=torch.Generator())
    recovered = recover_labels(model, update, task=Task.MULTILABEL, count=8, prior=images[:1])
    assert recovered.shape == (8, 4) and set(recovered.unique().tolist()) <= {0.0, 1.0}


def test_a_model_without_a_linear_output_layer_is_refused() -> None:
    with pytest.raises(ModelError, match=r"nn\.Linear"):
        last_linear(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
