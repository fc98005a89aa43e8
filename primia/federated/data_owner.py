"""The data owner's side of a federation: train and evaluate the global model locally.

A :class:`DataOwner` holds one institution's dataset and privacy ledger. For a training
task it checks (:meth:`DataOwner.admit`), before it trains or shares anything, that

* the task is within the node's :class:`~primia.federated.policy.NodePolicy`: its
  aggregation (plaintext only if allowed by name), participants and threshold, and a
  model the node trains (the first one accepted is pinned when the policy lists none),
* the plan is within the node's :class:`~primia.federated.plan.PlanLimits`, including
  the DP floors on this node's data (noise multiplier, ε per coordinator run),
* the model fits its data (task, label names, input channels) and its limits,
* the weights are exactly the model's tensors (names, shapes, dtypes, finite values),
* the plan's DP release fits the node's budget — the ledger reserves it before the first
  step (see :meth:`primia.train.ledger.PrivacyLedger.reserve`),

and refuses with :class:`~primia.federated.tasks.TaskRefused` otherwise. It then trains
with DP-SGD from the global weights (:func:`primia.train.local.fit`) and returns the
update Δ = w_local − w_global. The update is the DP release: (ε, δ)-DP per round
example-level for this node's data, composed over rounds by the ledger.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from primia import __version__
from primia.blobs import Blob
from primia.data import (
    RadiographDataset,
    ReadOptions,
    Splits,
    check_format,
    only_site,
    open_dataset,
    patient_split,
)
from primia.errors import (
    ConfigError,
    LedgerError,
    LedgerIntegrityError,
    PrivacyBudgetExceeded,
    PrivacyUnitMismatch,
)
from primia.evaluate.bootstrap import secret_seed
from primia.evaluate.evaluation import evaluate_scores
from primia.federated.plan import PlanLimits, TrainPlan, plan_problems
from primia.federated.policy import (
    AcceptedModel,
    NodePolicy,
    accepted_models,
    aggregation_problems,
    dp_problems,
    model_problems,
    plan_aggregation_problems,
)
from primia.federated.privacy_record import below
from primia.federated.tasks import (
    DatasetSummary,
    EvaluateTask,
    EvaluationOutcome,
    FederationPlan,
    LabelMetrics,
    LocalTraining,
    NodeInfo,
    PrivacyRelease,
    PrivacyState,
    Refusal,
    TaskRefused,
    TrainTask,
)
from primia.federated.used_sessions import USED_SESSIONS_FILENAME, UsedSessions
from primia.federated.weights import WeightsError, decode_like
from primia.files import PRIVATE, atomic_write_bytes
from primia.models import model_names
from primia.models.checkpoint import ModelSpec
from primia.pki import read_private
from primia.scoring.predict import dataset_scores, predict
from primia.threads import set_torch_threads
from primia.train.accounting import AccountantName
from primia.train.ledger import Budget, PrivacyLedger
from primia.train.local import dp_mechanism, fit, logits_of, metrics_of, resolve_device
from primia.train.train_config import LEDGER_FILENAME, DPConfig, GradSampleMode, TrainConfig
from primia.train.units import (
    PrivacyUnit,
    check_unit,
    clipping_problem,
    unnamed_patients_problem,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
EVALUATION_KEY_FILENAME = "evaluation.key"
PINNED_MODEL_FILENAME = "pinned-model.json"
RELEASES_KEPT = 8
"""Releases remembered for a notice that their round was abandoned: the coordinator
abandons a round's attempt as soon as it ends, before the next task."""


@dataclass(frozen=True)
class DataSettings:
    path: Path
    label_columns: list[str] | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    """Fixes the patient split, so a restarted node keeps its held-out patients held out."""
    site: str | None = None
    """Use only the images of this site (a manifest with a ``site`` column shared by
    several simulated nodes, as in the demo)."""
    format: str | None = None
    """The dataset's layout (:data:`primia.data.FORMATS`); detected when unset."""
    uncertain: str = "ones"
    """CheXpert/MIMIC-CXR uncertain (-1) labels: ones, zeros or ignore (docs/data.md)."""
    vote: str = "majority"
    """VinDr-CXR readers' votes: majority or any."""
    views: str = "frontal"
    """frontal (PA, AP) or all views of a public collection."""
    skip_missing: bool = False
    """Leave out a public collection's rows whose image is missing instead of failing."""

    def __post_init__(self) -> None:
        # checked when the node's file is read, not when the first round opens the data
        check_format(self.format)
        self.read_options()

    def read_options(self) -> ReadOptions:
        """The public-collection reading options these settings name."""
        return ReadOptions.of(self)


