"""Local training, private and not, with real Opacus on tiny synthetic radiographs."""

import json
import math
import shutil

import pytest
import torch
from opacus.accountants import create_accountant
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from primia.errors import ConfigError, ModelError, PrivacyBudgetExceeded, PrivacyUnitMismatch
from primia.models.checkpoint import load_model
from primia.train import DPConfig, PrivacyLedger, TrainConfig, train_local


def small_config(data, out, **overrides):
    settings = {
        "model": "cnn",
        "width": 4,
        "image_size": 32,
        "epochs": 2,
        "batch_size": 8,
        "max_physical_batch_size": 8,
        "progress": False,
        "threads": 2,
        "dp": DPConfig(),
    }
    return TrainConfig(data=data, out=out, **(settings | overrides))


def test_dp_run_reports_the_epsilon_of_opacus_accountant(data, tmp_path):
    dp = DPConfig(enabled=True, epsilon=2.0, delta=1e-5, epsilon_budget=5.0)
    result = train_local(small_config(data, tmp_path / "run", dp=dp))
    privacy = result.privacy
    assert privacy is not None
    # Recompute ε independently with Opacus for the plan that ran.
    accountant = create_accountant(mechanism="prv")
    accountant.history = [(privacy.noise_multiplier, privacy.sample_rate, privacy.steps)]
    assert privacy.epsilon == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-6)
    assert 1.5 < privacy.epsilon <= 2.0
    # Poisson sampling: the steps are the planned ones, one per expected batch.
    assert privacy.steps == 2 * round(1 / privacy.sample_rate)
    ledger = PrivacyLedger.open(privacy.ledger)
    (release,) = ledger.releases()
    assert release.completed and release.mechanism.steps == privacy.steps
    assert ledger.spent_epsilon() == pytest.approx(privacy.dataset_spent_epsilon)
    # the default unit is the patient: q is the rate at which patients are sampled
    assert privacy.unit == "patient" and ledger.unit == "patient"


def test_patient_level_is_refused_where_files_name_no_patient(tmp_path):
    """A class folder of plain files gives each image its own patient ID; recording its
    releases as patient-level would claim a guarantee that holds only per image."""
    from PIL import Image

    for klass, count in (("NORMAL", 12), ("PNEUMONIA", 12)):
        (tmp_path / "folder" / klass).mkdir(parents=True)
        for i in range(count):
            pixels = torch.randint(0, 255, (32, 32), dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "folder" / klass / f"img{i}.png")
    dp = DPConfig(enabled=True, epsilon=2.0, epsilon_budget=5.0)
    with pytest.raises(ConfigError, match="name no patient"):
        train_local(small_config(tmp_path / "folder", tmp_path / "run", dp=dp, epochs=1))
    assert not (tmp_path / "folder" / "privacy-ledger.jsonl").exists()  # nothing recorded
    example = DPConfig(enabled=True, epsilon=2.0, epsilon_budget=5.0, privacy_unit="example")
    result = train_local(small_config(tmp_path / "folder", tmp_path / "ex", dp=example, epochs=1))
    assert result.privacy is not None and result.privacy.unit == "example"


def test_patient_level_run_with_augmentations_and_a_refused_unit_change(data, tmp_path):
    dp = DPConfig(enabled=True, epsilon=2.0, epsilon_budget=50.0, augmentation_multiplicity=2)
    result = train_local(small_config(data, tmp_path / "patient", dp=dp, epochs=1))
    assert result.privacy is not None and result.privacy.unit == "patient"
    assert math.isfinite(result.epochs[0]["train_loss"])
    example = DPConfig(enabled=True, epsilon=2.0, epsilon_budget=50.0, privacy_unit="example")
    with pytest.raises(PrivacyUnitMismatch, match="records patient-level releases"):
        train_local(small_config(data, tmp_path / "example", dp=example, epochs=1))
    assert len(PrivacyLedger.open(result.privacy.ledger).releases()) == 1


def test_run_directory_holds_config_metrics_events_and_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    result = train_local(small_config(data, out, dp=DPConfig(enabled=True, epsilon=4.0)))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[-1]["epsilon"] <= 4.0
    assert set(lines[0]) >= {"val_auroc_mean", "val_loss", "val_accuracy", "train_loss"}
    assert any(f"val_auroc/{name}" in lines[0] for name in ("pneumonia", "effusion"))
    assert (out / "config.toml").read_text().count("epsilon = 4.0") == 1
    assert any((out / "tb").iterdir())
    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert "validation/mean_auroc" in tags and "val_auroc_mean" not in tags  # as federations
    _, spec = load_model(result.model_path)
    assert spec.architecture == "cnn" and spec.num_outputs == 4
    assert json.loads((out / "result.json").read_text())["privacy"]["epsilon"] <= 4.0


