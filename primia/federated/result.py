"""A finished federation's outcome, typed: what :meth:`Federation.run` returns.

The records are frozen; they become JSON only where they are written (``report.json``, by
:meth:`FederationResult.to_mapping`) and are read back from it by
:meth:`FederationResult.from_mapping` (the demo's coordinator runs in another process).
The JSON layout is the one ``report.json`` has always had, so older reports still read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class RoundResult:
    """One completed round: who contributed, who did not, and the global model's
    validation figures pooled over the nodes."""

    round: int
    contributors: tuple[str, ...]
    left_out: tuple[str, ...]
    """Nodes that dropped out or refused the round's task."""
    validation_loss: float | None
    validation_mean_auroc: float | None
    seconds: float

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> RoundResult:
        """The round's line in ``rounds.jsonl`` (:meth:`Federation._run_round`'s record)."""
        validation = record.get("validation") or {}
        return cls(
            round=int(record["round"]),
            contributors=tuple(record.get("contributors", ())),
            left_out=tuple(sorted(record.get("dropped", {})) + sorted(record.get("refused", {}))),
            validation_loss=validation.get("loss"),
            validation_mean_auroc=validation.get("mean_auroc"),
            seconds=float(record.get("seconds", 0.0)),
        )


@dataclass(frozen=True)
class NodeEvaluation:
    """The final model on one node's test patients, as that node reported it."""

    examples: int
    loss: float | None
    accuracy: float | None
    auroc: Mapping[str, float | None]


@dataclass(frozen=True)
class FinalEvaluation:
    """The final model on every node's held-out test patients, pooled (loss and accuracy
    weighted by examples, AUROC per label weighted by the examples of the nodes where it
    is defined)."""

    examples: int
    loss: float | None
    accuracy: float | None
    mean_auroc: float | None
    auroc: Mapping[str, float | None]
    """AUROC per label (None where a label has one class only)."""
    per_node: Mapping[str, NodeEvaluation]
    seconds: float

    @classmethod
    def from_pooled(cls, pooled: Mapping[str, Any]) -> FinalEvaluation:
        """From :func:`primia.federated.evaluation.pool`'s mapping (its ``seconds`` added)."""
        return cls(
            examples=int(pooled["examples"]),
            loss=pooled.get("loss"),
            accuracy=pooled.get("accuracy"),
            mean_auroc=pooled.get("mean_auroc"),
            auroc=MappingProxyType(dict(pooled.get("auroc", {}))),
            per_node=MappingProxyType(
                {
                    name: NodeEvaluation(
                        examples=int(node["examples"]),
                        loss=node.get("loss"),
                        accuracy=node.get("accuracy"),
                        auroc=MappingProxyType(dict(node.get("auroc", {}))),
                    )
                    for name, node in pooled.get("per_node", {}).items()
                }
            ),
            seconds=float(pooled.get("seconds", 0.0)),
        )

    def to_mapping(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "auroc": dict(self.auroc),
            "mean_auroc": self.mean_auroc,
            "per_node": {
                name: {
                    "examples": node.examples,
                    "loss": node.loss,
                    "accuracy": node.accuracy,
                    "auroc": dict(node.auroc),
                }
                for name, node in self.per_node.items()
            },
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class NodeResult:
    """What a node contributed and what it spent, as its own ledger reported it."""

    rounds_contributed: int
    epsilon_spent: float
    epsilon_budget: float


@dataclass(frozen=True)
class FederationResult:
    run_id: str
    rounds: tuple[RoundResult, ...]
    test: FinalEvaluation | None
    """None when the coordinator was configured without a final test."""
    nodes: Mapping[str, NodeResult]
    model: Path
    """The final global model (safetensors with its spec)."""

    def to_mapping(self) -> dict[str, Any]:
        """The JSON layout of ``report.json``."""
        return {
            "run_id": self.run_id,
            "rounds": [
                {
                    "round": entry.round,
                    "contributors": list(entry.contributors),
                    "dropped": list(entry.left_out),
                    "validation_loss": entry.validation_loss,
                    "validation_mean_auroc": entry.validation_mean_auroc,
                    "seconds": entry.seconds,
                }
                for entry in self.rounds
            ],
            "test": None if self.test is None else self.test.to_mapping(),
            "nodes": {
                name: {
                    "rounds_contributed": node.rounds_contributed,
                    "epsilon_spent": node.epsilon_spent,
                    "epsilon_budget": node.epsilon_budget,
                }
                for name, node in self.nodes.items()
            },
            "model": str(self.model),
        }

    @classmethod
    def from_mapping(cls, report: Mapping[str, Any]) -> FederationResult:
        """The result ``report.json`` holds (:meth:`to_mapping`'s layout)."""
        test = report.get("test")
        return cls(
            run_id=str(report["run_id"]),
            rounds=tuple(
                RoundResult(
                    round=int(entry["round"]),
                    contributors=tuple(entry["contributors"]),
                    left_out=tuple(entry["dropped"]),
                    validation_loss=entry["validation_loss"],
                    validation_mean_auroc=entry["validation_mean_auroc"],
                    seconds=float(entry["seconds"]),
                )
                for entry in report["rounds"]
            ),
            test=None if test is None else FinalEvaluation.from_pooled(test),
            nodes=MappingProxyType(
                {
                    name: NodeResult(
                        rounds_contributed=int(node["rounds_contributed"]),
                        epsilon_spent=float(node["epsilon_spent"]),
                        epsilon_budget=float(node["epsilon_budget"]),
                    )
                    for name, node in report["nodes"].items()
                }
            ),
            model=Path(report["model"]),
        )