@dataclass(frozen=True)
class PrivacySettings:
    epsilon_budget: float = 10.0
    delta: float = 1e-5
    accountant: AccountantName = "prv"
    unit: PrivacyUnit = "patient"
    """What this node's ε protects (:mod:`primia.train.units`): the node decides, never the
    coordinator's plan, so a coordinator cannot weaken a patient-level guarantee."""
    max_images_per_patient: int = 16

    def __post_init__(self) -> None:
        check_unit(self.unit)
        if self.max_images_per_patient < 1:
            raise ConfigError(
                "privacy.max_images_per_patient must be at least 1, got "
                f"{self.max_images_per_patient}"
            )


@dataclass(frozen=True)
class ComputeSettings:
    device: str = "auto"
    threads: int | None = None
    max_physical_batch_size: int = 64
    grad_sample_mode: GradSampleMode = "fast"
    max_augmentations: int = 4
    """The most augmentations per image (K) this node trains with: a plan's K above it is
    cut to it (K multiplies the work of a step, not the ε)."""

    def __post_init__(self) -> None:
        # checked when the file is read, not when the first round arrives
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ConfigError(
                    f"compute.device {self.device!r} is not a device: use auto (CUDA when "
                    "present), cpu, cuda or cuda:N"
                ) from error
        if self.threads is not None and self.threads < 0:
            raise ConfigError(
                f"compute.threads must be at least 0 (0: PyTorch's default), got {self.threads}"
            )
        if self.max_physical_batch_size < 1:
            raise ConfigError(
                "compute.max_physical_batch_size must be at least 1, got "
                f"{self.max_physical_batch_size}"
            )
        if self.max_augmentations < 1:
            raise ConfigError(
                "compute.max_augmentations must be at least 1 (1: no augmentation "
                f"multiplicity), got {self.max_augmentations}"
            )

    def augmentations(self, planned: int) -> int:
        """The K this node trains with when a plan asks for ``planned``: capped at
        ``max_augmentations``, and 1 where the gradient mode clips each image alone."""
        if clipping_problem("example", self.grad_sample_mode, planned) is not None:
            return 1
        return min(planned, self.max_augmentations)


