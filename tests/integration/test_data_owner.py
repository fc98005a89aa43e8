"""A data owner refuses what it must not do, before it touches an image, and says why."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from primia.blobs import Blob
from primia.errors import ConfigError
from primia.federated import data_owner
from primia.federated.data_owner import ComputeSettings, DataOwner, DataSettings, PrivacySettings
from primia.federated.plan import DPPlan, PlanLimits, TrainPlan
from primia.federated.policy import AcceptedModel, NodePolicy
from primia.federated.tasks import EvaluateTask, EvaluationDetail, Refusal, TaskRefused, TrainTask
from primia.federated.weights import decode_like, encode
from primia.models.checkpoint import ModelSpec
from primia.scoring import predict as predict_module

SPEC = ModelSpec(
    architecture="cnn",
    num_outputs=4,
    image_size=32,
    task="multilabel",
    label_names=("pneumonia", "effusion", "cardiomegaly", "nodule"),
)
PLAN = TrainPlan(epochs=1, batch_size=8, dp=DPPlan(epsilon=1.0))
PLAINTEXT_ALLOWED = NodePolicy(aggregation=("secure", "plaintext"))


@pytest.fixture
def owner(synth_data: Path, tmp_path: Path) -> DataOwner:
    return DataOwner(
        data=DataSettings(path=synth_data, site="site1"),
        privacy=PrivacySettings(epsilon_budget=3.0, accountant="rdp"),
        limits=PlanLimits(max_epochs=5),
        compute=ComputeSettings(threads=1),
        state_dir=tmp_path / "state",
        default_image_size=32,
        policy=PLAINTEXT_ALLOWED,  # these tasks come without a secure-aggregation setup
    )


def _weights(spec: ModelSpec = SPEC) -> Blob:
    torch.manual_seed(0)
    return Blob.of("w", encode(spec.build().state_dict()))


def _node(data: DataSettings, state: Path, compute: ComputeSettings | None = None) -> DataOwner:
    """A node with the default privacy settings (RDP) and limits, plaintext allowed."""
    return DataOwner(
        data=data,
        privacy=PrivacySettings(accountant="rdp"),
        limits=PlanLimits(),
        compute=compute or ComputeSettings(threads=1),
        state_dir=state,
        default_image_size=32,
        policy=PLAINTEXT_ALLOWED,
    )


def _refusal(owner: DataOwner, task: TrainTask) -> TaskRefused:
    before = owner.ledger.releases()
    with pytest.raises(TaskRefused) as refused:
        owner.train(task)
    assert owner.ledger.releases() == before  # nothing was reserved, nothing trained
    return refused.value


def test_trains_and_returns_an_update_that_fits_the_model(owner: DataOwner) -> None:
    weights = _weights()
    outcome = owner.train(TrainTask("t1", 1, SPEC, weights, PLAN)).as_safetensors("u1")
    update = decode_like(outcome.update.data, SPEC.build().state_dict())
    assert any(bool(delta.abs().sum() > 0) for delta in update.values())
    assert outcome.num_examples == owner.info().dataset.train_examples
    assert outcome.release is not None and outcome.release.epsilon <= 1.0 + 1e-6
    assert outcome.privacy.epsilon_spent == pytest.approx(owner.ledger.spent_epsilon())
    evaluation = owner.evaluate(EvaluateTask("e1", 1, SPEC, weights, "validation"))
    assert evaluation.num_examples == owner.info().dataset.validation_examples
    assert set(evaluation.labels) == set(SPEC.label_names)


def test_training_leaves_the_received_weights_as_they_were(owner: DataOwner) -> None:
    """The node keeps the decoded weights for the next task (a round's evaluation, then
    the next round's training): training must change a copy of them, not them."""
    sent = _weights()
    weights = Blob.of(sent.blob_id, bytearray(sent.data))  # as received: the tensors view it
    before = owner.evaluate(EvaluateTask("e1", 1, SPEC, weights, "validation"))
    owner.train(TrainTask("t1", 1, SPEC, weights, PLAN))
    after = owner.evaluate(EvaluateTask("e2", 1, SPEC, weights, "validation"))
    assert after.loss == before.loss
    assert hashlib.sha256(weights.data).digest() == sent.sha256


def test_refuses_plans_outside_its_limits(owner: DataOwner) -> None:
    too_long = dataclasses.replace(PLAN, epochs=50)
    assert "epochs=50" in _refusal(owner, TrainTask("t", 1, SPEC, _weights(), too_long)).detail
    no_dp = dataclasses.replace(PLAN, dp=DPPlan(enabled=False))
    refusal = _refusal(owner, TrainTask("t", 1, SPEC, _weights(), no_dp))
    assert refusal.reason is Refusal.INVALID_PLAN and "requires DP" in refusal.detail
    nan_lr = dataclasses.replace(PLAN, lr=float("nan"))
    assert "lr=nan" in _refusal(owner, TrainTask("t", 1, SPEC, _weights(), nan_lr)).detail


def test_refuses_weights_that_do_not_fit(owner: DataOwner) -> None:
    other = dataclasses.replace(SPEC, architecture="resnet9", width=8)
    refusal = _refusal(owner, TrainTask("t", 1, SPEC, _weights(other), PLAN))
    assert refusal.reason is Refusal.INVALID_WEIGHTS
    garbage = Blob.of("g", b"\x80\x04not safetensors")
    refusal = _refusal(owner, TrainTask("t", 1, SPEC, garbage, PLAN))
    assert refusal.reason is Refusal.INVALID_WEIGHTS and "safetensors" in refusal.detail
    state = SPEC.build().state_dict()
    state[next(iter(state))] = torch.full_like(next(iter(state.values())), float("nan"))
    poisoned = Blob.of("p", encode(state))
    assert "NaN" in _refusal(owner, TrainTask("t", 1, SPEC, poisoned, PLAN)).detail


def test_refuses_a_model_for_other_labels(owner: DataOwner) -> None:
    other = dataclasses.replace(SPEC, num_outputs=1, task="binary", label_names=("covid",))
    refusal = _refusal(owner, TrainTask("t", 1, other, _weights(other), PLAN))
    assert refusal.reason is Refusal.INCOMPATIBLE_MODEL and "covid" in refusal.detail
    unknown = dataclasses.replace(SPEC, architecture="vit-huge")
    refusal = _refusal(owner, TrainTask("t", 1, unknown, _weights(), PLAN))
    assert refusal.reason is Refusal.INCOMPATIBLE_MODEL


def test_refuses_a_release_beyond_its_budget(owner: DataOwner) -> None:
    greedy = dataclasses.replace(PLAN, dp=DPPlan(epsilon=5.0))
    refusal = _refusal(owner, TrainTask("t", 1, SPEC, _weights(), greedy))
    assert refusal.reason is Refusal.BUDGET_EXCEEDED and "budget" in refusal.detail


def test_a_plaintext_task_is_refused_by_the_default_policy(
    synth_data: Path, tmp_path: Path
) -> None:
    owner = DataOwner(
        data=DataSettings(path=synth_data, site="site1"),
        privacy=PrivacySettings(accountant="rdp"),
        limits=PlanLimits(),
        compute=ComputeSettings(threads=1),
        state_dir=tmp_path / "state",
        default_image_size=32,
    )
    refusal = _refusal(owner, TrainTask("t", 1, SPEC, _weights(), PLAN))
    assert refusal.reason is Refusal.POLICY
    assert refusal.detail.startswith("policy.aggregation=['secure']: the coordinator asks for")


def test_the_first_model_trained_is_pinned_and_kept_across_restarts(
    synth_data: Path, tmp_path: Path
) -> None:
    def start() -> DataOwner:
        return _node(DataSettings(path=synth_data, site="site1"), tmp_path / "state")

    start().train(TrainTask("t1", 1, SPEC, _weights(), PLAN))
    owner = start()  # the node restarted: the pin is on disk
    wider = dataclasses.replace(SPEC, width=32)
    refusal = _refusal(owner, TrainTask("t2", 2, wider, _weights(wider), PLAN))
    assert refusal.reason is Refusal.POLICY
    assert refusal.detail.startswith("policy.models (pinned)=['cnn (width 16)']")
    assert "cnn (width 32)" in refusal.detail
    lenet = dataclasses.replace(SPEC, architecture="lenet")
    assert (
        "lenet (width 12)"
        in _refusal(owner, TrainTask("t3", 2, lenet, _weights(lenet), PLAN)).detail
    )
    # The same model at its default width stated explicitly is the same model.
    explicit = dataclasses.replace(SPEC, width=16)
    owner.train(TrainTask("t4", 2, explicit, _weights(explicit), PLAN))


def test_noise_below_the_floor_and_epsilon_above_the_run_cap_are_refused(
    synth_data: Path, tmp_path: Path
) -> None:
    owner = DataOwner(
        data=DataSettings(path=synth_data, site="site1"),
        privacy=PrivacySettings(epsilon_budget=100.0, accountant="rdp"),
        limits=PlanLimits(min_noise_multiplier=0.9, max_epsilon_per_run=1.2),
        compute=ComputeSettings(threads=1),
        state_dir=tmp_path / "state",
        default_image_size=32,
        policy=dataclasses.replace(PLAINTEXT_ALLOWED, models=(AcceptedModel("cnn"),)),
    )
    loud = dataclasses.replace(PLAN, dp=DPPlan(epsilon=8.0))
    refusal = _refusal(owner, TrainTask("t1", 1, SPEC, _weights(), loud))
    assert refusal.reason is Refusal.POLICY
    assert refusal.detail.startswith("limits.min_noise_multiplier=0.9: the plan's target ε")
    owner.train(TrainTask("t2", 1, SPEC, _weights(), PLAN), run="run-a")
    # A second ε = 1 release in run-a composes above 1.2; in another run it is fine.
    with pytest.raises(TaskRefused, match=r"limits.max_epsilon_per_run=1.2: .* in run run-a"):
        owner.train(TrainTask("t3", 2, SPEC, _weights(), PLAN), run="run-a")
    assert len(owner.ledger.releases()) == 1  # refused before anything was reserved
    owner.train(TrainTask("t4", 1, SPEC, _weights(), PLAN), run="run-b")
    assert [release.run for release in owner.ledger.releases()] == ["run-a", "run-b"]


def test_a_detailed_evaluation_passes_over_each_split_once(
    synth_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics and the detailed scores of the test split come from one forward pass
    (a hospital's test split may be thousands of images)."""
    owner = DataOwner(
        data=DataSettings(path=synth_data, test_fraction=0.5),  # every site: AUROC defined
        privacy=PrivacySettings(accountant="rdp"),
        limits=PlanLimits(),
        compute=ComputeSettings(threads=1),
        state_dir=tmp_path / "state",
        default_image_size=32,
    )
    forwarded: list[int] = []
    real = data_owner.logits_of

    def counting(model, images, **kwargs):  # type: ignore[no-untyped-def]
        forwarded.append(len(images))
        return real(model, images, **kwargs)

    monkeypatch.setattr(data_owner, "logits_of", counting)
    monkeypatch.setattr(predict_module, "logits_of", counting)
    task = EvaluateTask("e1", 1, SPEC, _weights(), "test", detail=EvaluationDetail(resamples=20))
    outcome = owner.evaluate(task)
    dataset = owner.info().dataset
    assert sorted(forwarded) == sorted([dataset.validation_examples, dataset.test_examples])
    assert outcome.detailed is not None
    overall = outcome.detailed.overall
    auroc = overall.values[overall.metrics.index("auroc")]
    compared = [
        (auroc[column], outcome.labels[name].auroc)
        for column, name in enumerate(overall.columns)
        if name in outcome.labels and outcome.labels[name].auroc is not None
    ]
    assert compared  # the same scores behind both: the same AUROC per label
    for detailed_auroc, pooled_auroc in compared:
        assert detailed_auroc == pytest.approx(pooled_auroc)


def test_a_ledger_cut_while_the_node_runs_refuses_the_next_round(owner: DataOwner) -> None:
    """Issue 22: the ledger is read and checked again before each task; without that the
    node would train from what it holds in memory, or from a cut file."""
    owner.train(TrainTask("t1", 1, SPEC, _weights(), PLAN))
    path = owner.ledger.path
    path.write_text(path.read_text().splitlines()[0] + "\n")  # reduced to its header
    with pytest.raises(TaskRefused) as refused:
        owner.train(TrainTask("t2", 2, SPEC, _weights(), PLAN))
    assert refused.value.reason == Refusal.LEDGER_INTEGRITY
    assert "holds 1 records but its anchor 3" in refused.value.detail
    assert "primia ledger repair" in refused.value.detail


def test_a_coordinator_record_above_the_ledger_refuses_until_repaired(owner: DataOwner) -> None:
    from primia.train.ledger_repair import repair

    assert owner.check_coordinator_record(0.0) is None
    problem = owner.check_coordinator_record(1.5)
    assert problem is not None and "coordinator recorded 1.5" in str(problem)
    with pytest.raises(TaskRefused) as refused:
        owner.train(TrainTask("t1", 1, SPEC, _weights(), PLAN))
    assert refused.value.reason == Refusal.LEDGER_INTEGRITY
    assert "--unit patient" in str(problem)  # the command it gives names the node's unit
    repair(owner.ledger.path, at_least=1.5, accept=True, unit="patient")
    assert owner.check_coordinator_record(1.5) is None
    assert owner.ledger.unit == "patient"
    assert owner.ledger.spent_epsilon() == pytest.approx(1.5)


def test_a_node_refuses_to_mix_privacy_units_in_its_ledger(
    synth_data: Path, tmp_path: Path
) -> None:
    """The node, not the coordinator, sets the unit; releases of another unit than its
    ledger's earlier ones are refused (they would not compose into one ε)."""

    def node(unit: str) -> DataOwner:
        return DataOwner(
            data=DataSettings(path=synth_data, site="site1"),
            privacy=PrivacySettings(epsilon_budget=30.0, accountant="rdp", unit=unit),  # type: ignore[arg-type]
            limits=PlanLimits(max_epochs=5),
            compute=ComputeSettings(threads=1),
            state_dir=tmp_path / "state",
            default_image_size=32,
            policy=PLAINTEXT_ALLOWED,
        )

    example_node = node("example")
    example_node.train(TrainTask("t1", 1, SPEC, _weights(), PLAN))
    assert example_node.ledger.unit == "example"
    refusal = _refusal(node("patient"), TrainTask("t2", 2, SPEC, _weights(), PLAN))
    assert refusal.reason is Refusal.POLICY and "privacy.unit" in refusal.detail


def test_a_node_that_cannot_train_its_unit_fails_at_start_up(
    synth_data: Path, tmp_path: Path
) -> None:
    """Opacus' modes clip each image alone: a patient-level node must not start with one
    (before, every DP round failed mid-admission with a configuration error)."""
    with pytest.raises(ConfigError, match="grad_sample_mode 'hooks'"):
        _node(
            DataSettings(path=synth_data, site="site1"),
            tmp_path / "state",
            ComputeSettings(threads=1, grad_sample_mode="hooks"),
        )


def test_a_patient_level_node_refuses_data_that_names_no_patient(tmp_path: Path) -> None:
    """A class folder of plain files: each image would count as its own patient, so the
    node refuses the round (nothing reserved) instead of recording patient-level ε."""
    from PIL import Image

    for klass in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "folder" / klass).mkdir(parents=True)
        for i in range(10):
            pixels = torch.randint(0, 255, (32, 32), dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "folder" / klass / f"img{i}.png")
    owner = _node(DataSettings(path=tmp_path / "folder"), tmp_path / "state")
    spec = ModelSpec(
        architecture="cnn",
        num_outputs=2,
        image_size=32,
        task="multiclass",
        label_names=("NORMAL", "PNEUMONIA"),
    )
    refusal = _refusal(owner, TrainTask("t1", 1, spec, _weights(spec), PLAN))
    assert refusal.reason is Refusal.POLICY and "name no patient" in refusal.detail


def test_the_plan_sets_augmentations_capped_by_the_node_and_free_in_epsilon(
    synth_data: Path, tmp_path: Path
) -> None:
    """K comes from the plan, cut to the node's compute.max_augmentations; the release's ε,
    σ and the ledger's charge are those of K = 1 (K changes the gradient, not the
    sensitivity). A node on an Opacus mode, which clips each image alone, trains K = 1."""
    data = DataSettings(path=synth_data, site="site1")
    capped = _node(data, tmp_path / "capped", ComputeSettings(threads=1, max_augmentations=2))
    plain = _node(data, tmp_path / "plain")
    many = dataclasses.replace(PLAN, augmentations=8)
    assert capped._train_config(SPEC, many).dp.augmentation_multiplicity == 2
    assert plain._train_config(SPEC, many).dp.augmentation_multiplicity == 4  # the default cap
    assert plain._train_config(SPEC, PLAN).dp.augmentation_multiplicity == 1
    assert ComputeSettings(grad_sample_mode="hooks").augmentations(8) == 1

    augmented = capped.train(TrainTask("t1", 1, SPEC, _weights(), many)).release
    single = plain.train(TrainTask("t1", 1, SPEC, _weights(), PLAN)).release
    assert augmented is not None and single is not None
    assert augmented.epsilon == pytest.approx(single.epsilon)
    assert augmented.noise_multiplier == pytest.approx(single.noise_multiplier)
    assert capped.ledger.spent_epsilon() == pytest.approx(plain.ledger.spent_epsilon())


def test_a_node_refuses_a_cap_below_one_augmentation() -> None:
    with pytest.raises(ConfigError, match=r"compute\.max_augmentations must be at least 1"):
        ComputeSettings(max_augmentations=0)
