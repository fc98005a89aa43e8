"""Hyper-parameter search over local DP training at a fixed ε (``primia tune``).

Each trial is one :func:`~primia.train.local.train_local` run of the base configuration
with a sampled batch size, learning rate, clipping norm C, number of epochs and EMA decay,
at the base configuration's ε; the objective is the **validation** mean AUROC (the test
split is never read). Optuna's TPE sampler (seeded) proposes the trials.

Privacy. Choosing hyper-parameters by their validation score on private data is itself a
release: the chosen configuration (and its model) depends on every trial. Each trial is a
DP-SGD run of ε, so by composition the search as a whole is (trials × ε, trials × δ)-DP at
most, and primia charges it that way: every trial reserves and completes its release in
the dataset's privacy ledger like any ``train-local --dp`` run (the ledger composes them
and refuses the trial that would exceed the budget). The validation scores are computed
on non-private data and are not noised: the search is private only because every
trained model is, and the score it is chosen by is a function of those models and the
validation images (which the operator sees anyway). Papernot & Steinke (ICLR 2022) show
random-stopping searches that cost less; this one does not claim that.

Declaring the data ``public`` (synthetic, or a public collection the node need not protect)
charges a throw-away ledger inside the output folder instead; the result then says so,
and its defaults are what primia recommends for private data of a similar size
(``docs/benchmarks.md``).

Output, in ``out``: ``trials.csv`` (one row per trial: its number, state, parameters,
validation AUROC and ε), ``best.toml`` (a complete ``train-local`` configuration with the
best parameters: ``primia train-local --config best.toml``) and ``best.json`` (the best
trial's parameters, score and the search's total ε).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primia.config import write_toml
from primia.errors import ConfigError
from primia.files import atomic_write_bytes
from primia.train.ledger import Budget, PrivacyLedger
from primia.train.local import train_local
from primia.train.train_config import TrainConfig

BATCH_SIZES = (16, 32, 64, 128, 256)
EMA_DECAYS = (0.0, 0.9, 0.99, 0.999)
PUBLIC_LEDGER = "public-data-ledger.jsonl"


@dataclass(frozen=True)
class SearchSpace:
    """The ranges sampled (log-uniform for lr and C)."""

    batch_sizes: tuple[int, ...] = BATCH_SIZES
    lr: tuple[float, float] = (1e-4, 1e-2)
    max_grad_norm: tuple[float, float] = (0.1, 10.0)
    epochs: tuple[int, int] = (1, 10)
    ema_decays: tuple[float, ...] = EMA_DECAYS

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("the search's batch sizes must be at least 1")
        if not 0 < self.lr[0] <= self.lr[1]:
            raise ConfigError(f"the lr range must be 0 < low <= high, got {self.lr}")
        if not 0 < self.max_grad_norm[0] <= self.max_grad_norm[1]:
            raise ConfigError(f"the C range must be 0 < low <= high, got {self.max_grad_norm}")
        if not 1 <= self.epochs[0] <= self.epochs[1]:
            raise ConfigError(f"the epochs range must be 1 <= low <= high, got {self.epochs}")
        if not self.ema_decays or not all(0 <= d < 1 for d in self.ema_decays):
            raise ConfigError("the search's EMA decays must be in [0, 1)")


@dataclass(frozen=True)
class TuneConfig:
    """A search: ``trials`` runs of ``base`` (which must train with DP) in ``space``."""

    base: TrainConfig
    out: Path
    trials: int = 20
    space: SearchSpace = field(default_factory=SearchSpace)
    public: bool = False
    """The data are public or synthetic: charge a throw-away ledger in ``out``, not the
    dataset's. Never set this for patients' data (see the module docstring)."""
    seed: int = 0
    """Seeds the sampler (the trials' DP noise stays unseeded, as in every DP run)."""

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"trials must be at least 1, got {self.trials}")
        if not self.base.dp.enabled:
            raise ConfigError(
                "primia tune searches DP training at a fixed ε; enable DP (--dp / dp.enabled)"
            )


@dataclass(frozen=True)
class TrialResult:
    number: int
    params: dict[str, Any]
    val_auroc: float
    epsilon: float


@dataclass(frozen=True)
class TuneResult:
    trials: list[TrialResult]
    best: TrialResult
    best_config: Path
    epsilon_spent: float
    """The search's ε by basic composition: the sum over the trials that ran."""
    public: bool


TrialCallback = Callable[[TrialResult], None]


