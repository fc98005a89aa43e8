"""The run directory records each round after its checkpoint and resumes after the last."""

import json
import math
import tomllib

import pytest
import torch

from primia.errors import ConfigError
from primia.federated.plan import TrainPlan
from primia.federated.rundir import RunDirectory
from primia.federated.server_optimizer import ServerOptimizer, ServerOptimizerConfig
from primia.models.checkpoint import ModelSpec, load_model

SPEC = ModelSpec("cnn", num_outputs=4, image_size=32, label_names=("a", "b", "c", "d"))


def model_with_seed(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SPEC.build()


def same_weights(left: torch.nn.Module, right: torch.nn.Module) -> bool:
    right_state = right.state_dict()
    return all(torch.equal(t, right_state[name]) for name, t in left.state_dict().items())


def test_new_run_writes_run_json_and_config(tmp_path):
    run = RunDirectory(tmp_path / "run")
    state = run.open(TrainPlan(epochs=3, lr=0.01), SPEC)
    assert state.rounds == []
    assert state.model is None
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["run_id"] == state.run_id and len(state.run_id) == 12
    assert ModelSpec.from_json(json.dumps(info["spec"])) == SPEC
    assert "created" in info
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert config["epochs"] == 3
    assert config["lr"] == 0.01
    assert config["dp"]["enabled"] is True


def test_reopening_keeps_run_id_and_rewrites_config(tmp_path):
    first = RunDirectory(tmp_path).open(TrainPlan(epochs=1), SPEC)
    second = RunDirectory(tmp_path).open(TrainPlan(epochs=5), SPEC)
    assert second.run_id == first.run_id
    assert tomllib.loads((tmp_path / "config.toml").read_text())["epochs"] == 5


def test_record_round_writes_the_checkpoint_and_a_line(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    model = model_with_seed(1)
    run.record_round({"round": 1, "loss": 0.7, "nodes": ["a", "b"]}, model, SPEC)
    assert run.checkpoint_path(1) == tmp_path / "checkpoints" / "round-0001.safetensors"
    restored, spec = load_model(run.checkpoint_path(1))
    assert spec == SPEC
    assert same_weights(restored, model)
    lines = run.rounds_path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"round": 1, "loss": 0.7, "nodes": ["a", "b"]}]


