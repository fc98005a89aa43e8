"""The coordinator's run directory: what a federation leaves behind, and how it resumes.

::

    run.json                 run id, model spec, created (written once)
    config.toml              the configuration of the latest start
    rounds.jsonl             one JSON line per completed round
    checkpoints/round-NNNN.safetensors   global weights after round NNNN (with the spec)
    checkpoints/optimizer-NNNN.safetensors   the server optimiser's state after round NNNN
    model.safetensors        the final global model
    report.json              the summary written when the federation finishes
    report.html              its page: AUROC, loss and ε per round as charts
                             (:func:`primia.federated.run_view.write_run_report`)
    node-privacy.json        the highest ε each node reported (PrivacyRecord)
    tb/                      TensorBoard events

A round's optimiser state and checkpoint are written (atomically, in that order) before
its line in ``rounds.jsonl``, so the last line always has both; a coordinator restarted
on the directory resumes after that round, with the optimiser's state. A checkpoint
without a line (a crash in between) is simply redone.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from primia.config import write_toml
from primia.errors import ConfigError
from primia.federated.server_optimizer import ServerOptimizer
from primia.files import atomic_write_bytes
from primia.models.checkpoint import ModelSpec, load_model, save_model


@dataclass
class ResumeState:
    run_id: str
    rounds: list[dict[str, Any]]
    """The completed rounds' records, in order."""
    model: nn.Module | None
    """The global model after the last completed round; None for a new run."""


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.rounds_path = path / "rounds.jsonl"

    def open(self, config: Any, spec: ModelSpec) -> ResumeState:
        """Start a new run here, or resume the one that is here (same model spec)."""
        self.path.mkdir(parents=True, exist_ok=True)
        run_file = self.path / "run.json"
        if run_file.exists():
            info = json.loads(run_file.read_text())
            stored = ModelSpec.from_json(json.dumps(info["spec"]))
            if stored != spec:
                raise ConfigError(
                    f"{self.path} holds a run of another model ({stored}); choose a new "
                    "run_dir or restore the model settings"
                )
            run_id = str(info["run_id"])
        else:
            run_id = uuid.uuid4().hex[:12]
            info = {
                "run_id": run_id,
                "spec": json.loads(spec.to_json()),
                "created": datetime.now(UTC).isoformat(),
            }
            atomic_write_bytes(run_file, (json.dumps(info, indent=2) + "\n").encode())
        write_toml(config, self.path / "config.toml")
        rounds = self._completed_rounds()
        self._drop_unfinished_lines(rounds)
        model = None
        if rounds:
            path = self.checkpoint_path(int(rounds[-1]["round"]))
            model, _ = load_model(path)
            # Every node refuses non-finite weights: a damaged or edited checkpoint would
            # fail each round at every node, so it stops the coordinator here instead.
            if bad := [n for n, t in model.state_dict().items() if not t.isfinite().all()]:
                raise ConfigError(
                    f"{path} holds NaN or infinite values in {', '.join(bad[:3])}; restore "
                    "it from a backup or choose a new run_dir"
                )
        return ResumeState(run_id=run_id, rounds=rounds, model=model)

    def checkpoint_path(self, round_number: int) -> Path:
        return self.checkpoints / f"round-{round_number:04d}.safetensors"

    def optimizer_path(self, round_number: int) -> Path:
        return self.checkpoints / f"optimizer-{round_number:04d}.safetensors"

    def restore_optimizer(
        self, optimizer: ServerOptimizer, round_number: int, spec: ModelSpec
    ) -> None:
        """Load the optimiser's state after ``round_number``; a run whose rounds left none
        (written before server optimisers existed) resumes only with stateless ``fedavg``."""
        path = self.optimizer_path(round_number)
        if path.exists():
            optimizer.load_state(path, spec.shapes())
        elif optimizer.stateful:
            raise ConfigError(
                f"{path} is missing: the run was not trained with server_optimizer "
                f"{optimizer.config.name!r}; restore its settings or choose a new run_dir"
            )

    def record_round(
        self,
        record: dict[str, Any],
        model: nn.Module,
        spec: ModelSpec,
        optimizer: ServerOptimizer | None = None,
    ) -> None:
        """Save the optimiser's state, checkpoint the global model, then append the round's
        line (see module docstring)."""
        if optimizer is not None:
            optimizer.save_state(self.optimizer_path(int(record["round"])))
        save_model(self.checkpoint_path(int(record["round"])), model, spec)
        line = json.dumps(_json_safe(record)) + "\n"
        with open(self.rounds_path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, report: dict[str, Any], model: nn.Module, spec: ModelSpec) -> None:
        save_model(self.path / "model.safetensors", model, spec)
        payload = json.dumps(_json_safe(report), indent=2) + "\n"
        atomic_write_bytes(self.path / "report.json", payload.encode())

    def _drop_unfinished_lines(self, rounds: list[dict[str, Any]]) -> None:
        """Keep only the resumable rounds' lines, so a redone round's line follows them
        (not a line cut short by a crash)."""
        if not self.rounds_path.exists():
            return
        if len(self.rounds_path.read_text().splitlines()) != len(rounds):
            kept = "".join(json.dumps(_json_safe(record)) + "\n" for record in rounds)
            atomic_write_bytes(self.rounds_path, kept.encode())

    def _completed_rounds(self) -> list[dict[str, Any]]:
        if not self.rounds_path.exists():
            return []
        rounds = []
        for line in self.rounds_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by a crash; everything before it stands
            if not self.checkpoint_path(int(record["round"])).exists():
                break
            rounds.append(record)
        return rounds


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value