def test_budget_is_enforced_across_runs_before_any_step(data, tmp_path):
    dp = DPConfig(enabled=True, epsilon=3.0, epsilon_budget=3.5)
    train_local(small_config(data, tmp_path / "first", dp=dp))
    with pytest.raises(PrivacyBudgetExceeded, match=r"budget is 3\.5"):
        train_local(small_config(data, tmp_path / "second", dp=dp))
    assert not (tmp_path / "second").exists()  # a refused run leaves no half-made folder
    with pytest.raises(PrivacyBudgetExceeded):
        train_local(small_config(data, tmp_path / "first", dp=dp))
    failed = json.loads((tmp_path / "first" / "failed.json").read_text())
    assert "PrivacyBudgetExceeded" in failed["error"]  # a folder with a model is marked


def test_non_private_run_spends_no_ledger_and_reports_infinite_epsilon(data, tmp_path):
    result = train_local(small_config(data, tmp_path / "plain"))
    assert result.privacy is None
    assert not (data / "privacy-ledger.jsonl").exists()
    lines = (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["epsilon"] == "inf"
    assert result.test is not None and not math.isnan(result.test.loss)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_other_grad_sample_modes_train(data, tmp_path, mode):
    dp = DPConfig(
        enabled=True,
        epsilon=3.0,
        grad_sample_mode=mode,
        epsilon_budget=1e6,
        privacy_unit="example",  # Opacus clips each image alone
    )
    result = train_local(small_config(data, tmp_path / mode, epochs=1, dp=dp))
    assert result.privacy is not None and result.privacy.epsilon <= 3.0


def test_seed_fixes_plain_training_but_never_dp_noise(data, tmp_path):
    def weights(out, dp):
        result = train_local(small_config(data, out, epochs=1, dp=dp))
        model, _ = load_model(result.model_path)
        return torch.cat([p.flatten() for p in model.parameters()])

    plain = DPConfig()
    assert torch.equal(weights(tmp_path / "a", plain), weights(tmp_path / "b", plain))
    private = DPConfig(enabled=True, epsilon=8.0, epsilon_budget=1e6)
    assert not torch.equal(weights(tmp_path / "c", private), weights(tmp_path / "d", private))


def test_ema_is_post_processing_the_ledger_charges_the_same(tmp_path, synth_data):
    """The EMA of the iterates is released instead of the last iterate at no ε: the same
    plan reserves and completes the same ε in two fresh ledgers, with and without it."""
    spent = {}
    for decay in (0.0, 0.9):
        copy = tmp_path / f"data-{decay}"
        shutil.copytree(synth_data, copy)
        dp = DPConfig(enabled=True, epsilon=2.0, epsilon_budget=5.0)
        out = tmp_path / f"run-{decay}"
        result = train_local(small_config(copy, out, epochs=1, ema_decay=decay, dp=dp))
        (release,) = PrivacyLedger.open(copy / "privacy-ledger.jsonl").releases()
        spent[decay] = (release.epsilon, release.mechanism, result.privacy.epsilon)
    assert spent[0.0] == spent[0.9]


def test_init_starts_from_a_checkpoint_and_refuses_another_spec(data, tmp_path):
    first = train_local(small_config(data, tmp_path / "public", epochs=1, ws=True))
    start, _ = load_model(first.model_path)
    # lr 1e-12: one epoch moves no weight measurably, so the run must have started there
    second = train_local(
        small_config(data, tmp_path / "init", epochs=1, ws=True, lr=1e-12, init=tmp_path / "public")
    )
    trained, spec = load_model(second.model_path)
    assert spec.ws
    for name, tensor in start.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], tensor, rtol=0, atol=1e-6)
    with pytest.raises(ModelError, match=r"ws differ.*ws=True.*ws=False"):
        train_local(small_config(data, tmp_path / "plain", init=first.model_path))
    with pytest.raises(ModelError, match=r"width differ.*width=4.*width=8"):
        train_local(small_config(data, tmp_path / "wide", ws=True, width=8, init=first.model_path))
