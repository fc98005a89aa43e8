"""The domain-transfer matrix: models trained at each site, tested at every site.

For each privacy level (non-DP, then each ε of the settings) the coordinator has

* one **local model per site**, trained on that site's data alone, at its node (a
  federation of one node: the node trains, the coordinator only holds the weights);
* the **federated model**, trained by all nodes with the configured aggregation;

both for the same rounds and plan, so they differ only in whose data they saw. Every model
is then evaluated at every site's node on its test split (thresholds from that node's
validation split, bootstrap intervals, subgroups; :mod:`primia.evaluate.evaluation`). Only
metrics travel: images, scores and labels never leave a node, and the node alone knows
which samples each bootstrap resample drew.

A DP model's ε is its whole training's: each of the R rounds is given the per-round ε
whose R-fold composition at the node's sample rate is ε (:func:`round_epsilon`), so local
and federated models at one ε cost each node the same. The nodes' ledgers account for
every release and refuse what exceeds their budgets; the matrix needs
Σ (local + federated) of ε per node, and non-DP models need nodes that allow them
(``limits.require_dp = false``).

Resumable: a model with ``report.json`` in ``models/<id>/`` is trained, one part-way
resumes after its last round, and a cell with its ``cells/<model>__<site>.json`` is done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primia.blobs import Blob
from primia.errors import ConfigError, PrimiaError
from primia.evaluate.bootstrap import DEFAULT_RESAMPLES
from primia.evaluate.evaluation import Evaluation
from primia.evaluate.store import evaluation_exists, load_evaluation, save_evaluation
from primia.federated.aggregation import PlaintextAggregator
from primia.federated.coordinator import Federation, FederationStatus
from primia.federated.coordinator_config import CoordinatorConfig
from primia.federated.plan import DPPlan
from primia.federated.registry import NodeLink, NodeRegistry
from primia.federated.tasks import EvaluateTask, EvaluationDetail, NodeInfo
from primia.federated.weights import encode
from primia.files import atomic_write_bytes
from primia.models.checkpoint import ModelSpec, load_model
from primia.train.accounting import Mechanism, epsilon_of, noise_for_target

log = logging.getLogger(__name__)

FEDERATED = "federated"
NON_PRIVATE = "non-DP"


class TransferFailed(PrimiaError):
    """The matrix cannot go on; what is finished stays on disk for a resumed run."""


@dataclass(frozen=True)
class TransferSettings:
    out: Path
    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    non_private: bool = True
    """Also train every model without DP (the baseline the ε levels are compared to)."""
    federated: bool = True
    rounds: int | None = None
    """Rounds per model; None: the coordinator configuration's ``rounds``."""
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    subgroups: bool = True

    def __post_init__(self) -> None:
        if any(not (math.isfinite(e) and e > 0) for e in self.epsilons):
            raise ConfigError(f"every ε must be positive, got {list(self.epsilons)}")
        if len(set(self.epsilons)) != len(self.epsilons):
            raise ConfigError(f"an ε is listed twice: {list(self.epsilons)}")
        if not self.epsilons and not self.non_private:
            raise ConfigError("nothing to train: give an ε or allow the non-DP models")
        if self.rounds is not None and self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}")
        if not 1 <= self.resamples <= 10_000:
            raise ConfigError(f"resamples must be in [1, 10000], got {self.resamples}")

    @property
    def levels(self) -> list[float | None]:
        """The privacy levels in order: None (non-DP) first, then the ε values."""
        return ([None] if self.non_private else []) + sorted(self.epsilons)


def level_name(epsilon: float | None) -> str:
    return NON_PRIVATE if epsilon is None else f"ε={epsilon:g}"


def level_tag(epsilon: float | None) -> str:
    """The level in file names: ``nodp``, ``eps1``, ``eps0.5``."""
    return "nodp" if epsilon is None else f"eps{epsilon:g}"


@dataclass(frozen=True)
class ModelPlan:
    """One model of the matrix: where it is trained, at which privacy level."""

    trained_at: str
    """A site's name, or ``federated``."""
    epsilon: float | None
    sites: tuple[str, ...]

    @property
    def model_id(self) -> str:
        return f"{self.trained_at}.{level_tag(self.epsilon)}"


