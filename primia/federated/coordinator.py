"""Federated rounds: the coordinator's side of a federation, free of transport.

Round t (see ``docs/federation.md``):

1. wait until at least ``min_nodes`` nodes are connected (up to ``node_wait_s``; before
   the first round, up to ``startup_wait_s`` for the whole roster, and before later
   rounds up to ``rejoin_wait_s`` more for it);
2. draw the round's nodes among those connected (every one, unless ``[sampling]`` says
   otherwise: :mod:`primia.federated.sampling`) and send each the global weights w_t and
   the plan; each trains locally with DP-SGD and answers with its update, a refusal
   (e.g. its privacy budget) or not at all (a dropout: disconnected, or no answer within
   ``round_timeout_s``);
3. the aggregator returns Σ n_i Δ_i and Σ n_i over the nodes that finished — by secure
   aggregation (:mod:`primia.federated.secure`, the default), which reveals these sums
   and nothing else; with fewer than ``min_nodes`` of them the round is tried again (at
   most ``max_attempts`` times), and the nodes that trained for nothing are told so (their
   ledgers mark the release abandoned; its ε stays spent);
4. w_{t+1} = the server optimiser applied to Δ_t = Σ n_i Δ_i / Σ n_i (FedAvg:
   w_t + Δ_t; :mod:`primia.federated.server_optimizer`), evaluated on every connected node's
   validation split; metrics pooled (:mod:`primia.federated.evaluation`);
5. checkpoint (weights and optimiser state), then the round's line in ``rounds.jsonl``
   (:mod:`primia.federated.rundir`).

After the last round the model is evaluated on every node's test split, the report is
written and the nodes are told the federation has finished — or, when it fails, that it
failed and why.

A refusal that will recur (:data:`~primia.federated.tasks.RECURRING`: the model, plan,
policy, ledger or budget) is never retried: each node checks the run's plan when it joins
and refuses to join if it would refuse every round, and a node that refuses a round for
such a reason takes no further part in this run. Once fewer than ``min_nodes`` nodes of
the roster can take part, the run stops at once, naming the nodes and their reasons,
rather than charging the others' budgets for rounds that cannot complete.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from primia.blobs import Blob
from primia.errors import PrimiaError
from primia.federated.aggregation import Aggregator, PlaintextAggregator, RoundContributions
from primia.federated.coordinator_config import CoordinatorConfig
from primia.federated.evaluation import pool
from primia.federated.registry import NodeLink, NodeRegistry, NodeStatus
from primia.federated.result import FederationResult, FinalEvaluation, NodeResult, RoundResult
from primia.federated.rundir import RunDirectory
from primia.federated.sampling import sample
from primia.federated.secure import SecureAggregator
from primia.federated.server_optimizer import ServerOptimizer
from primia.federated.tasks import (
    EvaluateTask,
    EvaluationOutcome,
    NodeDropped,
    Split,
    TaskRefused,
    TrainTask,
)
from primia.federated.weights import encode
from primia.models.checkpoint import load_initial_weights
from primia.train.tracking import MLflowRun, open_run

log = logging.getLogger(__name__)


class FederationFailed(PrimiaError):
    """A round could not gather enough updates in ``max_attempts`` tries."""


@dataclass(frozen=True)
class FederationStatus:
    run_id: str
    state: str
    round: int
    rounds: int
    min_nodes: int
    nodes: list[NodeStatus]
    history: list[RoundResult]
    unit: str = "round"
    """What ``round`` of ``rounds`` counts: the federation's rounds, or another job's
    steps (the transfer matrix trains and evaluates models)."""


class Federation:
    """Runs the configured rounds over the nodes in ``registry``; see the module docstring."""

    def __init__(
        self,
        config: CoordinatorConfig,
        registry: NodeRegistry,
        *,
        aggregator: Aggregator | None = None,
        stop: threading.Event | None = None,
        finish_nodes: bool = True,
    ) -> None:
        """``finish_nodes``: tell the nodes when the federation is over (nodes started
        with ``--exit-when-done`` exit); False when more work follows (the transfer
        matrix trains several models in a row)."""
        self.config = config
        self._finish_nodes = finish_nodes
        self.registry = registry
        self.spec = config.model.spec()
        self.run_dir = RunDirectory(config.run_dir)
        self.aggregator = aggregator or make_aggregator(config)
        self._resume = self.run_dir.open(config, self.spec)
        # Read (and its spec checked) before any node is served: a mismatch stops here.
        self._init_state = (
            load_initial_weights(config.init, self.spec)
            if config.init is not None and self._resume.model is None
            else None
        )
        self.server_optimizer = ServerOptimizer(config.server_optimizer)
        if self._resume.rounds:
            last = int(self._resume.rounds[-1]["round"])
            self.run_dir.restore_optimizer(self.server_optimizer, last, self.spec)
        self.run_id = self._resume.run_id
        self._stop = stop or threading.Event()
        self._state = "starting"
        self._round = 0
        self._history: list[RoundResult] = []
        self._lock = threading.Lock()
        self._last_blob: Blob | None = None
        self._excluded: dict[str, tuple[str, NodeLink]] = {}
        """Nodes that refused a round of this run for a reason that will recur: the reason,
        and the link it came on (a node that joins again, e.g. reconfigured, is asked
        again)."""
        self._mlflow: MLflowRun | None = None

    def status(self) -> FederationStatus:
        with self._lock:
            return FederationStatus(
                run_id=self.run_id,
                state=self._state,
                round=self._round,
                rounds=self.config.rounds,
                min_nodes=self.config.min_nodes,
                nodes=self.registry.statuses(),
                history=list(self._history),
            )

    def run(self) -> FederationResult:
        """Run (or resume) the federation; return its result (written to ``report.json``)."""
        resume = self._resume
        model = resume.model if resume.model is not None else self._initial_model()
        records = list(resume.rounds)
        self._history = [RoundResult.of(record) for record in records]
        self._restore_counts(records)
        first = int(records[-1]["round"]) + 1 if records else 1
        if records:
            log.info("resuming run %s after round %d", self.run_id, first - 1)
        writer = SummaryWriter(log_dir=str(self.run_dir.path / "tb"))
        self._mlflow = open_run(
            self.config.tracking,
            run_name=self.run_id,
            params={
                "aggregation": self.aggregator.name,
                "server_optimizer": self.config.server_optimizer.name,
                "proximal_mu": self.config.plan.proximal_mu,
                "architecture": self.spec.architecture,
            },
        )
        self._set_state(first, "waiting for the roster")
        outcome = "FAILED"
        try:
            self.registry.wait_for(
                len(self.registry.roster), timeout=self.config.startup_wait_s, stop=self._stop
            )
            for round_number in range(first, self.config.rounds + 1):
                if self._stop.is_set():
                    raise FederationFailed(f"stopped before round {round_number}")
                record = self._run_round(round_number, model)
                self.run_dir.record_round(record, model, self.spec, self.server_optimizer)
                self._log_round(writer, record)
            test = None
            if self.config.final_test:
                self._set_state(self.config.rounds, "final evaluation on test splits")
                test = FinalEvaluation.from_pooled(
                    self._evaluate(
                        self.config.rounds,
                        model,
                        "test",
                        self._blob(model, f"r{self.config.rounds}"),
                    )
                )
            result = self._result(test)
            self.run_dir.finish(result.to_mapping(), model, self.spec)
            self._set_state(self.config.rounds, "finished")
            if self._finish_nodes:
                for link in self.registry.connected():
                    link.shutdown("the federation has finished", finished=True)
            outcome = "FINISHED"
            return result
        except BaseException as error:
            self._set_state(self._round, "failed")
            if self._finish_nodes:
                reason = f"the federation failed: {error}"
                for link in self.registry.every_link():
                    link.shutdown(reason, finished=True, failed=True)
            raise
        finally:
            writer.close()
            if self._mlflow is not None:
                self._mlflow.close(outcome)

    def _run_round(self, round_number: int, model: nn.Module) -> dict[str, Any]:
        started = time.perf_counter()
        # The aggregators read only the names, shapes and dtypes of the weights trained
        # from, and the model changes only after they are done (the server optimiser's
        # step): no copy needed.
        reference = {name: t.detach() for name, t in model.state_dict().items()}
        weights = self._blob(model, f"r{round_number - 1}")
        config = self.config
        attempt_ran = False
        for attempt in range(1, config.max_attempts + 1):
            self._set_state(round_number, "waiting for nodes")
            self._check_reach(round_number)
            excluded = set(self._exclusions())
            links = self.registry.wait_for(
                config.min_nodes, timeout=config.node_wait_s, stop=self._stop, excluding=excluded
            )
            if round_number > 1 and config.rejoin_wait_s > 0 and len(links) >= config.min_nodes:
                links = self.registry.wait_for(
                    len(self.registry.roster),
                    timeout=config.rejoin_wait_s,
                    stop=self._stop,
                    excluding=excluded,
                )
            self._check_reach(round_number)
            if len(links) < config.min_nodes:
                log.warning(
                    "round %d, attempt %d: %d of the %d nodes needed are connected after %.0f s",
                    round_number,
                    attempt,
                    len(links),
                    config.min_nodes,
                    config.node_wait_s,
                )
                continue
            links = sample(
                links,
                config.sampling,
                min_nodes=config.min_nodes,
                seed=config.seed,
                round_number=round_number,
                attempt=attempt,
            )
            self._set_state(round_number, f"training on {len(links)} nodes")
            for link in links:
                self.registry.set_activity(link.name, "training")

            def make_task(link: NodeLink, attempt: int = attempt) -> TrainTask:
                return TrainTask(
                    task_id=f"{self.run_id}-r{round_number}a{attempt}-{link.name}",
                    round=round_number,
                    spec=self.spec,
                    weights=weights,
                    plan=config.plan,
                )

            contributions = self.aggregator.collect(
                links, make_task, reference=reference, timeout=config.round_timeout_s
            )
            attempt_ran = True
            for name, outcome in contributions.outcomes.items():
                # every attempt's releases count, also one without enough updates
                self.registry.record_privacy(name, outcome.privacy)
            for name, reason in contributions.refused.items():
                log.warning("round %d: %s refused: %s", round_number, name, reason)
                self.registry.set_activity(name, "refused: " + reason.split(":")[0])
                self.registry.record_refusal(name, f"round {round_number}: {reason}")
            for name, reason in contributions.recurring.items():
                log.warning(
                    "%s takes no further part in run %s: its refusal will recur",
                    name,
                    self.run_id,
                )
                link = next(link for link in links if link.name == name)
                self._excluded[name] = (f"refused round {round_number}: {reason}", link)
            for name, reason in contributions.dropped.items():
                log.warning("round %d: %s dropped out: %s", round_number, name, reason)
            if contributions.failure is not None:
                log.warning("round %d: no aggregate: %s", round_number, contributions.failure)
            if len(contributions.contributors) >= config.min_nodes:
                break
            self._abandon(links, make_task, round_number, attempt, contributions)
            self._check_reach(round_number)
            log.warning(
                "round %d, attempt %d: %d updates, %d needed; trying again",
                round_number,
                attempt,
                len(contributions.contributors),
                config.min_nodes,
            )
        else:
            raise FederationFailed(
                f"round {round_number} gathered fewer than min_nodes={config.min_nodes} "
                f"updates in {config.max_attempts} attempts; in the last that ran, "
                f"{_missing(contributions)}"
                if attempt_ran
                else f"round {round_number}: fewer than min_nodes={config.min_nodes} nodes "
                f"were connected in {config.max_attempts} attempts of {config.node_wait_s:g} s; "
                "check that the nodes are running and can reach the coordinator (see the log "
                "above)"
            )
        self.server_optimizer.step(model, contributions.weighted_sum, contributions.total_weight)
        for name in contributions.outcomes:
            self.registry.record_contribution(name)
        train_seconds = max(o.seconds for o in contributions.outcomes.values())
        validation = self._evaluate(
            round_number, model, "validation", self._blob(model, f"r{round_number}")
        )
        seconds = time.perf_counter() - started
        return {
            "round": round_number,
            "attempts": attempt,
            "aggregation": self.aggregator.name,
            "server_optimizer": self.server_optimizer.config.name,
            "sampled": sorted(link.name for link in links),
            "contributors": contributions.contributors,
            "dropped": contributions.dropped,
            "refused": contributions.refused,
            "train": {
                name: {
                    "examples": o.num_examples,
                    "loss": o.train_loss,
                    "steps": o.steps,
                    "seconds": o.seconds,
                    "epsilon": o.release.epsilon if o.release else math.inf,
                    "epsilon_spent": o.privacy.epsilon_spent,
                    "epsilon_budget": o.privacy.epsilon_budget,
                    "delta": o.privacy.delta,
                    "noise_multiplier": o.release.noise_multiplier if o.release else 0.0,
                    "unit": o.release.unit if o.release else "",
                    "clipped": o.clipped,
                }
                for name, o in sorted(contributions.outcomes.items())
            },
            "validation": validation,
            "seconds": seconds,
            "train_seconds": train_seconds,
            "evaluate_seconds": validation.get("seconds", 0.0),
        }

    def _check_reach(self, round_number: int) -> None:
        """Raise :class:`FederationFailed` once fewer than ``min_nodes`` of the roster can
        take part: the others refused to join, or refused a round, for reasons that will
        recur (waiting or retrying would only charge the rest again)."""
        out = {
            **{
                name: f"refused to join: {why}"
                for name, why in self.registry.join_refusals().items()
            },
            **self._exclusions(),
        }
        roster = self.registry.roster
        left = len(roster) - len(out)
        if left >= self.config.min_nodes:
            return
        causes = "; ".join(f"{name} {why}" for name, why in sorted(out.items()))
        raise FederationFailed(
            f"round {round_number} cannot gather min_nodes={self.config.min_nodes} updates: "
            f"only {left} of the roster's {len(roster)} nodes can take part, because {causes}. "
            "Retrying cannot change this (no round was retried for it): fix the cause at "
            "that node, or take it off the roster, and start the run again"
        )

    def _exclusions(self) -> dict[str, str]:
        """The excluded nodes still on the link they refused on (or not connected), with
        why; one that joined again since is forgotten."""
        current = {link.name: link for link in self.registry.every_link()}
        for name, (_, link) in list(self._excluded.items()):
            if current.get(name, link) is not link:
                del self._excluded[name]
        return {name: why for name, (why, _) in self._excluded.items()}

    def _abandon(
        self,
        links: list[NodeLink],
        make_task: Callable[[NodeLink], TrainTask],
        round_number: int,
        attempt: int,
        contributions: RoundContributions,
    ) -> None:
        """Tell every node of a failed attempt that its round was abandoned: one that
        trained for it (its release is charged) marks the release in its ledger."""
        reason = (
            f"round {round_number}, attempt {attempt}: {len(contributions.contributors)} "
            f"updates of the {self.config.min_nodes} needed"
        )
        if contributions.failure is not None:
            reason += f" ({contributions.failure})"
        for link in links:
            link.abandon(make_task(link).task_id, reason)

    def _evaluate(
        self, round_number: int, model: nn.Module, split: Split, weights: Blob
    ) -> dict[str, Any]:
        links = self.registry.connected()
        pending: dict[Future[EvaluationOutcome], NodeLink] = {}
        for link in links:
            self.registry.set_activity(link.name, f"evaluating ({split})")
            task = EvaluateTask(
                task_id=f"{self.run_id}-r{round_number}-{split}-{link.name}",
                round=round_number,
                spec=self.spec,
                weights=weights,
                split=split,
            )
            pending[link.evaluate(task)] = link
        done, not_done = wait(pending, timeout=self.config.round_timeout_s)
        outcomes: dict[str, EvaluationOutcome] = {}
        for future in done:
            name = pending[future].name
            try:
                outcomes[name] = future.result()
            except (TaskRefused, NodeDropped) as error:
                log.warning("round %d: %s did not evaluate: %s", round_number, name, error)
            self.registry.set_activity(name, "idle")
        for future in not_done:
            future.cancel()
            log.warning("round %d: %s did not evaluate in time", round_number, pending[future].name)
        pooled = pool(outcomes)
        pooled["seconds"] = max((o.seconds for o in outcomes.values()), default=0.0)
        return pooled

    def _initial_model(self) -> nn.Module:
        torch.manual_seed(self.config.seed)
        model = self.spec.build()
        if self._init_state is not None:
            model.load_state_dict(self._init_state)
        return model

    def _blob(self, model: nn.Module, label: str) -> Blob:
        """The model's weights as a blob; the evaluation's blob of round t is reused as
        round t+1's training weights (same label), not encoded and hashed again."""
        blob_id = f"{self.run_id}-global-{label}"
        if self._last_blob is None or self._last_blob.blob_id != blob_id:
            self._last_blob = Blob.of(blob_id, encode(model.state_dict()))
        return self._last_blob

    def _set_state(self, round_number: int, state: str) -> None:
        with self._lock:
            self._round = round_number
            self._state = state

    def _restore_counts(self, records: list[dict[str, Any]]) -> None:
        counts: dict[str, int] = {}
        spent: dict[str, tuple[float, float]] = {}
        for record in records:
            for name in record.get("contributors", ()):
                counts[name] = counts.get(name, 0) + 1
            for name, train in record.get("train", {}).items():
                spent[name] = (
                    train.get("epsilon_spent") or 0.0,
                    train.get("epsilon_budget") or 0.0,
                )
        self.registry.restore(
            [
                NodeStatus(
                    name,
                    rounds_contributed=counts.get(name, 0),
                    epsilon_spent=spent.get(name, (0.0, 0.0))[0],
                    epsilon_budget=spent.get(name, (0.0, 0.0))[1],
                )
                for name in self.registry.roster
            ]
        )

    def _log_round(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        round_number = int(record["round"])
        validation = record["validation"]
        summary = RoundResult.of(record)
        with self._lock:
            self._history.append(summary)
        auroc = (
            "n/a"
            if summary.validation_mean_auroc is None
            else f"{summary.validation_mean_auroc:.3f}"
        )
        log.info(
            "round %d/%d done in %.1f s: %d nodes, validation AUROC %s, loss %s",
            round_number,
            self.config.rounds,
            record["seconds"],
            len(record["contributors"]),
            auroc,
            "n/a" if summary.validation_loss is None else f"{summary.validation_loss:.4f}",
        )
        scalars: dict[str, float | None] = {
            "validation/loss": validation.get("loss"),
            "validation/accuracy": validation.get("accuracy"),
            "validation/mean_auroc": validation.get("mean_auroc"),
            "round/seconds": record["seconds"],
            "round/contributors": len(record["contributors"]),
        }
        for label, value in validation.get("auroc", {}).items():
            scalars[f"validation/auroc/{label}"] = value
        for name, train in record["train"].items():
            scalars[f"epsilon_spent/{name}"] = train["epsilon_spent"]
        for key, value in scalars.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(key, value, round_number)
        writer.flush()
        if self._mlflow is not None:
            self._mlflow.log(scalars, round_number)

    def _result(self, test: FinalEvaluation | None) -> FederationResult:
        """The run's result: its rounds are the history :meth:`_log_round` kept."""
        return FederationResult(
            run_id=self.run_id,
            rounds=tuple(self._history),
            test=test,
            nodes=MappingProxyType(
                {
                    status.name: NodeResult(
                        rounds_contributed=status.rounds_contributed,
                        epsilon_spent=status.epsilon_spent,
                        epsilon_budget=status.epsilon_budget,
                    )
                    for status in self.registry.statuses()
                }
            ),
            model=self.run_dir.path / "model.safetensors",
        )


def _missing(contributions: RoundContributions) -> str:
    """Why a round's attempt gathered too few updates, node by node."""
    causes = [f"{name} refused ({why})" for name, why in sorted(contributions.refused.items())]
    causes += [f"{name} dropped out ({why})" for name, why in sorted(contributions.dropped.items())]
    if contributions.failure is not None:
        causes.append(f"no aggregate ({contributions.failure})")
    return "; ".join(causes) or "no node answered"


def make_aggregator(config: CoordinatorConfig) -> Aggregator:
    """The aggregator ``config`` names; plaintext is logged, as it reveals every update."""
    if config.aggregation == "plaintext":
        log.warning(
            "aggregation = 'plaintext': the coordinator sees every node's update; use it only "
            "for comparison or debugging"
        )
        return PlaintextAggregator()
    ca_pem, _, _ = config.tls.read()
    return SecureAggregator(config.secure_aggregation, ca_pem=ca_pem)