class DataOwner:
    """One institution's data, ledger and limits; see the module docstring."""

    def __init__(
        self,
        *,
        data: DataSettings,
        privacy: PrivacySettings,
        limits: PlanLimits,
        compute: ComputeSettings,
        state_dir: Path,
        default_image_size: int = 64,
        policy: NodePolicy | None = None,
    ) -> None:
        self._data = data
        self._privacy = privacy
        self._limits = limits
        self._compute = compute
        self._policy = policy or NodePolicy()
        self._pin_path = state_dir / PINNED_MODEL_FILENAME
        if self._policy.allows_plaintext:
            log.warning(
                "policy.aggregation allows plaintext: a coordinator that asks for it receives "
                "this node's updates in the clear"
            )
        problem = clipping_problem(privacy.unit, compute.grad_sample_mode)
        if problem is not None:  # else every DP round would fail mid-training
            raise ConfigError(f"compute.{problem} (privacy.unit is {privacy.unit!r})")
        state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = PrivacyLedger.open(
            state_dir / LEDGER_FILENAME,
            budget=Budget(epsilon=privacy.epsilon_budget, delta=privacy.delta),
            accountant=privacy.accountant,
        )
        set_torch_threads(compute.threads)
        self.device = resolve_device(compute.device)
        self._evaluation_key = _secret_key(state_dir / EVALUATION_KEY_FILENAME)
        self.sessions = UsedSessions(state_dir / USED_SESSIONS_FILENAME)
        """The secure-aggregation sessions this node took part in (it refuses a reused one)."""
        self._splits: dict[int, Splits] = {}
        self._decoded: tuple[tuple[str, bytes, ModelSpec], dict[str, torch.Tensor]] | None = None
        """The last global weights decoded, by (blob id, digest, spec)."""
        self._default_image_size = default_image_size
        self._recorded_epsilon: float | None = None
        """The ε the coordinator recorded for this node (its latest Welcome)."""
        self._releases: dict[str, tuple[str, float]] = {}
        """The latest releases, by task id: (ledger release id, ε), until their round is
        known to have been abandoned or they are too old to be."""
        self._splits_at(default_image_size)  # fail at start-up, not mid-round, on bad data

    def info(self) -> NodeInfo:
        splits = self._splits_at(self._default_image_size)
        train = splits.train
        return NodeInfo(
            dataset=DatasetSummary(
                task=str(train.task),
                label_names=train.label_names,
                train_examples=len(train),
                validation_examples=len(splits.val),
                test_examples=len(splits.test) if splits.test else 0,
            ),
            privacy=self.privacy_state(),
            device=_describe(self.device),
            software_version=__version__,
        )

    @property
    def policy(self) -> NodePolicy:
        return self._policy

    def privacy_state(self) -> PrivacyState:
        budget = self.ledger.budget
        return PrivacyState(
            epsilon_spent=self.ledger.spent_epsilon(),
            epsilon_budget=budget.epsilon,
            delta=budget.delta,
            accountant=self.ledger.accountant,
        )

    def check_coordinator_record(self, recorded_epsilon: float | None) -> LedgerError | None:
        """Remember the ε the coordinator recorded for this node and compare it with the
        ledger (read again from disk): the error that makes :meth:`train` refuse, or None.

        A ledger below the record forgot releases the coordinator saw (it was deleted,
        cut or rewritten with its anchor); training on it would spend budget already
        spent. The refusal lasts until the ledger reports at least the recorded ε:
        restored from a backup, or repaired with the figure carried
        (``primia ledger repair LEDGER --at-least X --accept``).
        """
        self._recorded_epsilon = recorded_epsilon
        return self._ledger_problem()

    def _ledger_problem(self) -> LedgerError | None:
        try:
            self.ledger.reload()
        except LedgerError as error:
            return error
        recorded = self._recorded_epsilon
        spent = self.ledger.spent_epsilon()
        if recorded is None or not below(spent, recorded):
            return None
        return LedgerIntegrityError(
            f"privacy ledger {self.ledger.path} reports eps {spent:.4g} spent, but the "
            f"coordinator recorded {recorded:.4g} for this node: releases are missing from "
            "the ledger (deleted, cut, or rewritten with its anchor). This node refuses to "
            "train until it is resolved: restore the ledger and its anchor from a backup, "
            f"or carry the coordinator's figure: `primia ledger repair {self.ledger.path} "
            f"--at-least {recorded:.6g} --unit {self._privacy.unit} --accept` (docs/privacy.md, "
            "'Ledger integrity')"
        )

    def admit(self, task: TrainTask, *, run: str = "") -> None:
        """Refuse ``task`` (:class:`TaskRefused`) unless this node's policy, limits and data
        allow it; ``run`` is the coordinator's run id, by which ε per run is counted.

        The node calls it before it advertises keys for a secure round, and :meth:`train`
        calls it again; it reads only the task, the data's size and the ledger. When the
        policy lists no model, the first model admitted is pinned. A ledger that fails its
        integrity check, or reports less than the coordinator recorded, refuses first."""
        secure = task.secure.setup if task.secure is not None else None
        self._check(task.spec, task.plan, aggregation_problems(self._policy, secure), run=run)
        if not accepted_models(self._policy, self._pinned_model()):
            self._pin(AcceptedModel.of(task.spec))
        if secure is None:
            log.warning(
                "round %d: this node's update goes to the coordinator in the clear "
                "(plaintext aggregation, allowed by policy.aggregation)",
                task.round,
            )

    def check_plan(self, plan: FederationPlan, *, run: str = "") -> None:
        """Refuse to join the run ``plan`` announces (:class:`TaskRefused`) if this node
        would refuse every one of its rounds: what :meth:`admit` checks, with the largest
        round the run can have, and a first release that must fit the budget. Nothing is
        pinned or written; each round is still admitted on its own when it comes."""
        self._check(
            plan.spec, plan.plan, plan_aggregation_problems(self._policy, plan), run=run, join=True
        )

    def _check(
        self,
        spec: ModelSpec,
        plan: TrainPlan,
        aggregation: list[str],
        *,
        run: str,
        join: bool = False,
    ) -> None:
        """Raise :class:`TaskRefused` for the first kind of problem training ``spec`` under
        ``plan`` has here (``aggregation``: the aggregation's, already found); with
        ``join``, also for a first release beyond the budget (:meth:`train` leaves that
        to the ledger's reservation)."""
        problem = self._ledger_problem()
        if problem is not None:
            raise TaskRefused(Refusal.LEDGER_INTEGRITY, str(problem))
        if aggregation:
            raise TaskRefused(Refusal.POLICY, "; ".join(aggregation))
        problems = plan_problems(
            plan, self._limits, delta_budget=self._privacy.delta, name_settings=True
        )
        if problems:
            raise TaskRefused(Refusal.INVALID_PLAN, "; ".join(problems))
        splits = self._splits_for(spec)
        accepted = accepted_models(self._policy, self._pinned_model())
        parameters = sum(tensor.numel() for tensor in spec.shapes().values())
        problems = model_problems(self._policy, spec, parameters=parameters, accepted=accepted)
        if plan.dp.enabled:
            unnamed = unnamed_patients_problem(
                self._privacy.unit, unnamed=splits.train.unnamed_patients, images=len(splits.train)
            )
            if unnamed is not None:
                raise TaskRefused(Refusal.POLICY, unnamed)
            mismatch = self.ledger.unit_problem(self._privacy.unit)
            if mismatch is not None:
                raise TaskRefused(Refusal.POLICY, mismatch)
            mechanism = dp_mechanism(self._train_config(spec, plan), examples=len(splits.train))
            problems += dp_problems(
                self._limits,
                noise_multiplier=mechanism.noise_multiplier,
                run_epsilon=self.ledger.spent_epsilon(extra=mechanism, run=run),
                run=run,
            )
            total = self.ledger.spent_epsilon(extra=mechanism)
            budget = self.ledger.budget.epsilon
            if join and not problems and not (math.isfinite(total) and total <= budget):
                raise TaskRefused(
                    Refusal.BUDGET_EXCEEDED,
                    f"one round of this run would bring the node's spent epsilon to "
                    f"{total:.3g} (already spent {self.ledger.spent_epsilon():.3g}) but its "
                    f"budget is {budget:.3g} (privacy.epsilon_budget, ledger "
                    f"{self.ledger.path})",
                )
        if problems:
            raise TaskRefused(Refusal.POLICY, "; ".join(problems))

    def abandoned(self, task_id: str, reason: str) -> float | None:
        """The coordinator abandoned the round of ``task_id``: if this node made a release
        for it, mark the release in the ledger (its ε stays spent) and return that ε;
        None if it made none (it refused, or had not trained yet)."""
        release = self._releases.pop(task_id, None)
        if release is None:
            return None
        release_id, epsilon = release
        self.ledger.abandon(release_id, reason=f"{task_id}: {reason}")
        return epsilon

    def train(
        self, task: TrainTask, on_progress: ProgressCallback | None = None, *, run: str = ""
    ) -> LocalTraining:
        """Train from the task's weights under its plan, once :meth:`admit` allows it. The
        update stays tensors, for the caller to encode: as safetensors
        (:meth:`~primia.federated.tasks.LocalTraining.as_safetensors`), or into the ring
        for secure aggregation."""
        started = time.perf_counter()
        self.admit(task, run=run)
        splits = self._splits_for(task.spec)
        global_state = self._global_state(task.spec, task.weights)
        model = task.spec.build_with({name: t.clone() for name, t in global_state.items()})
        plan = task.plan
        config = self._train_config(task.spec, plan)

        def after_epoch(epoch: int, record: dict[str, object], _: torch.nn.Module) -> None:
            log.info(
                "round %d: epoch %d/%d, loss %.4f",
                task.round,
                epoch,
                plan.epochs,
                record["train_loss"],
            )
            if on_progress is not None:
                on_progress(epoch / plan.epochs, f"training, epoch {epoch}/{plan.epochs}")

        try:
            fitted = fit(
                model,
                splits.train,
                config=config,
                device=self.device,
                description=f"federated round {task.round} ({task.task_id})",
                after_epoch=after_epoch,
                ledger=self.ledger,
                run=run,
            )
        except PrivacyBudgetExceeded as error:
            raise TaskRefused(Refusal.BUDGET_EXCEEDED, str(error)) from error
        except PrivacyUnitMismatch as error:
            raise TaskRefused(Refusal.POLICY, str(error)) from error
        except LedgerError as error:
            raise TaskRefused(Refusal.LEDGER_INTEGRITY, str(error)) from error
        local_state = fitted.model.state_dict()
        update = {
            name: local_state[name].detach().cpu() - global_state[name] for name in global_state
        }
        release = None
        if fitted.privacy is not None:
            report = fitted.privacy
            self._releases[task.task_id] = (report.release_id, report.epsilon)
            while len(self._releases) > RELEASES_KEPT:
                del self._releases[next(iter(self._releases))]
            release = PrivacyRelease(
                epsilon=report.epsilon,
                delta=report.delta,
                noise_multiplier=report.noise_multiplier,
                sample_rate=report.sample_rate,
                steps=report.steps,
                max_grad_norm=report.max_grad_norm,
                unit=report.unit,
            )
        return LocalTraining(
            update=update,
            num_examples=len(splits.train),
            train_loss=fitted.train_loss,
            steps=fitted.steps,
            release=release,
            privacy=self.privacy_state(),
            started=started,
        )

    def _train_config(self, spec: ModelSpec, plan: TrainPlan) -> TrainConfig:
        """How this node trains ``spec`` under ``plan``: on its data, device and accountant."""
        return TrainConfig(
            data=self._data.path,
            out=Path("."),
            model=spec.architecture,
            width=spec.width,
            image_size=spec.image_size,
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            max_physical_batch_size=self._compute.max_physical_batch_size,
            optimizer=plan.optimizer,
            lr=plan.lr,
            momentum=plan.momentum,
            weight_decay=plan.weight_decay,
            proximal_mu=plan.proximal_mu,
            ema_decay=plan.ema_decay,
            device=str(self.device),
            progress=False,
            dp=DPConfig(
                enabled=plan.dp.enabled,
                epsilon=plan.dp.epsilon,
                delta=plan.dp.delta,
                max_grad_norm=plan.dp.max_grad_norm,
                accountant=self._privacy.accountant,
                grad_sample_mode=self._compute.grad_sample_mode,
                privacy_unit=self._privacy.unit,
                max_images_per_patient=self._privacy.max_images_per_patient,
                augmentation_multiplicity=self._compute.augmentations(plan.augmentations),
            ),
        )

    def evaluate(self, task: EvaluateTask) -> EvaluationOutcome:
        """Metrics of the task's weights on this node's validation or test split."""
        started = time.perf_counter()
        splits = self._splits_for(task.spec)
        dataset: RadiographDataset | None = (
            splits.val if task.split == "validation" else splits.test
        )
        if dataset is None:
            raise TaskRefused(
                Refusal.INVALID_PLAN,
                f"this node has no {task.split} split; set data.test_fraction above 0",
            )
        model = task.spec.build_with(self._global_state(task.spec, task.weights))
        images, _ = dataset.uint8_tensors()
        logits = logits_of(model, images, device=self.device)
        metrics = metrics_of(logits, dataset)
        targets = dataset.targets()
        positives = _positives(targets, dataset.label_names, task.spec.task)
        detailed = None
        if task.detail is not None:
            if task.split != "test":
                raise TaskRefused(
                    Refusal.INVALID_PLAN,
                    "a detailed evaluation is of the test split (its thresholds come from "
                    "the validation split); ask for split=test",
                )
            detailed = evaluate_scores(
                predict(model, splits.val, device=self.device),
                dataset_scores(logits, dataset),  # the test split's pass, made once
                resamples=task.detail.resamples,
                seed=secret_seed(self._evaluation_key, "test", str(task.detail.seed)),
                subgroups=task.detail.subgroups,
            )
        return EvaluationOutcome(
            num_examples=len(dataset),
            loss=metrics.loss,
            accuracy=metrics.accuracy,
            labels={
                name: LabelMetrics(auroc=metrics.auroc.get(name), positives=positives[name])
                for name in dataset.label_names
            },
            seconds=time.perf_counter() - started,
            detailed=detailed,
        )

    def _splits_for(self, spec: ModelSpec) -> Splits:
        """The splits at the model's image size, after checking the model fits the data."""
        problems = []
        if spec.architecture not in model_names():
            problems.append(
                f"unknown architecture {spec.architecture!r} (this node has "
                f"{', '.join(model_names())}); update primia on this node, or, for a "
                "plug-in, add its reference to plugins and set policy.allow_plugins = true"
            )
        if spec.in_channels != 1:
            problems.append(f"the model takes {spec.in_channels} channels, radiographs have 1")
        if not 8 <= spec.image_size <= self._limits.max_image_size:
            problems.append(
                f"image_size={spec.image_size} is outside [8, {self._limits.max_image_size}]"
            )
        if problems:
            raise TaskRefused(Refusal.INCOMPATIBLE_MODEL, "; ".join(problems))
        splits = self._splits_at(spec.image_size)
        train = splits.train
        if spec.task != str(train.task) or tuple(spec.label_names) != train.label_names:
            raise TaskRefused(
                Refusal.INCOMPATIBLE_MODEL,
                f"the model predicts {spec.task} {list(spec.label_names)}, this node's data "
                f"is {train.task} {list(train.label_names)}; align data.label_columns with "
                "the coordinator's model.labels",
            )
        if spec.num_outputs != train.num_outputs:
            raise TaskRefused(
                Refusal.INCOMPATIBLE_MODEL,
                f"the model has {spec.num_outputs} outputs, this node's data needs "
                f"{train.num_outputs}",
            )
        return splits

    def _pinned_model(self) -> AcceptedModel | None:
        """The model this node pinned on its first training task (None: none yet)."""
        if not self._pin_path.exists():
            return None
        try:
            values = json.loads(self._pin_path.read_text())
            return AcceptedModel(str(values["architecture"]), values.get("width"))
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as error:
            raise ConfigError(
                f"{self._pin_path} is not a pinned model ({error}); delete it to pin the next "
                "model trained, or list the consortium's model in policy.models"
            ) from error

    def _pin(self, model: AcceptedModel) -> None:
        atomic_write_bytes(
            self._pin_path,
            json.dumps({"architecture": model.architecture, "width": model.width}).encode(),
        )
        log.warning(
            "pinned the model %s: this node trains no other (list the models it may train "
            "in policy.models; delete %s to pin again)",
            model,
            self._pin_path,
        )

    def _splits_at(self, image_size: int) -> Splits:
        if image_size not in self._splits:
            dataset = open_dataset(
                self._data.path,
                image_size=image_size,
                label_columns=self._data.label_columns,
                format=self._data.format,
                options=self._data.read_options(),
            )
            if self._data.site is not None:
                dataset = only_site(dataset, self._data.site)
            self._splits[image_size] = patient_split(
                dataset,
                val_fraction=self._data.val_fraction,
                test_fraction=self._data.test_fraction,
                seed=self._data.seed,
            )
        return self._splits[image_size]

    def _global_state(self, spec: ModelSpec, weights: Blob) -> dict[str, torch.Tensor]:
        """``weights`` decoded and checked against ``spec``'s model (CPU tensors).

        The last decoding is kept: a round's evaluation and the next round's training
        receive the same weights. Callers must not change the tensors in place.
        """
        key = (weights.blob_id, weights.sha256, spec)
        if self._decoded is not None and self._decoded[0] == key:
            return self._decoded[1]
        try:
            state = decode_like(weights.data, spec.shapes(), what="global weights")
        except WeightsError as error:
            raise TaskRefused(Refusal.INVALID_WEIGHTS, str(error)) from error
        self._decoded = (key, state)
        return state


def _secret_key(path: Path) -> bytes:
    """The node's evaluation secret (32 random bytes, created on first use): mixed into
    bootstrap seeds so that only this node knows which samples each resample drew."""
    if not path.exists():
        # Private from its first byte: written then chmod-ed, it would be readable by any
        # local account until the chmod, and for good after a crash in between.
        atomic_write_bytes(path, secrets.token_bytes(32), mode=PRIVATE)
    key = read_private(path)
    if len(key) != 32:
        raise ConfigError(f"{path} is not a 32-byte key; delete it and a new one is made")
    return key


def _positives(targets: np.ndarray, label_names: tuple[str, ...], task: str) -> dict[str, int]:
    values = np.asarray(targets)
    if task == "multiclass":
        return {name: int((values == k).sum()) for k, name in enumerate(label_names)}
    values = values.reshape(len(values), -1)
    return {name: int(values[:, k].sum()) for k, name in enumerate(label_names)}


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


__all__ = ["ComputeSettings", "DataOwner", "DataSettings", "PrivacySettings"]