def trial_config(base: TrainConfig, params: dict[str, Any], out: Path) -> TrainConfig:
    """``base`` with a trial's parameters, writing to ``out``."""
    dp = dataclasses.replace(base.dp, max_grad_norm=params["max_grad_norm"])
    return dataclasses.replace(
        base,
        out=out,
        batch_size=params["batch_size"],
        max_physical_batch_size=min(base.max_physical_batch_size, params["batch_size"]),
        lr=params["lr"],
        epochs=params["epochs"],
        ema_decay=params["ema_decay"],
        dp=dp,
    )


def tune(config: TuneConfig, on_trial: TrialCallback | None = None) -> TuneResult:
    """Run the search; see the module docstring. ``on_trial`` is called after each trial."""
    try:
        import optuna
    except ImportError as error:  # an optional extra
        raise ConfigError(
            "primia tune needs Optuna; install the extra: pip install 'primia[tune]'"
        ) from error
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config.out.mkdir(parents=True, exist_ok=True)
    base = config.base
    if config.public:
        public_dp = dataclasses.replace(
            base.dp, ledger=config.out / PUBLIC_LEDGER, epsilon_budget=math.inf
        )
        base = dataclasses.replace(base, dp=public_dp)
    else:
        _check_budget(base, config.trials)
    space = config.space
    results: list[TrialResult] = []

    def objective(trial: Any) -> float:
        params = {
            "batch_size": trial.suggest_categorical("batch_size", list(space.batch_sizes)),
            "lr": trial.suggest_float("lr", *space.lr, log=True),
            "max_grad_norm": trial.suggest_float("max_grad_norm", *space.max_grad_norm, log=True),
            "epochs": trial.suggest_int("epochs", *space.epochs),
            "ema_decay": trial.suggest_categorical("ema_decay", list(space.ema_decays)),
        }
        run = trial_config(base, params, config.out / "trials" / f"{trial.number:03d}")
        trained = train_local(run)
        assert trained.privacy is not None  # DP is enabled (checked in TuneConfig)
        mean = trained.validation.mean_auroc
        score = math.nan if mean is None else mean  # None: no label had both classes
        result = TrialResult(trial.number, params, score, trained.privacy.epsilon)
        results.append(result)
        _write_trials(config.out / "trials.csv", results)
        if on_trial is not None:
            on_trial(result)
        return score if math.isfinite(score) else 0.0

    sampler = optuna.samplers.TPESampler(seed=config.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # A failed trial (the ledger's refusal included) ends the search: it raises here.
    study.optimize(objective, n_trials=config.trials)
    best = max(results, key=lambda r: r.val_auroc if math.isfinite(r.val_auroc) else -1.0)
    best_path = config.out / "best.toml"
    final = trial_config(config.base, best.params, config.out / "best-run")
    write_toml(final, best_path)
    spent = sum(r.epsilon for r in results)
    summary = {
        "best": dataclasses.asdict(best),
        "trials": len(results),
        "epsilon_spent": spent,
        "delta_spent": len(results) * base.dp.delta,
        "public_data": config.public,
        "objective": "validation mean AUROC",
    }
    atomic_write_bytes(config.out / "best.json", (json.dumps(summary, indent=2) + "\n").encode())
    return TuneResult(results, best, best_path, spent, config.public)


def _check_budget(base: TrainConfig, trials: int) -> None:
    """Refuse, before any trial, a search whose ε by basic composition (trials × ε) does
    not fit in what is left of the dataset's budget (the ledger composes more tightly,
    so this is conservative; it would otherwise stop the search part-way)."""
    ledger = PrivacyLedger.open(
        base.ledger_path,
        budget=Budget(epsilon=base.dp.epsilon_budget, delta=base.dp.delta),
        accountant=base.dp.accountant,
    )
    spent, budget = ledger.spent_epsilon(), ledger.budget.epsilon
    if spent + trials * base.dp.epsilon > budget:
        raise ConfigError(
            f"the search spends up to {trials} × ε {base.dp.epsilon:g} = "
            f"{trials * base.dp.epsilon:g} on {base.data}, and the dataset has "
            f"{budget - spent:.3g} of its ε {budget:g} left ({ledger.path}); lower --trials or "
            "--epsilon, or tune on public or synthetic data (--public-data)"
        )


def _write_trials(path: Path, results: list[TrialResult]) -> None:
    names = list(results[0].params)
    lines = [["trial", *names, "val_auroc", "epsilon"]]
    for r in results:
        values = [str(r.params[name]) for name in names]
        lines.append([str(r.number), *values, f"{r.val_auroc:.6f}", f"{r.epsilon:.6f}"])
    text = "\n".join(",".join(line) for line in lines) + "\n"
    atomic_write_bytes(path, text.encode())
