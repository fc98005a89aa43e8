"""``primia tune``: hyper-parameter search over local DP training at a fixed ε."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from primia.cli.commands import command_help
from primia.cli.progress import step_progress
from primia.cli.train import add_training_arguments, config_from_args
from primia.train.tune import SearchSpace, TrialResult, TuneConfig, tune

EPILOG = """\
example:
  primia tune --data data/synth --model resnet9 --image-size 64 --dp --epsilon 3 \\
      --trials 20 --max-epochs 6 --out runs/tune
  primia train-local --config runs/tune/best.toml      # train with the best settings

Searched: batch size, learning rate, clipping norm C, epochs (1..--max-epochs) and the
EMA decay, each trial a DP run at --epsilon; the objective is the validation mean AUROC
(the test split is never read). OUT receives trials.csv, best.toml (a train-local
configuration) and best.json.

Privacy: picking hyper-parameters on private data leaks through the choice, so every
trial is charged to the dataset's privacy ledger: the search spends up to
trials × ε, and is refused before it starts when that does not fit the budget. On
public or synthetic data, --public-data charges a throw-away ledger in OUT instead
(never use it for patients' data).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tune",
        help=command_help("tune"),
        description="Search batch size, learning rate, clipping norm, epochs and EMA decay "
        "of DP training at a fixed ε with Optuna, scored by validation AUROC.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_arguments(parser)
    parser.add_argument("--trials", type=int, default=20, help="runs to try (default 20)")
    parser.add_argument(
        "--max-epochs", type=int, default=10, help="the most epochs a trial trains (default 10)"
    )
    parser.add_argument(
        "--public-data",
        action="store_true",
        help="the data are public or synthetic: do not charge the dataset's ledger",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    base = dataclasses.replace(config_from_args(args), progress=False)
    config = TuneConfig(
        base=base,
        out=Path(base.out),
        trials=args.trials,
        space=SearchSpace(epochs=(1, args.max_epochs)),
        public=args.public_data,
        seed=base.seed,
    )
    console = Console(stderr=True)
    charged = "a throw-away ledger (public data)" if config.public else str(base.ledger_path)
    console.print(
        f"tuning on {base.data}: {config.trials} trials at ε {base.dp.epsilon:g} each, "
        f"up to ε {config.trials * base.dp.epsilon:g} charged to {charged}"
    )
    with step_progress(console) as progress:
        bar = progress.add_task("trials", total=config.trials)

        def after(trial: TrialResult) -> None:
            progress.advance(bar)
            console.log(
                f"trial {trial.number}: validation AUROC {trial.val_auroc:.3f} "
                f"({', '.join(f'{k}={v:.3g}' for k, v in trial.params.items())})"
            )

        result = tune(config, on_trial=after)
    best = result.best
    print(f"best: trial {best.number}, validation AUROC {best.val_auroc:.3f}, {best.params}")
    where = "a throw-away ledger: public data" if result.public else "charged to the ledger"
    print(f"the search spent ε {result.epsilon_spent:.2f} ({where})")
    print(f"train with it: primia train-local --config {result.best_config}")
    return 0