def plan_models(sites: tuple[str, ...], settings: TransferSettings) -> list[ModelPlan]:
    models = []
    for epsilon in settings.levels:
        models += [ModelPlan(site, epsilon, (site,)) for site in sites]
        if settings.federated:
            models.append(ModelPlan(FEDERATED, epsilon, sites))
    return models


def round_epsilon(
    epsilon: float,
    *,
    delta: float,
    rounds: int,
    epochs: int,
    batch_size: int,
    train_examples: list[int],
    accountant: str = "prv",
) -> float:
    """The per-round ε whose ``rounds``-fold composition spends at most ``epsilon`` at every
    node: a node with N examples takes ⌈N/B⌉ steps an epoch at q = 1/⌈N/B⌉; the σ that
    makes R rounds cost ε makes one round cost ε_r. The smallest ε_r over the nodes is
    returned (each node calibrates its own σ to it)."""
    if rounds == 1:
        return epsilon
    per_round = []
    for examples in train_examples:
        batches = max(1, math.ceil(examples / batch_size))
        rate = 1.0 / batches
        sigma = noise_for_target(
            epsilon=epsilon,
            delta=delta,
            sample_rate=rate,
            steps=rounds * epochs * batches,
            accountant=accountant,  # type: ignore[arg-type]
        )
        per_round.append(
            epsilon_of(
                [Mechanism(sigma, rate, epochs * batches)],
                delta=delta,
                accountant=accountant,  # type: ignore[arg-type]
            )
        )
    return min(per_round)


@dataclass
class _Progress:
    state: str = "starting"
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[str, int, int], None]
"""Called with (what is happening, steps done, steps in all): a step is a model trained
or a cell evaluated."""


