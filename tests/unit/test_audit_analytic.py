"""Analytic recovery from the last Linear layer, the crafted weights and the consistency check."""

import pytest
import torch

from primia.audit.analytic import features_of, recover_from_head
from primia.audit.consistency import consistency_refusal
from primia.audit.release import UpdateRule, node_update
from primia.audit.threats import Threat, craft, sent_to_nodes
from primia.data.dataset import Task
from primia.models import build_model, model_names
from primia.models.checkpoint import ModelSpec

LABELS = [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]]


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("labels", LABELS)
def test_batch_one_gives_labels_and_features_exactly_for_every_model(name, labels):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, width=8).eval()
    image = torch.rand(1, 1, 32, 32)
    target = torch.tensor([labels], dtype=torch.float32)
    update = node_update(model, image, target, Task.MULTILABEL, UpdateRule())
    found = recover_from_head(
        model, update, task=Task.MULTILABEL, batch_size=1, prior=torch.rand(1, 1, 32, 32)
    )
    assert found.labels is not None and torch.equal(found.labels, target)
    with torch.no_grad():
        features = features_of(model, image)[0]
    assert torch.allclose(found.features[-1], features, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("label", [0, 2])
def test_a_multiclass_label_comes_from_the_bias_sign_for_every_model(name, label):
    torch.manual_seed(1)
    model = build_model(name, num_classes=3, width=8).eval()
    update = node_update(
        model, torch.rand(1, 1, 32, 32), torch.tensor([label]), Task.MULTICLASS, UpdateRule()
    )
    found = recover_from_head(
        model, update, task=Task.MULTICLASS, batch_size=1, prior=torch.rand(1, 1, 32, 32)
    )
    assert found.labels is not None and found.labels.tolist() == [label]


def test_the_lenet_imprint_decodes_its_features_to_the_image():
    model = build_model("lenet", num_classes=4, width=17)
    crafted = craft(Threat.TRAP, model, task=Task.MULTILABEL, image_size=32)
    assert crafted is not None and crafted.decode is not None and crafted.counting == 16 * 64
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        features = features_of(crafted.target, images)
    assert torch.allclose(features[:, crafted.counting], torch.ones(3))
    assert (crafted.decode(features) - images).abs().max() < 1e-3


def test_the_trap_isolates_an_image_alone_with_its_label_at_batch_four():
    torch.manual_seed(2)
    model = build_model("resnet9", num_classes=4, width=8)
    crafted = craft(Threat.TRAP, model, task=Task.MULTILABEL, image_size=32)
    assert crafted is not None and crafted.decode is None and crafted.counting == 0
    images = torch.rand(4, 1, 32, 32)
    targets = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]).float()
    update = node_update(crafted.target, images, targets, Task.MULTILABEL, UpdateRule())
    found = recover_from_head(
        crafted.target,
        update,
        task=Task.MULTILABEL,
        batch_size=4,
        prior=images[:1],
        counting=crafted.counting,
    )
    assert found.counts.tolist() == [1, 2, 0, 0]
    assert list(found.features) == [0]  # label 0 isolates image 0; label 1 is shared
    with torch.no_grad():
        expected = features_of(crafted.target, images[:1])[0]
    assert torch.allclose(found.features[0], expected, rtol=1e-4, atol=1e-6)


def test_the_nodes_consistency_check_refuses_only_different_weights():
    model = build_model("cnn", num_classes=4, width=8)
    spec = ModelSpec("cnn", num_outputs=4, width=8, image_size=32)
    same = craft(Threat.TRAP, model, task=Task.MULTILABEL, image_size=32)
    different = craft(Threat.INCONSISTENT, model, task=Task.MULTILABEL, image_size=32)
    assert consistency_refusal(sent_to_nodes(None, model, 4), spec) is None
    assert consistency_refusal(sent_to_nodes(same, model, 4), spec) is None
    refusal = consistency_refusal(sent_to_nodes(different, model, 4), spec)
    # The nodes' own InconsistentRound: every node sees the others' weights digest differ.
    assert refusal is not None and "4 of 4 nodes abandoned the round" in refusal
    assert "other weights" in refusal and "before any share was sent" in refusal