def test_no_line_is_written_when_the_checkpoint_cannot_be(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    run.checkpoints.write_text("a file where the checkpoint folder should be")
    with pytest.raises(OSError):
        run.record_round({"round": 1}, model_with_seed(1), SPEC)
    assert not run.rounds_path.exists()


def test_non_finite_round_values_are_written_as_null(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    run.record_round({"round": 1, "loss": math.nan, "auroc": [0.5, math.inf]}, SPEC.build(), SPEC)
    assert json.loads(run.rounds_path.read_text()) == {
        "round": 1,
        "loss": None,
        "auroc": [0.5, None],
    }


def test_reopening_resumes_after_the_last_round(tmp_path):
    run = RunDirectory(tmp_path)
    state = run.open(TrainPlan(), SPEC)
    last = None
    for number in (1, 2, 3):
        last = model_with_seed(number)
        run.record_round({"round": number, "loss": 1.0 / number}, last, SPEC)
    resumed = RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    assert resumed.run_id == state.run_id
    assert [r["round"] for r in resumed.rounds] == [1, 2, 3]
    assert resumed.rounds[1]["loss"] == 0.5
    assert resumed.model is not None
    assert same_weights(resumed.model, last)
    assert not same_weights(resumed.model, model_with_seed(2))


def test_reopening_with_another_model_spec_is_refused(tmp_path):
    RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    other = ModelSpec("cnn", num_outputs=2, image_size=32, label_names=("a", "b"))
    with pytest.raises(ConfigError, match="holds a run of another model"):
        RunDirectory(tmp_path).open(TrainPlan(), other)


def test_a_checkpoint_edited_to_hold_nan_is_refused_at_resume(tmp_path):
    """Before, the coordinator resumed and sent NaN weights, which every node refused,
    round after round."""
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    model = model_with_seed(1)
    name, tensor = next((n, t) for n, t in model.state_dict().items() if t.is_floating_point())
    tensor.view(-1)[0] = float("nan")
    run.record_round({"round": 1}, model, SPEC)
    with pytest.raises(ConfigError, match=f"holds NaN or infinite values in {name}"):
        RunDirectory(tmp_path).open(TrainPlan(), SPEC)


def test_a_line_cut_short_by_a_crash_is_ignored(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    first = model_with_seed(1)
    run.record_round({"round": 1}, first, SPEC)
    run.record_round({"round": 2}, model_with_seed(2), SPEC)
    text = run.rounds_path.read_text()
    second_line = text.splitlines()[1]
    run.rounds_path.write_text(
        text[: text.index(second_line)] + second_line[: len(second_line) // 2]
    )
    resumed = RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    assert [r["round"] for r in resumed.rounds] == [1]
    assert resumed.model is not None and same_weights(resumed.model, first)


def test_a_line_without_its_checkpoint_ends_the_resume(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    for number in (1, 2, 3):
        run.record_round({"round": number}, model_with_seed(number), SPEC)
    run.checkpoint_path(2).unlink()
    resumed = RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    # Round 3's checkpoint exists, but nothing after a gap is trusted.
    assert [r["round"] for r in resumed.rounds] == [1]
    assert resumed.model is not None and same_weights(resumed.model, model_with_seed(1))


def test_rounds_recorded_after_a_crash_survive_the_next_resume(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    run.record_round({"round": 1}, model_with_seed(1), SPEC)
    with open(run.rounds_path, "a") as handle:
        handle.write('{"round": 2, "lo')  # the crash
    RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    run.record_round({"round": 2}, model_with_seed(2), SPEC)  # round 2 redone
    resumed = RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    assert [r["round"] for r in resumed.rounds] == [1, 2]


def test_finish_writes_the_model_and_a_json_safe_report(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    model = model_with_seed(7)
    report = {
        "rounds": 2,
        "loss": math.nan,
        "test": {"auroc": {"a": 0.75, "b": math.inf}, "history": (1.0, -math.inf)},
        "name": "run",
    }
    run.finish(report, model, SPEC)
    restored, spec = load_model(tmp_path / "model.safetensors")
    assert spec == SPEC
    assert same_weights(restored, model)
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "rounds": 2,
        "loss": None,
        "test": {"auroc": {"a": 0.75, "b": None}, "history": [1.0, None]},
        "name": "run",
    }


def test_server_optimizer_state_is_kept_per_round_and_restored(tmp_path):
    config = ServerOptimizerConfig(name="fedadam", lr=0.05)
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    model, optimizer = model_with_seed(1), ServerOptimizer(config)
    sums = {name: torch.ones_like(t, dtype=torch.float64) for name, t in model.state_dict().items()}
    for number in (1, 2):
        optimizer.step(model, sums, 4.0)
        run.record_round({"round": number}, model, SPEC, optimizer)
    assert run.optimizer_path(1).exists() and run.optimizer_path(2).exists()
    state = RunDirectory(tmp_path).open(TrainPlan(), SPEC)
    resumed = ServerOptimizer(config)
    RunDirectory(tmp_path).restore_optimizer(resumed, int(state.rounds[-1]["round"]), SPEC)
    assert resumed.steps == 2
    for name, moment in optimizer.second.items():
        assert torch.equal(resumed.second[name], moment), name


def test_a_run_without_optimizer_state_resumes_only_with_fedavg(tmp_path):
    run = RunDirectory(tmp_path)
    run.open(TrainPlan(), SPEC)
    run.record_round({"round": 1}, model_with_seed(1), SPEC)
    run.restore_optimizer(ServerOptimizer(ServerOptimizerConfig()), 1, SPEC)
    with pytest.raises(ConfigError, match="not trained with server_optimizer 'fedyogi'"):
        run.restore_optimizer(ServerOptimizer(ServerOptimizerConfig(name="fedyogi")), 1, SPEC)