class TransferMatrix:
    """Trains and evaluates the matrix's models over the nodes of ``registry``."""

    def __init__(
        self,
        config: CoordinatorConfig,
        settings: TransferSettings,
        registry: NodeRegistry,
        *,
        stop: threading.Event | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.registry = registry
        self.sites = tuple(config.roster)
        self.models = plan_models(self.sites, settings)
        self.run_id = f"transfer-{settings.out.name}"
        self._stop = stop or threading.Event()
        self._on_progress = on_progress
        self._progress = _Progress(total=len(self.models) * (1 + len(self.sites)))
        self._lock = threading.Lock()
        self._timings_path = settings.out / "timings.json"
        self.timings: dict[str, float] = (
            json.loads(self._timings_path.read_text()) if self._timings_path.exists() else {}
        )
        """Seconds per model trained and cell evaluated, and ``total_seconds``: the wall
        time of every run that built this matrix (kept in ``timings.json`` across resumes)."""

    # ---- status (for `primia status` and the live display) ------------------------------

    def status(self) -> FederationStatus:
        with self._lock:
            return FederationStatus(
                run_id=self.run_id,
                state=self._progress.state,
                round=self._progress.done,
                rounds=self._progress.total,
                min_nodes=len(self.sites),
                nodes=self.registry.statuses(),
                history=[],
                unit="step",
            )

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> dict[tuple[str, str], Evaluation]:
        """Train what is not trained, evaluate what is not evaluated; return every cell's
        evaluation by (model id, tested-at site)."""
        started = time.perf_counter()
        self.settings.out.mkdir(parents=True, exist_ok=True)
        self._advance("waiting for every site's node", 0)
        links = self.registry.wait_for(
            len(self.sites), timeout=self.config.startup_wait_s, stop=self._stop
        )
        if len(links) < len(self.sites):
            missing = sorted(set(self.sites) - {link.name for link in links})
            raise TransferFailed(
                f"the matrix needs every site; {', '.join(missing)} did not connect within "
                f"startup_wait_s={self.config.startup_wait_s:g} s"
            )
        self._warn_about_budgets({link.name: link.info for link in links})
        for epsilon in self.settings.levels:
            level = [m for m in self.models if m.epsilon == epsilon]
            local = [m for m in level if m.trained_at != FEDERATED]
            # Sites train their local models at the same time, as hospitals would.
            with ThreadPoolExecutor(max_workers=len(local) or 1) as pool:
                for future in [pool.submit(self._train, m) for m in local]:
                    future.result()
            for model in level:
                if model.trained_at == FEDERATED:
                    self._train(model)
        cells = self._evaluate_all()
        self._record_time("total_seconds", time.perf_counter() - started, add=True)
        self._advance("finished", 0)
        for link in self.registry.connected():
            link.shutdown("the transfer matrix has finished", finished=True)
        return cells

    def model_dir(self, model: ModelPlan) -> Path:
        return self.settings.out / "models" / model.model_id

    def cell_stem(self, model: ModelPlan, site: str) -> Path:
        return self.settings.out / "cells" / f"{model.model_id}__{site}"

    def _train(self, model: ModelPlan) -> None:
        run_dir = self.model_dir(model)
        if (run_dir / "report.json").exists():
            self._advance(f"{model.model_id} already trained", 1)
            return
        if self._stop.is_set():
            raise TransferFailed("stopped")
        self._advance(f"training {model.model_id}", 0)
        started = time.perf_counter()
        config = self._model_config(model, run_dir)
        view = self.registry.view(model.sites)
        aggregator = PlaintextAggregator() if len(model.sites) == 1 else None
        try:
            Federation(
                config, view, aggregator=aggregator, stop=self._stop, finish_nodes=False
            ).run()
        except PrimiaError as error:
            raise TransferFailed(f"training {model.model_id} failed: {error}") from error
        self._record_time(f"train/{model.model_id}", time.perf_counter() - started)
        self._advance(f"trained {model.model_id}", 1)

    def _model_config(self, model: ModelPlan, run_dir: Path) -> CoordinatorConfig:
        config = self.config
        rounds = self.settings.rounds or config.rounds
        plan = config.plan
        if model.epsilon is None:
            dp = dataclasses.replace(plan.dp, enabled=False)
        else:
            infos = [link.info for link in self.registry.view(model.sites).connected()]
            dp = DPPlan(
                enabled=True,
                epsilon=round_epsilon(
                    model.epsilon,
                    delta=plan.dp.delta,
                    rounds=rounds,
                    epochs=plan.epochs,
                    batch_size=plan.batch_size,
                    train_examples=[info.dataset.train_examples for info in infos],
                    accountant=infos[0].privacy.accountant if infos else "prv",
                ),
                delta=plan.dp.delta,
                max_grad_norm=plan.dp.max_grad_norm,
            )
        single = len(model.sites) == 1
        return dataclasses.replace(
            config,
            roster=list(model.sites),
            run_dir=run_dir,
            rounds=rounds,
            min_nodes=len(model.sites) if single else config.min_nodes,
            aggregation="plaintext" if single else config.aggregation,
            final_test=False,
            plan=dataclasses.replace(plan, dp=dp),
        )

    def _evaluate_all(self) -> dict[tuple[str, str], Evaluation]:
        cells: dict[tuple[str, str], Evaluation] = {}
        queues: dict[str, list[ModelPlan]] = {site: [] for site in self.sites}
        for model in self.models:
            for site in self.sites:
                stem = self.cell_stem(model, site)
                if evaluation_exists(stem):
                    cells[(model.model_id, site)] = load_evaluation(stem)[0]
                    self._advance(f"{model.model_id} at {site} already evaluated", 1)
                else:
                    queues[site].append(model)

        # Each pending model's weights are read and encoded once, whatever its cells.
        weights: dict[str, tuple[Blob, ModelSpec]] = {}
        for model in {m.model_id: m for queue in queues.values() for m in queue}.values():
            network, spec = load_model(self.model_dir(model) / "model.safetensors")
            blob = Blob.of(f"{self.run_id}-{model.model_id}", encode(network.state_dict()))
            weights[model.model_id] = (blob, spec)

        def evaluate_at(site: str) -> None:
            for model in queues[site]:
                cells[(model.model_id, site)] = self._evaluate(
                    model, site, *weights[model.model_id]
                )

        # Each node evaluates its queue in turn; the nodes work at the same time.
        with ThreadPoolExecutor(max_workers=len(self.sites)) as pool:
            for future in [pool.submit(evaluate_at, site) for site in self.sites]:
                future.result()
        return cells

    def _evaluate(self, model: ModelPlan, site: str, blob: Blob, spec: ModelSpec) -> Evaluation:
        if self._stop.is_set():
            raise TransferFailed("stopped")
        links = self.registry.view((site,)).wait_for(
            1, timeout=self.config.node_wait_s, stop=self._stop
        )
        if not links:
            raise TransferFailed(
                f"{site} is not connected (waited node_wait_s={self.config.node_wait_s:g} s) "
                f"to evaluate {model.model_id}; start its node and run the matrix again"
            )
        link: NodeLink = links[0]
        started = time.perf_counter()
        task = EvaluateTask(
            task_id=f"{self.run_id}-{model.model_id}-at-{site}",
            round=0,
            spec=spec,
            weights=blob,
            split="test",
            detail=EvaluationDetail(
                resamples=self.settings.resamples,
                seed=self.settings.seed,
                subgroups=self.settings.subgroups,
            ),
        )
        self.registry.set_activity(site, f"evaluating {model.model_id}")
        try:
            outcome = link.evaluate(task).result(timeout=self.config.round_timeout_s)
        except Exception as error:
            raise TransferFailed(f"{site} did not evaluate {model.model_id}: {error}") from error
        finally:
            self.registry.set_activity(site, "idle")
        if outcome.detailed is None:
            raise TransferFailed(f"{site} sent no detailed evaluation of {model.model_id}")
        seconds = time.perf_counter() - started
        save_evaluation(
            self.cell_stem(model, site),
            outcome.detailed,
            meta={
                "model": model.model_id,
                "trained_at": model.trained_at,
                "epsilon": model.epsilon,
                "tested_at": site,
                "seconds": seconds,
            },
        )
        self._record_time(f"evaluate/{model.model_id}@{site}", seconds)
        self._advance(f"evaluated {model.model_id} at {site}", 1)
        return outcome.detailed

    def _record_time(self, key: str, seconds: float, *, add: bool = False) -> None:
        with self._lock:
            self.timings[key] = seconds + (self.timings.get(key, 0.0) if add else 0.0)
            payload = json.dumps(self.timings, indent=2, sort_keys=True) + "\n"
            atomic_write_bytes(self._timings_path, payload.encode())

    def _advance(self, state: str, done: int) -> None:
        with self._lock:
            self._progress.state = state
            self._progress.done += done
            snapshot = (state, self._progress.done, self._progress.total)
        log.info("%s (%d/%d)", *snapshot)
        if self._on_progress is not None:
            self._on_progress(*snapshot)

    def _warn_about_budgets(self, infos: dict[str, NodeInfo]) -> None:
        needed = sum(self.settings.epsilons) * (2 if self.settings.federated else 1)
        for name, info in sorted(infos.items()):
            left = info.privacy.epsilon_budget - info.privacy.epsilon_spent
            if left < needed:
                log.warning(
                    "%s has ε %.2f left of its budget; the matrix's DP models spend up to "
                    "%.2f there: its node will refuse the rest (raise privacy.epsilon_budget "
                    "in its node.toml)",
                    name,
                    left,
                    needed,
                )


def summary_of(matrix: TransferMatrix) -> dict[str, Any]:
    """What the matrix was run with, for its report."""
    return {
        "sites": list(matrix.sites),
        "levels": [level_name(e) for e in matrix.settings.levels],
        "models": [
            {"id": m.model_id, "trained_at": m.trained_at, "epsilon": m.epsilon}
            for m in matrix.models
        ],
        "rounds": matrix.settings.rounds or matrix.config.rounds,
        "plan": dataclasses.asdict(matrix.config.plan),
        "model": dataclasses.asdict(matrix.config.model),
        "resamples": matrix.settings.resamples,
        "seed": matrix.settings.seed,
    }
